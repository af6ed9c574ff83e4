"""Objectives for SAE features: the feature's own activation through the encoder, TopK included.

Rendering a feature along its decoder row (:func:`direction`) asks for activations that point
that way, which need not make the feature itself fire: at ``k=1`` another latent with a larger
pre-activation wins the TopK and the feature reads zero. :func:`sae_feature` optimises what the
SAE computes instead. At each position, with ``pre`` the feature's pre-activation and ``t`` the
``k``-th largest pre-activation among the *other* latents (the bar to clear to enter the TopK)::

    value = pre + min(pre - t, 0)

When the feature wins its TopK this is its pre-activation (its code before the ReLU); when it
loses, the margin term also pushes the winners down. The two pieces meet at ``pre = t``, so the
objective is continuous. The objective is the mean over positions, as for :func:`channel`.

>>> obj = sae_feature(sae, 17)                      # through the encoder, with its TopK   # doctest: +SKIP
>>> cv.visualize(model, obj, size=64, steps=512)                                      # doctest: +SKIP
>>> sae_feature(sae, 17, mode="decoder")            # the decoder direction, as before     # doctest: +SKIP
"""

from __future__ import annotations

import torch

from ..errors import BadInputError, check_int
from .objectives import Acts, LinearObjective, Objective, _at, _with_batch, direction

MODES = ("encoder", "decoder")


def feature_pre_activations(sae, acts: torch.Tensor) -> torch.Tensor:
    """All latents' pre-activations ``(B, F, H, W)`` for raw layer activations ``(B, C, H, W)``, with gradient."""
    x = acts.permute(0, 2, 3, 1) * sae.scale.to(acts)                 # B x H x W x C
    pre = (x - sae.b_pre.to(acts)) @ sae.W_enc.to(acts).T + sae.b_enc.to(acts)
    return pre.permute(0, 3, 1, 2)


def topk_margin_value(pre: torch.Tensor, feature: int, k: int) -> torch.Tensor:
    """Per position: ``pre_f + min(pre_f - t, 0)`` with ``t`` the k-th largest other pre-activation."""
    own = pre[:, feature]
    others = torch.cat([pre[:, :feature], pre[:, feature + 1:]], dim=1)
    if others.shape[1] < k:          # the feature always makes the TopK
        return own
    bar = others.topk(k, dim=1).values[:, -1]
    return own + (own - bar).clamp(max=0)


def sae_feature(sae, feature: int, *, mode: str = "encoder", at: str | tuple[int, int] | None = None,
                layer: str | None = None, batch: int | slice | None = None) -> Objective:
    """The activation of SAE feature ``feature`` (``mode="encoder"``) or its decoder direction (``"decoder"``).

    ``at``: ``None`` averages over all positions (as :func:`channel`); ``"center"`` or ``(y, x)``
    reads one position (as :func:`neuron`), which asks for one instance of what the feature
    detects instead of a texture of it. ``layer`` defaults to the layer the SAE was fit on. A
    ReLU SAE has no TopK: its objective is the feature's pre-activation.
    """
    check_int("feature", feature, 0)
    if not isinstance(mode, str) or mode not in MODES:
        raise BadInputError(f"unknown SAE feature objective mode {mode!r}; valid: {', '.join(MODES)}")
    feature = int(feature)
    if not 0 <= feature < sae.n_latents:
        raise BadInputError(f"feature {feature} is out of range; this SAE has {sae.n_latents} (valid: 0..{sae.n_latents - 1})")
    layer = layer if layer is not None else sae.layer
    if not isinstance(layer, str) or not layer:
        raise BadInputError(f"layer must be a layer name (this SAE records {sae.layer!r}), got {layer!r:.80}")
    if at is not None and at != "center" and not (isinstance(at, tuple) and len(at) == 2):
        raise BadInputError(f"at must be None, 'center' or a (y, x) position, got {at!r}")
    pos = None if at is None else (None, None) if at == "center" else (int(at[0]), int(at[1]))
    where = "" if at is None else f" @{at}"
    name = f"sae_feature({layer}/{sae.name}:{feature}, {mode}{where})"
    if mode == "decoder":
        v = direction(layer, sae.decoder_direction(feature)).vector
        return _with_batch(LinearObjective(layer, None, v, pos, 1.0, name, direction(layer, v).checks), batch)
    k = getattr(sae, "k", None)

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer] if pos is None else _at(acts[layer], pos)
        pre = feature_pre_activations(sae, a)
        value = pre[:, feature] if k is None else topk_margin_value(pre, feature, int(k))
        return value.mean(dim=(-2, -1))

    def check_width(model) -> None:
        if model.channels(layer) != sae.d_in:
            raise BadInputError(f"this SAE reads {sae.d_in} channels but {layer!r} has {model.channels(layer)}")

    return _with_batch(Objective(fn, [layer], name, [check_width]), batch)
