"""Ready-made interventions for :meth:`VisionModel.run_with_hooks`: ablate channels, splice an SAE.

Each function returns a hook ``fn(acts) -> acts'``; hooks never modify their input in place.

>>> model.run_with_hooks(images, {"mixed4b": ablate_channels([373, 237])})   # doctest: +SKIP
>>> model.run_with_hooks(images, {"mixed3b": splice_sae(sae)})               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import BadInputError


def ablate_channels(channels: Sequence[int], value: torch.Tensor | float = 0.0):
    """Set ``channels`` to ``value`` everywhere: 0 (zero ablation) or one value per channel (mean ablation)."""
    idx = list(channels)

    def hook(acts: torch.Tensor) -> torch.Tensor:
        out = acts.clone()
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            out[:, idx] = value.to(acts)[:, None, None]
        else:
            out[:, idx] = float(value)
        return out

    return hook


def encode_maps(sae, acts: torch.Tensor) -> torch.Tensor:
    """The SAE's feature maps ``(N, F, H, W)`` of raw ``(N, C, H, W)`` activations, with autograd
    (``sae.encode`` runs without it); a TopK code passes gradient through its selected features."""
    n, c, h, w = acts.shape
    if c != sae.d_in:
        raise BadInputError(f"SAE {sae.name!r} was fit on {sae.d_in}-channel activations, got {c} channels")
    x = acts.permute(0, 2, 3, 1).reshape(-1, c)
    z = sae.code(sae.normalize(x))
    return z.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def decode_maps(sae, z: torch.Tensor) -> torch.Tensor:
    """Raw activations ``(N, C, H, W)`` from feature maps, with autograd."""
    n, f, h, w = z.shape
    x = (z.permute(0, 2, 3, 1).reshape(-1, f) @ sae.W_dec + sae.b_pre) / sae.scale
    return x.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def splice_sae(sae, *, keep_error: bool = False):
    """Replace a layer's activations by the SAE's reconstruction (``keep_error=True`` adds the
    reconstruction error back, so the output is unchanged and only gradients route through the code)."""

    def hook(acts: torch.Tensor) -> torch.Tensor:
        recon = decode_maps(sae, encode_maps(sae, acts)).to(acts.dtype)
        return recon + (acts - recon).detach() if keep_error else recon

    return hook
