"""Saving and loading SAEs: ``sae.safetensors`` (weights and scale) plus ``sae.json`` (config, metrics).

>>> save_sae(sae, "runs/x/saes/mixed4e/topk8x_k32")                                # doctest: +SKIP
>>> sae = load_sae("runs/x/saes/mixed4e/topk8x_k32", model=model, layer="mixed4e")  # doctest: +SKIP

Loading with a ``model`` or ``layer`` checks that the SAE was fit there, because an SAE applied
to another layer's activations gives confident nonsense rather than an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import BadInputError
from .model import SAEConfig, SparseAutoencoder, build_sae

WEIGHTS, CONFIG = "sae.safetensors", "sae.json"
FORMAT_VERSION = 1


def save_sae(sae: SparseAutoencoder, directory: str | Path) -> Path:
    """Write the SAE into ``directory`` and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    save_file(tensors, directory / WEIGHTS)
    doc = {"format": FORMAT_VERSION, "config": sae.config.to_dict(), "metrics": sae.metrics,
           "normalisation_scale": float(sae.scale)}
    (directory / CONFIG).write_text(json.dumps(doc, indent=1, default=str))
    return directory


def load_sae(path: str | Path, *, model=None, layer: str | None = None, device=None) -> SparseAutoencoder:
    """Load an SAE saved by :func:`save_sae`; with ``model``/``layer``, refuse a mismatched one."""
    if not isinstance(path, (str, Path)) or not str(path) or "\x00" in str(path):
        raise BadInputError(f"an SAE is loaded from a folder path, got {path!r}")
    from ..models.zoo import check_device

    device = check_device(device)
    directory = Path(path)
    if directory.name in (WEIGHTS, CONFIG):
        directory = directory.parent
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise BadInputError(f"no saved SAE in {directory} (expected {CONFIG} and {WEIGHTS})")
    try:
        doc = json.loads((directory / CONFIG).read_text())
        config = SAEConfig(**doc["config"])
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise BadInputError(f"cannot read {directory / CONFIG} ({type(e).__name__}: {e}); it is damaged") from None
    check_compatible(config, model=model, layer=layer)
    sae = build_sae(config)
    try:
        sae.load_state_dict(load_file(directory / WEIGHTS))
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"cannot load {directory / WEIGHTS} ({first}); it is damaged or not this SAE's") from None
    sae.metrics = doc.get("metrics", {})
    sae.path = str(directory)
    if device is None and model is not None:
        device = model.device
    return sae.to(device) if device is not None else sae


def check_compatible(config: SAEConfig, *, model=None, layer: str | None = None) -> None:
    where = f"{config.model}:{config.layer}"
    if layer is not None and config.layer is not None and layer != config.layer:
        raise BadInputError(f"this SAE ({config.name}) was fit on {where}, not on layer {layer!r}")
    if model is None:
        return
    if config.model is not None and model.name != config.model:
        raise BadInputError(f"this SAE ({config.name}) was fit on {where}, not on model {model.name!r}")
    if config.weights_sha256 and model.weights_sha256 and config.weights_sha256 != model.weights_sha256:
        raise BadInputError(
            f"this SAE ({config.name}) was fit on {where} with weights {config.weights_sha256[:12]}, "
            f"but the model has weights {model.weights_sha256[:12]}"
        )
    if config.layer is not None:
        model.layer(config.layer)  # unknown -> UnknownNameError
        c = model.channels(config.layer)
        if c != config.d_in:
            raise BadInputError(f"this SAE has {config.d_in} inputs but {model.name}:{config.layer} has {c} channels")
