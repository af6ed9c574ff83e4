"""Dataset-example mining against brute force, planted detectors and labelled ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from circuitsviz.errors import BadInputError
from circuitsviz.mining import MiningResult, merge, mine, receptive_field
from circuitsviz.models import wrap_model

BATCH = 8


def tiny_model(seed: int = 0):
    """Random conv net (16 px input): layer "1" is 8 units at 16x16, layer "4" is 6 units at 6x6."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3), nn.ReLU())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return wrap_model(net, input_size=16)


class Images(torch.utils.data.Dataset):
    """Generated images with labels; a few blank ones so that many units tie at zero."""

    def __init__(self, n: int = 45, seed: int = 0, classes: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 16, 16, generator=g)
        self.images[::7] = 0.0
        self.labels = torch.arange(n) % classes
        self.classes = [f"c{i}" for i in range(classes)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])

    def image_id(self, i: int) -> str:
        return f"img{i}"


def brute_force(model, dataset, layer: str, k: int):
    """Activations of every image (same batches as mining), ranked by a full sort."""
    acts = torch.cat([model.activations(dataset.images[i:i + BATCH], layer)[layer]
                      for i in range(0, len(dataset), BATCH)]).numpy()
    n, units, h, w = acts.shape
    flat = acts.reshape(n, units, h * w)
    peak, where = flat.max(axis=2), flat.argmax(axis=2)          # numpy: first maximum
    index = np.stack([np.lexsort((np.arange(n), -peak[:, u]))[:k] for u in range(units)])
    return acts, peak, where, index


def test_max_per_label_equals_brute_force_and_survives_the_store(tmp_path):
    from circuitsviz.store import open_run

    model, data = tiny_model(), Images(n=45, classes=3)
    result = mine(model, data, "4", k=3, batch_size=BATCH, progress=False)
    _, peak, _, _ = brute_force(model, data, "4", 3)
    labels = data.labels.numpy()
    want = np.stack([peak[labels == c].max(axis=0) for c in range(3)], axis=1)   # (U, L)
    np.testing.assert_array_equal(result.layers["4"].label_max, want)
    run = open_run(tmp_path / "run", create=True)
    run.add_mining(result, data, model=model)
    for u in range(6):
        stored = open_run(tmp_path / "run").stats(f"4:{u}").scores["concept_max"]
        assert stored == {f"c{c}": pytest.approx(float(want[u, c])) for c in range(3)}


def test_mining_matches_brute_force_top_k():
    model, data = tiny_model(), Images()
    result = mine(model, data, ["1", "4"], k=5, batch_size=BATCH, progress=False, mean_top_k=True)
    for layer in ("1", "4"):
        acts, peak, where, index = brute_force(model, data, layer, 5)
        r = result.layers[layer]
        units = np.arange(acts.shape[1])[:, None]
        assert np.array_equal(r.top_index, index)
        assert np.array_equal(r.top_value, peak.T[units, index])
        assert np.array_equal(r.top_pos, where.T[units, index])
        assert np.array_equal(r.top_label, data.labels.numpy()[index])
        mean_rank = np.stack([np.lexsort((np.arange(len(data)), -acts[:, u].mean(axis=(1, 2))))[:5]
                              for u in range(acts.shape[1])])
        assert np.array_equal(r.mean_index, mean_rank)
        stats = result.stats(layer)
        np.testing.assert_allclose(stats["mean"], acts.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5)
        assert np.array_equal(stats["max"], acts.max(axis=(0, 2, 3)))
        assert np.array_equal(r.positive, (acts > 0).sum(axis=(0, 2, 3)))
        assert np.array_equal(r.hist_counts.sum(axis=1), np.full(acts.shape[1], len(data)))


def test_positions_point_at_the_true_argmax():
    model, data = tiny_model(), Images()
    result = mine(model, data, "1", k=4, batch_size=BATCH, progress=False)
    acts = brute_force(model, data, "1", 4)[0]
    r = result.layers["1"]
    ys, xs = r.top_yx()
    for u in range(r.units):
        for j, i in enumerate(r.top_index[u]):
            assert acts[i, u, ys[u, j], xs[u, j]] == acts[i, u].max() == r.top_value[u, j]


