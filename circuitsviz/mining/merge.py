"""Merge shard results into exactly the result of one run over the whole dataset."""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from .result import LayerResult, MiningResult
from .stats import merge_bin_examples
from .topk import merge_top_k


def _pad_columns(a: np.ndarray, width: int, fill: float = 0) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)


def merge(results: list[MiningResult]) -> MiningResult:
    """Combine results of the same configuration over disjoint slices (e.g. ``--shard i/n``).

    Top-k tables merge by value descending then index ascending; counts and histograms add;
    binned examples keep the smallest indices. Sums of spatial means add in float64 (equal to a
    single run's up to float64 rounding); everything else is bit-for-bit equal.

    >>> full = merge([MiningResult.load(f"shard{i}.npz") for i in range(4)])   # doctest: +SKIP
    """
    if not isinstance(results, (list, tuple)) or not all(isinstance(r, MiningResult) for r in results):
        raise BadInputError(f"merge takes a list of MiningResult (MiningResult.load(path)), got {results!r:.80}")
    if not results:
        raise BadInputError("nothing to merge")
    first = results[0]
    for r in results[1:]:
        if r.config_hash != first.config_hash:
            raise BadInputError(f"cannot merge results of different configurations ({first.config_hash} vs {r.config_hash})")
    unfinished = [r.shard for r in results if not r.complete]
    if unfinished:
        raise BadInputError(f"shards {unfinished} are not finished; rerun their mine command to complete them")
    shards = [r.shard for r in results]
    if None in shards and len(results) > 1:
        raise BadInputError("a whole-dataset result cannot be merged with others")
    if len(set(shards)) != len(shards):
        raise BadInputError(f"the same shard appears twice: {shards}")
    counts = {s[1] for s in shards if s}
    if len(counts) > 1:
        raise BadInputError(f"shards come from different splits: {sorted(counts)}")
    if counts:
        missing = sorted(set(range(counts.pop())) - {s[0] for s in shards})
        if missing:
            raise BadInputError(f"shards {missing} are missing; merge needs every shard of the split")
    k = first.config["k"]
    labels = max(len(r.label_count) for r in results)
    layers = {}
    for name, r0 in first.layers.items():
        parts = [r.layers[name] for r in results]
        v, i, (p, lab) = merge_top_k([p.top_value for p in parts], [p.top_index for p in parts],
                                     [[p.top_pos, p.top_label] for p in parts], k)
        extra = {}
        if r0.mean_value is not None:
            mv, mi, (mp, ml) = merge_top_k([p.mean_value for p in parts], [p.mean_index for p in parts],
                                           [[p.mean_pos, p.mean_label] for p in parts], k)
            extra = dict(mean_value=mv, mean_index=mi, mean_pos=mp, mean_label=ml)
        bi, bv, bp = merge_bin_examples([p.bin_index for p in parts], [p.bin_value for p in parts],
                                        [p.bin_pos for p in parts])
        layers[name] = LayerResult(
            name=name, height=r0.height, width=r0.width, rf=r0.rf,
            top_value=v, top_index=i, top_pos=p, top_label=lab,
            mean_sum=np.sum([p.mean_sum for p in parts], axis=0),
            max=np.max([p.max for p in parts], axis=0), positive=np.sum([p.positive for p in parts], axis=0),
            hist_edges=r0.hist_edges, hist_counts=np.sum([p.hist_counts for p in parts], axis=0),
            bin_index=bi, bin_value=bv, bin_pos=bp,
            label_sum=np.sum([_pad_columns(p.label_sum, labels) for p in parts], axis=0),
            label_max=None if any(p.label_max is None for p in parts) else
            np.max([_pad_columns(p.label_max, labels, -np.inf) for p in parts], axis=0), **extra,
        )
    return MiningResult(
        layers=layers, config=first.config, config_hash=first.config_hash,
        n_images=sum(r.n_images for r in results),
        label_count=np.sum([np.pad(r.label_count, (0, labels - len(r.label_count))) for r in results], axis=0),
        shard=None,
        done=sum(r.done for r in results), total=sum(r.total for r in results),
        skipped=sorted(s for r in results for s in r.skipped), classes=first.classes,
    )

