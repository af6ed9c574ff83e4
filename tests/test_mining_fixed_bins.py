"""Mining with fixed histogram bins (no calibration pass), and every map's max and position."""

from __future__ import annotations

import numpy as np
import pytest

from circuitsviz.mining import mine

from .test_mining import BATCH, Images, brute_force, tiny_model


def test_fixed_bins_match_brute_force_counts_and_positions():
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


@pytest.mark.parametrize("channels_last", [True, False])
def test_map_max_is_max_over_the_flattened_map_to_the_bit(channels_last):
    # The max pool that finds every map's max and position must give what max(dim=2) gives,
    # value and index, also where the max repeats (first one wins), on constant, -inf and NaN maps.
    import torch

    from circuitsviz.mining.mine import _map_max

    g = torch.Generator().manual_seed(0)
    for shape in [(5, 7, 9, 11), (3, 4, 1, 1), (2, 6, 14, 14)]:
        acts = torch.randn(shape, generator=g).round(decimals=1).relu()   # many exact ties, many zeros
        acts[0, 1] = 0.0
        acts[0, 2] = float("-inf")
        spots = acts[1, 0].view(-1)
        spots[[spots.numel() // 2, -1]] = 50.0                            # the max twice: the first wins
        for dtype in (torch.float32, torch.float64):
            a = acts.to(dtype)
            a = a.contiguous(memory_format=torch.channels_last) if channels_last else a.contiguous()
            peak, where = _map_max(a)
            want = a.flatten(2).max(dim=2)
            assert torch.equal(peak, want.values) and torch.equal(where, want.indices)
            a = a.clone()
            a[1, 1].view(-1)[[0, -1]] = float("nan")                      # the pool would keep the last NaN
            peak, where = _map_max(a)
            want = a.flatten(2).max(dim=2)
            assert torch.equal(where, want.indices) and torch.equal(peak.isnan(), want.values.isnan())