def test_planted_detector_crop_contains_the_pattern():
    plus = torch.zeros(5, 5)
    plus[2, :], plus[:, 2] = 1.0, 1.0
    conv = nn.Conv2d(3, 1, 5)
    with torch.no_grad():
        conv.weight.copy_((plus - plus.mean()).expand(1, 3, 5, 5))
        conv.bias.zero_()
    smooth = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        smooth.weight.zero_()
        smooth.weight[0, 0, 1, 1] = 1.0
        smooth.bias.zero_()
    model = wrap_model(nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), smooth), input_size=48)
    g = torch.Generator().manual_seed(1)
    images = 0.5 + 0.05 * torch.rand(10, 3, 48, 48, generator=g)
    py, px = 29, 13                                   # the pattern's top-left corner in image 6
    images[6, :, py:py + 5, px:px + 5] += 0.4 * plus
    result = mine(model, list(images), "3", k=1, batch_size=4, progress=False)
    r = result.layers["3"]
    assert r.top_index[0, 0] == 6
    ys, xs = r.top_yx()
    top, left, bottom, right = receptive_field(model, "3").box(int(ys[0, 0]), int(xs[0, 0]), image_size=48)
    assert top <= py and left <= px and bottom >= py + 5 and right >= px + 5
    assert bottom - top <= 12 and right - left <= 12   # the crop is local, not the whole image


def _write_folder(root):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "a" / "notes.jpg").write_text("this is not an image")
    (root / "b" / "empty.jpg").write_bytes(b"")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "b" / "whole.jpg")
    whole = (root / "b" / "whole.jpg").read_bytes()
    (root / "b" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))


def test_corrupt_truncated_empty_and_text_files_are_skipped_and_reported(tmp_path):
    _write_folder(tmp_path / "imgs")
    model = tiny_model()
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        result = mine(model, str(tmp_path / "imgs"), "4", k=3, batch_size=3, progress=False)
    bad = {image_id for _, image_id, _ in result.skipped}
    assert bad == {"a/notes.jpg", "b/empty.jpg", "b/cut.jpg", "a/corrupt.png"}
    assert result.n_images == 7 and result.complete
    assert all(reason for _, _, reason in result.skipped)
    assert "b/cut.jpg" in result.report()
    assert set(result.layers["4"].top_index.ravel()) <= {0, 1, 2, 4, 5, 6, 7}   # only the readable ones


def _assert_same(a: MiningResult, b: MiningResult) -> None:
    assert a.n_images == b.n_images and a.config_hash == b.config_hash
    assert np.array_equal(a.label_count, b.label_count)
    for name, ra in a.layers.items():
        rb = b.layers[name]
        for field in ("top_value", "top_index", "top_pos", "top_label", "mean_value", "mean_index", "max",
                      "positive", "hist_edges", "hist_counts", "bin_index", "bin_value", "bin_pos", "label_max"):
            x, y = getattr(ra, field), getattr(rb, field)
            assert (x is None and y is None) or np.array_equal(x, y), (name, field)
        np.testing.assert_allclose(ra.mean_sum, rb.mean_sum, rtol=1e-12)    # float64 sums, regrouped
        np.testing.assert_allclose(ra.label_sum, rb.label_sum, rtol=1e-12)


