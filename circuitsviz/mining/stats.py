"""Per-unit statistics that merge exactly: fixed-bin histograms, binned examples, label scores.

The quantity binned is a unit's *image-level* activation, its maximum over space: the same value
the top-k ranks by.

Histogram bins are fixed before mining, per unit, by :func:`histogram_edges` from a calibration
sample that every shard computes identically (the first images of the whole dataset, not of the
shard). Values beyond the edges fall into the first or last bin. Because the bins are fixed,
histograms of shards add up to the histogram of a single run.

Quantile-binned examples also merge exactly. Each histogram bin keeps the ``per_bin`` images
with the smallest dataset indices that land in it (a single run visits its slice in index order,
so a bin only fills up; merging keeps the smallest indices of the union). After mining,
:func:`quantile_examples` groups the bins into activation quantiles using the merged histogram
and picks the first images of each group, as Neuronpedia's activation intervals show them.
"""

from __future__ import annotations

import numpy as np
import torch


def histogram_edges(calib_max: torch.Tensor, bins: int, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Per-unit bin edges ``(U, bins + 1)``.

    ``calib_max`` is ``(n, U)``: image-level maxima of the calibration images. The rule: from
    ``min(0, 2 * min)`` to ``2 * max`` (twice the range seen, so later images rarely overflow);
    a unit silent on every calibration image borrows its layer's largest range. ``value_range``
    fixes the same edges for every unit instead.

    >>> histogram_edges(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), bins=2)
    tensor([[0., 3., 6.],
            [0., 3., 6.]])
    """
    units = calib_max.shape[1]
    if value_range is not None:
        lo = torch.full((units,), float(value_range[0]), dtype=torch.float64)
        hi = torch.full((units,), float(value_range[1]), dtype=torch.float64)
    else:
        finite = calib_max.double().nan_to_num(0.0, posinf=0.0, neginf=0.0)
        lo = (2 * finite.amin(0)).clamp(max=0) if len(finite) else torch.zeros(units, dtype=torch.float64)
        hi = 2 * finite.amax(0) if len(finite) else torch.ones(units, dtype=torch.float64)
        empty = hi <= lo
        fallback = float(hi.max()) if bool((~empty).any()) else 1.0
        hi = torch.where(empty, lo + fallback if fallback > 0 else lo + 1.0, hi)
    steps = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    return (lo[:, None] + (hi - lo)[:, None] * steps[None, :]).float()


def bin_of(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin numbers ``(U, N)`` of ``values (U, N)`` for per-unit ``edges (U, B+1)``; outliers clamp."""
    bins = edges.shape[1] - 1
    lo, hi = edges[:, :1], edges[:, -1:]
    return ((values - lo) / (hi - lo) * bins).floor().clamp_(0, bins - 1).long()


def update_bin_examples(
    bin_index: torch.Tensor, bin_value: torch.Tensor, bin_pos: torch.Tensor, fill: torch.Tensor,
    bins: torch.Tensor, values: torch.Tensor, pos: torch.Tensor, indices: torch.Tensor,
) -> None:
    """Fill each (unit, bin)'s free example slots with this batch's images, in index order (in place).

    ``bin_*``: ``(U, B, P)``; ``fill``: ``(U, B)`` slots used; ``bins``/``values``/``pos``: ``(U, N)``;
    ``indices``: ``(N,)`` ascending, all larger than any earlier batch's.
    """
    units, nbins, per_bin = bin_index.shape
    # Most bins fill up within the first batches; only images landing in a bin with room matter.
    room = fill.gather(1, bins) < per_bin
    if not bool(room.any()):
        return
    unit, image = room.nonzero(as_tuple=True)          # unit-major, then index order
    group = bins[unit, image] + nbins * unit
    # Rank of each image within its (unit, bin) group, keeping index order (stable sort).
    sorted_group, order = torch.sort(group, stable=True)
    counts = torch.bincount(group, minlength=units * nbins)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(len(group), device=group.device) - starts[sorted_group]
    slot = fill.reshape(-1)[group] + rank
    keep = slot < per_bin
    dest = group[keep] * per_bin + slot[keep]
    unit, image = unit[keep], image[keep]
    bin_index.view(-1)[dest] = indices.to(bins.device)[image]
    bin_value.view(-1)[dest] = values[unit, image]
    bin_pos.view(-1)[dest] = pos[unit, image]
    fill += counts.view(units, nbins).clamp(max=per_bin)
    fill.clamp_(max=per_bin)


