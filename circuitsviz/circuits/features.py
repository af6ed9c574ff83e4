"""SAE features as circuit endpoints: which SAE a feature id names, and its read/write vectors.

A feature of an SAE on layer L *reads* L through its encoder row: before the TopK / ReLU, its
pre-activation is ``W_enc[f] . (x * scale - b_pre) + b_enc[f]``, linear in the raw activations
``x`` with weights ``W_enc[f] * scale``. It *writes* L through its decoder direction
(:meth:`SparseAutoencoder.decoder_direction`). Composed with expanded weights, these give a
feature's input and output connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ..errors import BadInputError, UnknownNameError
from ..units import Unit


def layer_spec(spec: str) -> tuple[str, str | None]:
    """``"mixed3a"`` -> ("mixed3a", None); ``"mixed3b/topk8x_k1"`` -> ("mixed3b", "topk8x_k1")."""
    if not isinstance(spec, str) or not spec or spec.count("/") > 1 or ":" in spec:
        raise BadInputError(f"bad layer {spec!r}; expected a layer name ('mixed3a') or a layer and an "
                            "SAE name ('mixed3b/topk8x_k1')")
    layer, _, sae = spec.partition("/")
    return layer, sae or None


def as_unit(unit: str | Unit) -> Unit:
    return unit if isinstance(unit, Unit) else Unit.parse(str(unit))


def saes_of(sae) -> list:
    if sae is None:
        return []
    if isinstance(sae, Mapping):
        return list(sae.values())
    if isinstance(sae, Iterable) and not isinstance(sae, torch.nn.Module):
        return list(sae)
    return [sae]


def find_sae(sae, layer: str, name: str):
    """The SAE named ``name`` on ``layer`` among ``sae`` (one SAE, a list, or a dict of them)."""
    found = [s for s in saes_of(sae) if s.name == name and (s.layer is None or s.layer == layer)]
    if not found:
        have = [f"{s.layer}/{s.name}" for s in saes_of(sae)]
        if not have:
            raise BadInputError(f"{layer}/{name} names SAE features; pass the SAE as sae=...")
        raise UnknownNameError("SAE", f"{layer}/{name}", have)
    return found[0]


def read_vectors(sae) -> torch.Tensor:
    """(F, C): each feature's pre-activation weights on the raw activations."""
    return (sae.W_enc * sae.scale).detach()


def write_vectors(sae) -> torch.Tensor:
    """(F, C): each feature's decoder direction in raw activation units."""
    return (sae.W_dec / sae.scale).detach()


def check_feature(sae, unit: Unit) -> None:
    if not 0 <= unit.index < sae.n_latents:
        raise BadInputError(f"feature {unit.index} is out of range for {unit.layer}/{unit.sae}, "
                            f"which has {sae.n_latents} (valid: 0..{sae.n_latents - 1})")
