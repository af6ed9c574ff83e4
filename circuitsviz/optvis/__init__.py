"""Feature visualization: render the images that units want to see (Lucid's method, batched).

>>> import circuitsviz as cv
>>> model = cv.load_model("inceptionv1", pretrained=False)                  # doctest: +SKIP
>>> [r] = cv.visualize(model, "mixed4e:55")                                 # doctest: +SKIP
>>> cv.visualize(model, cv.channel("mixed4a", 476) - cv.channel("mixed4a", 477))  # doctest: +SKIP
"""

from .objectives import Objective, channel, direction, diversity, neuron, objective
from .param import ImageParam, fft_image, pixel_image
from .render import VisResult, visualize
from .sae_objectives import sae_feature
from .transforms import StandardTransforms

__all__ = [
    "visualize", "VisResult", "Objective", "channel", "neuron", "direction", "diversity", "objective",
    "ImageParam", "fft_image", "pixel_image", "StandardTransforms", "sae_feature",
]
