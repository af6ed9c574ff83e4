"""Model zoo, weights and layer access."""

from .blocks import ReLU
from .weights import WeightsSpec, default_weights_dir, download, resolve
from .wrapper import Branch, LayerInfo, LayerShape, VisionModel
from .zoo import IMAGENET_MEAN, IMAGENET_STD, ZOO, ZooEntry, list_layers, load_model, wrap_model, zoo_entry

__all__ = [
    "Branch", "LayerInfo", "LayerShape", "VisionModel", "ReLU", "WeightsSpec", "ZooEntry", "ZOO",
    "IMAGENET_MEAN", "IMAGENET_STD", "default_weights_dir", "download", "resolve", "list_layers",
    "load_model", "wrap_model", "zoo_entry",
]