def merge_bin_examples(index: list[np.ndarray], value: list[np.ndarray], pos: list[np.ndarray]):
    """Merge ``(U, B, P)`` example tables: per (unit, bin), the ``P`` smallest dataset indices."""
    per_bin = index[0].shape[2]
    i = np.concatenate(index, axis=2)
    key = np.where(i < 0, np.iinfo(np.int64).max, i)
    order = np.argsort(key, axis=2, kind="stable")[:, :, :per_bin]
    take = lambda a: np.take_along_axis(np.concatenate(a, axis=2), order, axis=2)  # noqa: E731
    return take(index), take(value), take(pos)


def quantile_examples(hist_counts: np.ndarray, bin_index: np.ndarray, bin_value: np.ndarray, bin_pos: np.ndarray,
                      groups: int = 10, per_group: int | None = None) -> list[tuple[int, int, float, int]]:
    """Examples of one unit by activation quantile: rows ``(group, dataset_index, value, flat_pos)``.

    A bin belongs to the quantile group its middle image falls in (from the histogram's CDF);
    each group shows its ``per_group`` smallest-index images. Group 0 is the lowest activations.
    """
    per_group = per_group or bin_index.shape[1]
    total = hist_counts.sum()
    if total == 0:
        return []
    middle = (np.cumsum(hist_counts) - hist_counts / 2) / total
    group_of_bin = np.minimum((middle * groups).astype(int), groups - 1)
    rows = []
    for g in range(groups):
        sel = (group_of_bin == g)[:, None] & (bin_index >= 0)
        idx, val, pos = bin_index[sel], bin_value[sel], bin_pos[sel]
        for j in np.argsort(idx, kind="stable")[:per_group]:
            rows.append((g, int(idx[j]), float(val[j]), int(pos[j])))
    return rows


def polysemanticity(top_labels: np.ndarray, label_sum: np.ndarray, label_count: np.ndarray,
                    concept_ratio: float = 0.5, top_values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Label-based scores per unit: top-k purity, label entropy (bits) and concept count.

    - purity: share of the most common label among the unit's top-k images;
    - entropy: Shannon entropy (bits) of that label distribution;
    - concept count: labels whose mean image-level activation reaches ``concept_ratio`` of the best
      label's. Purity misses a unit that fires on B a little less than on A; this catches it.

    ``top_labels``: ``(U, k)``, -1 for none; ``label_sum``: ``(U, L)`` sums of image-level maxima per
    label; ``label_count``: ``(L,)`` images per label. Units without labelled images get NaN / 0.
    With ``top_values`` ``(U, k)``, top-k entries where the unit does not fire (value <= 0) are left
    out of purity and entropy: a rarely firing unit's top-k is padded with images it ignores, and
    their labels say nothing about what it detects.
    """
    units = top_labels.shape[0]
    n_labels = max(label_sum.shape[1], int(top_labels.max(initial=-1)) + 1)
    purity = np.full(units, np.nan)
    entropy = np.full(units, np.nan)
    for u in range(units):
        keep = top_labels[u] >= 0
        if top_values is not None:
            keep &= top_values[u] > 0
        lab = top_labels[u][keep]
        if len(lab):
            p = np.bincount(lab, minlength=n_labels) / len(lab)
            purity[u] = p.max()
            nz = p[p > 0]
            entropy[u] = float(-(nz * np.log2(nz)).sum()) + 0.0
    seen = label_count > 0
    concept = np.zeros(units, dtype=np.int64)
    if seen.any():
        means = label_sum[:, seen] / label_count[seen]
        best = means.max(axis=1, keepdims=True)
        concept = np.where(best[:, 0] > 0, (means >= concept_ratio * best).sum(axis=1), 0)
    return {"purity": purity, "entropy": entropy, "concept_count": concept}
