"""The bundled demo model: a small InceptionV1-style net trained by this project on the procedural
concept dataset, with one deliberately narrow layer (``mixed3b``) where concepts must share channels.

>>> from circuitsviz.models import load_model
>>> model = load_model("demo")              # weights/demo.pt, trained by `python -m circuitsviz.demo.train`
>>> model.channels("mixed3b")               # fewer channels than the 13 concepts: superposition
8
"""

from .model import SUPERPOSITION_LAYER, DemoNet, layer_table, zoo_entry

__all__ = ["DemoNet", "SUPERPOSITION_LAYER", "layer_table", "zoo_entry"]
