"""``ablate`` and ``faithfulness``: the causal check of a circuit.

``ablate`` removes source units (sets them to zero, or to their mean over the data) and measures
the unit's value before and after, image by image. ``faithfulness`` asks whether the sources
attribution ranks first matter more than chance: the drop from ablating the top ``n`` attributed
sources against the drop from ablating ``n`` random sources of the same layer, over ``draws``
random draws (which may include top sources: they are drawn from the whole layer). Sources are ranked on one half of the images (even positions) and the drops are
measured on the other half (odd positions), so the ranking is not scored on its own data.

>>> f = faithfulness(model, "mixed3b:4", source="mixed3a", data=images, n=5)   # doctest: +SKIP
>>> print(f.summary())                                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadInputError, check_int, check_list
from .attribution import _mean_code, attribute
from .features import as_unit
from .readout import Readout, SourceSide, batches, load_images

MODES = ("zero", "mean")


@dataclass
class Ablation:
    """The unit's value on each image, before and after ablating ``sources``."""

    unit: str
    sources: list[str]
    mode: str
    before: torch.Tensor = field(repr=False)   # (N,)
    after: torch.Tensor = field(repr=False)    # (N,)

    @property
    def drop(self) -> float:
        """Mean over images of before - after (in the unit's own units)."""
        return float((self.before - self.after).mean())

    @property
    def relative_drop(self) -> float:
        """The drop as a fraction of the mean value before."""
        return self.drop / max(float(self.before.mean()), 1e-12)


def ablate(model, unit, sources: Sequence[str], *, data, mode: str = "zero", sae=None, reduce: str = "mean",
           means: torch.Tensor | None = None, batch_size: int = 64, limit: int | None = None) -> Ablation:
    """Ablate ``sources`` (unit ids of one layer, or of one SAE's features) and measure ``unit``.

    ``mode="zero"`` sets them to zero; ``"mean"`` to their mean over ``data`` (or ``means``, one
    value per unit of the source layer). Ablating features keeps the SAE's reconstruction error.
    """
    check_list("sources", sources, str)
    check_int("batch_size", batch_size, 1, 1 << 16), check_int("limit", limit, 1, optional=True)
    if mode not in MODES:
        raise BadInputError(f"unknown ablation mode {mode!r}; valid: {', '.join(MODES)}")
    if not sources:
        raise BadInputError("ablate needs at least one source unit")
    readout = Readout.of(model, unit, sae, reduce)
    first = as_unit(sources[0])
    side = SourceSide.of(model, first.layer + (f"/{first.sae}" if first.sae else ""), sae)
    idx = [side.index_of(s, model) for s in sources]
    images = load_images(data, model, limit)
    if mode == "mean" and means is None:
        means = _mean_code(model, side, images, batch_size).flatten()
    before, after = _measure(model, readout, side, idx, images, means if mode == "mean" else None, batch_size)
    return Ablation(readout.unit.id, [side.unit_id(i) for i in idx], mode, before, after)


