"""Feature visualization: render the images that units want to see (Lucid's method, batched).

>>> import circuitsviz as cv
>>> model = cv.load_model("inceptionv1", pretrained=False)                  # doctest: +SKIP
>>> [r] = cv.visualize(model, "mixed4e:55")                                 # doctest: +SKIP
>>> cv.visualize(model, cv.channel("mixed4a", 476) - cv.channel("mixed4a", 477))  # doctest: +SKIP
>>> cv.save_grid(cv.visualize(model, "mixed3a:*", steps=64), "mixed3a.png")   # doctest: +SKIP
>>> cv.visualize(model, cv.class_logit("softmax2_pre_activation_matmul", 3))  # doctest: +SKIP
"""

from .grid import save_grid
from .objectives import Objective, channel, class_logit, direction, diversity, neuron, objective
from .param import ImageParam, fft_image, pixel_image
from .render import VisResult, visualize
from .sae_objectives import sae_feature
from .transforms import StandardTransforms

__all__ = [
    "visualize", "VisResult", "Objective", "channel", "neuron", "direction", "class_logit", "diversity", "objective",
    "save_grid", "ImageParam", "fft_image", "pixel_image", "StandardTransforms", "sae_feature",
]