def test_sharded_then_merged_equals_single_run(tmp_path):
    model, data = tiny_model(), Images(n=45)
    kw = dict(k=6, batch_size=4, progress=False, mean_top_k=True, hist_bins=8, per_bin=2)
    single = mine(model, data, ["1", "4"], **kw)
    for i in range(3):
        mine(model, data, ["1", "4"], shard=(i, 3), checkpoint=tmp_path / f"s{i}.npz", **kw)
    shards = [MiningResult.load(tmp_path / f"s{i}.npz") for i in (2, 0, 1)]   # any order
    assert sum(s.total for s in shards) == 45 and all(s.complete for s in shards)
    _assert_same(merge(shards), single)
    with pytest.raises(BadInputError, match="missing"):
        merge(shards[:2])


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    model, data = tiny_model(), Images(n=12)
    mine(model, data, "4", k=3, batch_size=4, progress=False, checkpoint=tmp_path / "c.npz")
    with pytest.raises(BadInputError, match="different configuration"):
        mine(model, data, "4", k=4, batch_size=4, progress=False, checkpoint=tmp_path / "c.npz")
    fresh = mine(model, data, "4", k=4, batch_size=4, progress=False, checkpoint=tmp_path / "c.npz", restart=True)
    assert fresh.layers["4"].top_index.shape == (6, 4)


def test_concept_count_separates_a_two_class_unit_from_a_one_class_unit():
    # Classes are flat colours: red, green, blue, grey. A 1x1 conv plants two units:
    # unit 0 fires on red only; unit 1 on red (1.0) and a little less on green (0.8).
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]])
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -1, -1], [1.0, 0.8, -2]]).view(2, 3, 1, 1))
        conv.bias.zero_()
    model = wrap_model(nn.Sequential(conv, nn.ReLU()), input_size=8)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    images = (colours[labels].view(40, 3, 1, 1) * (0.9 + 0.1 * torch.rand(40, 1, 8, 8, generator=g))).clamp(0, 1)
    data = torch.utils.data.TensorDataset(images, labels)
    stats = mine(model, data, "1", k=10, batch_size=8, progress=False).stats("1")
    assert list(stats["concept_count"]) == [1, 2]
    assert list(stats["purity"]) == [1.0, 1.0]        # purity alone cannot tell them apart
    assert list(stats["entropy"]) == [0.0, 0.0]


def test_transform_mines_sae_features_like_channels():
    model, data = tiny_model(), Images(n=24)
    g = torch.Generator().manual_seed(3)
    encoder = nn.Conv2d(6, 10, 1)       # an SAE encoder applied at every position
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(10, 6, 1, 1, generator=g))
    transform = lambda a: torch.relu(encoder(a))  # noqa: E731
    result = mine(model, data, "4", k=4, batch_size=BATCH, progress=False, transform=transform)
    acts = torch.relu(encoder(torch.as_tensor(brute_force(model, data, "4", 4)[0]))).detach().numpy()
    peak = acts.reshape(24, 10, -1).max(axis=2)
    index = np.stack([np.lexsort((np.arange(24), -peak[:, u]))[:4] for u in range(10)])
    assert result.layers["4"].units == 10
    assert np.array_equal(result.layers["4"].top_index, index)


def test_quantile_examples_rise_with_the_quantile():
    model, data = tiny_model(), Images(n=45)
    result = mine(model, data, "4", k=4, batch_size=BATCH, progress=False, hist_bins=16, per_bin=3)
    for u in range(6):
        rows = result.quantile_examples("4", u, groups=4)
        by_group = {}
        for g, i, v, _ in rows:
            by_group.setdefault(g, []).append(v)
        groups = sorted(by_group)
        for lo, hi in zip(groups, groups[1:]):
            assert max(by_group[lo]) <= min(by_group[hi])


def test_purity_ignores_top_k_slots_where_the_unit_does_not_fire():
    from circuitsviz.mining.stats import polysemanticity

    # Unit 0 fires on two images of label 2; the rest of its top-4 is filler (value 0, labels 0/1).
    labels = np.array([[2, 2, 0, 1], [0, 0, 1, 1]])
    values = np.array([[3.0, 2.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0]])
    scores = polysemanticity(labels, np.ones((2, 3)), np.ones(3), top_values=values)
    assert scores["purity"].tolist() == [1.0, 0.5]
    assert polysemanticity(labels, np.ones((2, 3)), np.ones(3))["purity"].tolist() == [0.5, 0.5]