@torch.no_grad()
def _measure(model, readout: Readout, side: SourceSide, idx: list[int], images: torch.Tensor,
             means: torch.Tensor | None, batch_size: int,
             before: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The readout on ``images`` before (unless given: it does not depend on ``idx``) and after the ablation."""
    def edit(code: torch.Tensor) -> torch.Tensor:
        out = code.clone()
        out[:, idx] = 0.0 if means is None else means[idx].to(code)[:, None, None]
        return out

    hook = side.edit_hook(edit)
    clean, after = [], []
    for batch in batches(images, batch_size):
        if before is None:
            clean.append(readout.run(model, batch).double().cpu())
        after.append(readout.run(model, batch, hooks={side.layer: hook}).double().cpu())
    return (torch.cat(clean) if before is None else before), torch.cat(after)


@dataclass
class Faithfulness:
    """Drop from ablating the top ``n`` attributed sources vs ``n`` random ones (held-out images)."""

    unit: str
    source: str
    n: int
    mode: str
    method: str
    top_sources: list[str]
    top_drop: float
    top_interval: tuple[float, float]       # 95% bootstrap interval over the held-out images
    random_drops: torch.Tensor = field(repr=False)   # (draws,) mean drop of each random draw
    random_interval: tuple[float, float] = (0.0, 0.0)  # 2.5th and 97.5th percentiles over draws
    baseline: float = 0.0                   # the unit's mean value on the held-out images
    random_sources: list[list[str]] = field(default_factory=list, repr=False)  # the units of each draw

    @property
    def random_drop(self) -> float:
        return float(self.random_drops.mean())

    @property
    def ratio(self) -> float:
        return self.top_drop / self.random_drop if self.random_drop > 0 else float("inf")

    @property
    def disjoint(self) -> bool:
        return self.top_interval[0] > self.random_interval[1]

    def summary(self) -> str:
        return (f"{self.unit} <- {self.source}: ablating ({self.mode}) the top {self.n} attributed sources drops it "
                f"{self.top_drop:.4g} [{self.top_interval[0]:.4g}, {self.top_interval[1]:.4g}] "
                f"({self.top_drop / max(self.baseline, 1e-12):.0%} of {self.baseline:.4g}); "
                f"{self.n} random sources: {self.random_drop:.4g} [{self.random_interval[0]:.4g}, "
                f"{self.random_interval[1]:.4g}] over {len(self.random_drops)} draws; ratio {self.ratio:.2f}x, "
                f"intervals {'disjoint' if self.disjoint else 'overlap'}")


def faithfulness(model, unit, *, source: str, data, n: int = 5, draws: int = 50, method: str = "act_x_grad",
                 mode: str = "zero", sae=None, reduce: str = "mean", seed: int = 0, batch_size: int = 64,
                 limit: int | None = None, examples: int | None = None) -> Faithfulness:
    """Faithfulness of ``unit``'s top-``n`` attributed sources in ``source`` (see the module doc).

    ``examples``: use only the unit's ``examples`` most activating images of ``data`` (its dataset
    examples), so that a sparse unit (an SAE feature) is measured where it fires.
    """
    # draws: each is a forward pass over the measured images; a bound turns a typo into an error, not a hang
    check_int("n", n, 1), check_int("draws", draws, 1, 10_000), check_int("seed", seed, 0)
    check_int("batch_size", batch_size, 1, 1 << 16), check_int("limit", limit, 1, optional=True)
    check_int("examples", examples, 1, optional=True)
    side = SourceSide.of(model, source, sae)
    size = side.size(model)
    if not isinstance(n, int) or not 1 <= n < size:
        raise BadInputError(f"n must be between 1 and {size - 1} (the units of {source}), got {n!r}")
    images = load_images(data, model, limit)
    if examples is not None:
        readout = Readout.of(model, unit, sae, reduce)
        with torch.no_grad():
            values = torch.cat([readout.run(model, b).cpu() for b in batches(images, batch_size)])
        images = images[torch.argsort(values, descending=True)[:examples].sort().values]
    if len(images) < 4:
        raise BadInputError(f"faithfulness needs at least 4 images (half rank, half measure), got {len(images)}")
    rank_on, measure_on = images[0::2], images[1::2]
    att = attribute(model, unit, source=source, data=rank_on, method=method, sae=sae, reduce=reduce,
                    batch_size=batch_size)
    top = att.top(n)
    readout = Readout.of(model, unit, sae, reduce)
    means = _mean_code(model, side, rank_on, batch_size).flatten() if mode == "mean" else None

    def drops(idx: list[int], clean: torch.Tensor | None = None) -> torch.Tensor:
        before, after = _measure(model, readout, side, idx, measure_on, means, batch_size, clean)
        return before - after, before

    top_d, before = drops([side.index_of(u, model) for u in top])
    rng = np.random.default_rng(seed)
    boot = [float(top_d[rng.integers(0, len(top_d), len(top_d))].mean()) for _ in range(1000)]
    drawn = [sorted(rng.choice(size, n, replace=False).tolist()) for _ in range(draws)]
    random = torch.tensor([float(drops(idx, before)[0].mean()) for idx in drawn], dtype=torch.float64)
    return Faithfulness(
        readout.unit.id, side.spec, n, mode, method, top, float(top_d.mean()),
        (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))), random,
        (float(np.percentile(random, 2.5)), float(np.percentile(random, 97.5))), float(before.mean()),
        [[side.unit_id(i) for i in idx] for idx in drawn],
    )
