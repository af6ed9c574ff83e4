"""Mining with fixed histogram bins (no calibration pass) and positions found only for the winners."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from circuitsviz.mining import mine

from .test_mining import BATCH, Images, brute_force, tiny_model


@pytest.mark.parametrize("lazy_after", [0, 1, 10**9])
def test_fixed_bins_match_brute_force_counts_and_positions(monkeypatch, lazy_after):
    # 0: positions found only for the pairs that enter, from the first batch on; 1: from the
    # second batch on (k=5 images seen); 10**9: max-with-indices throughout.
    monkeypatch.setattr(importlib.import_module("circuitsviz.mining.mine"), "_LAZY_AFTER", lazy_after)
    model, data = tiny_model(), Images()
    lo, hi, bins = 0.0, 3.0, 6
    result = mine(model, data, ["1", "4"], k=5, batch_size=BATCH, progress=False, mean_top_k=True,
                  hist_bins=bins, hist_range=(lo, hi), per_bin=3)
    for layer in ("1", "4"):
        acts, peak, where, index = brute_force(model, data, layer, 5)
        r = result.layers[layer]
        units = np.arange(acts.shape[1])[:, None]
        assert np.array_equal(r.top_index, index)
        assert np.array_equal(r.top_pos, where.T[units, index])
        assert np.array_equal(r.mean_pos, where.T[units, r.mean_index])
        # Histogram: image-level maxima in equal bins over [lo, hi), outliers clamped to the end bins.
        b = np.clip(np.floor((peak - lo) / (hi - lo) * bins), 0, bins - 1).astype(int)   # N x U
        expected = np.stack([np.bincount(b[:, u], minlength=bins) for u in range(acts.shape[1])])
        assert np.array_equal(r.hist_counts, expected)
        # Each bin keeps its first images in index order, each with the position of its maximum.
        for u in range(acts.shape[1]):
            for j in range(bins):
                first = np.flatnonzero(b[:, u] == j)[:3]
                filled = r.bin_index[u, j][r.bin_index[u, j] >= 0]
                assert np.array_equal(filled, first)
                assert np.array_equal(r.bin_pos[u, j][:len(first)], where[first, u])
                assert np.array_equal(r.bin_value[u, j][:len(first)], peak[first, u])


def test_empty_shard_with_fixed_bins_still_knows_the_layer_shapes():
    model, data = tiny_model(), Images()
    result = mine(model, data, ["1", "4"], k=5, batch_size=BATCH, progress=False, hist_range=(0.0, 3.0),
                  shard=(0, 8))                         # 6 batches over 8 shards: shard 0 gets none
    assert result.n_images == 0
    assert (result.layers["1"].units, result.layers["1"].height) == (8, 16)
    assert (result.layers["4"].units, result.layers["4"].height) == (6, 6)
    assert result.layers["4"].hist_counts.sum() == 0 and (result.layers["4"].top_index == -1).all()
