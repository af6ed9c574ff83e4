"""Splitting a polysemantic channel into the SAE features that write into it.

Where channel ``c`` fires (``x_c > 0``), the SAE writes ``x_hat_c = sum_f z_f * d_f[c] + b_c``
(``d_f`` the decoder direction in raw activation space). Feature ``f``'s **share** of the channel
is ``sum z_f d_f[c] / sum x_c`` over those positions: the decoder weight on ``c`` times the
feature's mean activation there, relative to the channel's mean activation. Shares of all
features, plus the bias and the reconstruction error, add up to one.

>>> result = split_channel(sae, channel=55, data=held_out_samples, top=8)  # doctest: +SKIP
>>> print(result.table())                                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import BadInputError, ChannelOutOfRangeError, check_int
from ..store.records import SplitFeature
from ..units import Unit
from .cache import SampleSource, check_finite


@dataclass
class SplitResult:
    layer: str
    channel: int
    sae: str
    features: list[SplitFeature]   # ranked by share, the ``top`` largest
    explained: float               # share of all features together (not only the top ones)
    bias_share: float              # share written by the decoder bias
    n_samples: int                 # samples seen
    n_firing: int                  # samples where channel c fires
    all_shares: torch.Tensor = field(repr=False, default=None)  # (F,) every feature's share

    @property
    def top_share(self) -> float:
        return sum(f.share for f in self.features)

    def table(self) -> str:
        lines = [f"{self.layer}:{self.channel} split by SAE {self.sae!r}: {self.n_firing} of {self.n_samples} "
                 f"samples fire; all features explain {self.explained:.1%}, the top {len(self.features)} "
                 f"{self.top_share:.1%}, bias {self.bias_share:.1%}",
                 f"{'rank':>4}  {'unit':<28} {'share':>7} {'cosine':>7} {'freq':>8} {'mean act':>9}"]
        for r, f in enumerate(self.features, 1):
            lines.append(f"{r:>4}  {f.unit_id:<28} {f.share:>7.1%} {f.cosine:>7.3f} {f.freq:>8.4f} {f.mean_activation:>9.3g}")
        return "\n".join(lines)

    def to_store_rows(self) -> list[dict]:
        return [dict(unit_id=f.unit_id, share=f.share, cosine=f.cosine, freq=f.freq) for f in self.features]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("all_shares")
        return d


def decoder_top(sae, feature: int, n: int = 8) -> list[tuple[int, float]]:
    """The ``n`` channels ``feature`` writes into most strongly, with its decoder weights (raw units)."""
    d = sae.decoder_direction(feature).detach().cpu()
    order = d.abs().argsort(descending=True)[:n]
    return [(int(c), float(d[c])) for c in order]


def raw_batches(data, *, model=None, layer: str | None = None, batch_size: int = 4096,
                max_samples: int | None = None) -> Iterator[torch.Tensor]:
    """Raw ``(N, C)`` activation samples from a tensor, a sample source / cache, or a dataset + model."""
    seen = 0

    def capped(it):
        nonlocal seen
        for x in it:
            if max_samples is not None and seen >= max_samples:
                return
            x = x if max_samples is None else x[: max_samples - seen]
            seen += len(x)
            yield x

    if isinstance(data, torch.Tensor):
        if data.dim() == 4:
            data = data.permute(0, 2, 3, 1).reshape(-1, data.shape[1])
        check_finite(data)
        yield from capped(data[i:i + batch_size] for i in range(0, len(data), batch_size))
        return
    if isinstance(data, SampleSource):
        yield from capped(s.float() for s in _all_rows(data, batch_size))
        return
    if model is None:
        raise BadInputError("splitting over images needs model=...; or pass activation samples")
    from ..data import as_dataset, iterate_batches

    dataset = as_dataset(data, model)

    def maps():
        for batch in iterate_batches(dataset, batch_size=32):
            if len(batch.indices):
                acts = model.activations(batch.images, layer)[layer]
                check_finite(acts)
                yield acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])

    yield from capped(maps())


def _all_rows(source: SampleSource, batch_size: int) -> Iterator[torch.Tensor]:
    for shard in source.shards:
        a = shard.acts
        for i in range(0, len(a), batch_size):
            rows = a[i:i + batch_size]
            yield rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.array(rows, dtype=np.float32))


@torch.no_grad()
def split_channel(sae, channel: int, *, data, top: int = 8, model=None, max_samples: int | None = None) -> SplitResult:
    """Rank the features of ``sae`` by the share of ``channel``'s activation they write.

    ``data``: raw activations of the SAE's layer ((N, C) or (N, C, H, W)), a sample source, or
    images with ``model=``. Returns the ``top`` features with their shares, decoder cosines with
    the channel axis, firing frequencies and unit ids.
    """
    layer = sae.layer or "layer"
    check_int("top", top, 1)  # 0 would record an empty split, -1 all but one feature
    check_int("max_samples", max_samples, 1, optional=True)
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < sae.d_in:
        raise ChannelOutOfRangeError(layer, channel, sae.d_in)
    if model is not None:
        from .io import check_compatible

        check_compatible(sae.config, model=model)
    device = sae.W_dec.device
    weight = (sae.W_dec[:, channel] / sae.scale).double()             # (F,) raw units per unit of z
    cosine = sae.W_dec[:, channel] / sae.W_dec.norm(dim=1).clamp_min(1e-12)
    contrib = torch.zeros(sae.n_latents, dtype=torch.float64, device=device)
    act_on = torch.zeros_like(contrib)
    fires = torch.zeros_like(contrib)
    sum_xc, n, n_on = 0.0, 0, 0
    for x in raw_batches(data, model=model, layer=layer, max_samples=max_samples):
        x = x.to(device, sae.W_enc.dtype)
        z = sae.encode(x)
        on = x[:, channel] > 0
        fires += (z > 0).sum(0).double()
        zc = z[on].double()
        act_on += zc.sum(0)
        sum_xc += float(x[on, channel].double().sum())
        n += len(x)
        n_on += int(on.sum())
    if n_on == 0:
        raise BadInputError(f"channel {channel} of {layer} never fires (> 0) on the {n} samples given; nothing to split")
    contrib = act_on * weight
    shares = contrib / sum_xc
    order = torch.argsort(shares, descending=True)[:top]
    features = [
        SplitFeature(
            unit_id=Unit(layer, int(f), sae=sae.name).id, share=float(shares[f]), cosine=float(cosine[f]),
            freq=float(fires[f] / n), mean_activation=float(act_on[f] / n_on), weight=float(weight[f]),
        )
        for f in order.tolist()
    ]
    bias = float(sae.b_pre[channel] / sae.scale) * n_on / sum_xc
    return SplitResult(layer, channel, sae.name, features, explained=float(shares.sum()), bias_share=bias,
                       n_samples=n, n_firing=n_on, all_shares=shares.float().cpu())