def test_a_batchs_maps_are_released_before_the_next_batchs_forward(monkeypatch):
    # Kept alive into the next forward, a batch's maps stop the allocator from reusing their
    # memory there (the forward ran ~6% slower on InceptionV1); the next batch must find them gone.
    import weakref

    model, data = tiny_model(), Images(n=3 * BATCH)
    run, alive_at_entry = model.activations, []
    previous: list[weakref.ref] = []

    def activations(images, layers, **kwargs):
        alive_at_entry.append(sum(ref() is not None for ref in previous))
        acts = run(images, layers, **kwargs)
        previous[:] = [weakref.ref(a) for a in acts.values()]
        return acts

    monkeypatch.setattr(model, "activations", activations)
    mine(model, data, ["1", "4"], k=4, batch_size=BATCH, progress=False, hist_range=(0.0, 10.0))
    assert alive_at_entry == [0, 0, 0]


def _random_sae(layer: str = "4", name: str = "toy"):
    from circuitsviz.sae import TopKSAE

    torch.manual_seed(5)
    sae = TopKSAE(6, 12, k=3, layer=layer, name=name)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn_like(sae.W_enc))
    return sae


def test_a_feature_layer_mines_like_the_sae_given_as_transform(tmp_path):
    from circuitsviz.sae import save_sae
    from circuitsviz.store import open_run

    model, data, sae = tiny_model(), Images(n=24), _random_sae()
    kw = dict(k=4, batch_size=BATCH, progress=False)
    by_hand = mine(model, data, "4", transform=sae, **kw).layers["4"]
    assert by_hand.top_value.max() > 0     # the features fire: equal results below are not all zeros
    by_name = mine(model, data, ["4/toy", "1"], sae=sae, **kw)
    assert list(by_name.layers) == ["4/toy", "1"]
    r = by_name.layers["4/toy"]
    assert r.units == 12 and r.rf == by_hand.rf
    for field in ("top_value", "top_index", "top_pos", "hist_counts"):
        assert np.array_equal(getattr(r, field), getattr(by_hand, field)), field
    # channels mined in the same pass are the channels' own result
    assert np.array_equal(by_name.layers["1"].top_index, mine(model, data, "1", **kw).layers["1"].top_index)
    # the SAE's directory, or a run that holds it, names the same SAE
    from_dir = mine(model, data, "4/toy", sae=save_sae(sae, tmp_path / "toy"), **kw).layers["4/toy"]
    assert np.array_equal(from_dir.top_index, by_hand.top_index)
    run = open_run(tmp_path / "run", create=True)
    run.add_sae(sae, path=tmp_path / "toy")
    from_run = mine(model, data, "4/toy", run=run, **kw)
    assert np.array_equal(from_run.layers["4/toy"].top_index, by_hand.top_index)
    # and the run stores such a result as the SAE's feature units
    run.add_mining(from_run, data)
    assert [e.image_id for e in run.examples("4/toy:2")] == [f"img{i}" for i in by_hand.top_index[2]
                                                            if i >= 0]


def test_a_feature_layer_without_its_sae_or_with_another_is_refused():
    model, data = tiny_model(), Images(n=8)
    with pytest.raises(BadInputError, match="4/toy names SAE features: pass sae=.*run="):
        mine(model, data, "4/toy", k=2, progress=False)
    with pytest.raises(BadInputError, match="names SAE 4/other, but sae= is 4/toy"):
        mine(model, data, "4/other", sae=_random_sae(), k=2, progress=False)
    with pytest.raises(BadInputError, match="transform= only"):
        mine(model, data, "4/toy", sae=_random_sae(), transform=torch.relu, k=2, progress=False)


def test_python_data_errors_name_the_parameter_and_the_cli_its_flag(tmp_path, capsys):
    from circuitsviz.cli import main

    missing = str(tmp_path / "nowhere")
    with pytest.raises(BadInputError, match=r"^data='.*nowhere' does not exist") as e:
        mine(tiny_model(), missing, "4", k=2, progress=False)
    assert "--data" not in str(e.value)
    assert main(["mine", "--model", "demo", "--no-pretrained", "--data", missing, "--layers", "mixed3a",
                 "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "--data" in err and "nowhere" in err and "data=" not in err
