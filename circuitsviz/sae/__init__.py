"""Sparse autoencoders on conv activations, and splitting polysemantic channels into features.

>>> sae = fit_sae(model, "path/to/images", "mixed4e", expansion=8, k=32, out="runs/cat/saes/mixed4e/topk8x_k32")  # doctest: +SKIP
>>> split = split_channel(sae, channel=55, data="path/to/images", model=model)                       # doctest: +SKIP
>>> print(split.table())                                                                             # doctest: +SKIP

``sae.encode`` maps a layer's (N, C, H, W) activations to (N, F, H, W) feature maps (a mining
transform), and ``sae.decoder_direction(f)`` is feature ``f``'s vector in the layer's activation
space (a ``direction`` visualization objective).
"""

from .cache import NonFiniteActivationError, SampleSource, Sampler, build_cache, open_cache
from .io import load_sae, save_sae
from .metrics import MetricsAccumulator, SAEMetrics, evaluate
from .model import ReluSAE, SAEConfig, SparseAutoencoder, TopKSAE
from .split import SplitFeature, SplitResult, split_channel
from .train import fit_sae

__all__ = [
    "fit_sae", "load_sae", "save_sae", "split_channel", "TopKSAE", "ReluSAE", "SparseAutoencoder", "SAEConfig",
    "SplitResult", "SplitFeature", "SAEMetrics", "MetricsAccumulator", "evaluate", "Sampler", "SampleSource",
    "build_cache", "open_cache", "NonFiniteActivationError",
]
