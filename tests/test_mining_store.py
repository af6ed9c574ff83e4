"""Mining results written into a store run read back as the same examples, fields and scores."""

from __future__ import annotations

import numpy as np
import pytest

from circuitsviz.mining import mine

from .test_mining import Images, tiny_model

store = pytest.importorskip("circuitsviz.store")


def test_written_examples_stats_and_receptive_boxes_read_back(tmp_path):
    model, data = tiny_model(), Images(n=20)
    result = mine(model, data, "4", k=3, batch_size=8, progress=False, mean_top_k=True)
    run = store.open_run(tmp_path / "run", create=True)
    assert run.add_mining(result, data, model=model) == 6
    r = result.layers["4"]
    ys, xs = r.top_yx()
    for u in range(6):
        rows = run.examples(f"4:{u}")
        assert [e.image_id for e in rows] == [f"img{i}" for i in r.top_index[u]]
        assert [(e.y, e.x) for e in rows] == list(zip(ys[u], xs[u]))
        assert [e.label for e in rows] == list(r.top_label[u])
        stats = run.stats(f"4:{u}")
        assert stats.max == pytest.approx(float(r.max[u]))
        assert stats.hist_counts == r.hist_counts[u].tolist()
        assert sum(stats.label_counts.values()) == 3     # labels of the top-3
    # The store keeps the field mining computed, and crops each position's box from it.
    layer = run.layer("4")
    rf = result.layers["4"].rf
    assert layer.rf == rf.as_tuple()
    for y, x in [(0, 0), (2, 3), (5, 5)]:
        top, left, bottom, right = rf.box(y, x, image_size=16)
        assert store.receptive_box(layer.rf, y, x, 16) == (left, top, right, bottom)
    fires = result.layers["4"].top_value.max(axis=1) > 0    # units that never fire have no label scores
    assert np.isfinite(result.stats("4")["entropy"][fires]).all()


def test_sae_features_are_written_as_feature_units(tmp_path):
    import torch

    model, data = tiny_model(), Images(n=12)
    result = mine(model, data, "4", k=2, batch_size=4, progress=False, transform=lambda a: torch.relu(a[:, :3]))
    run = store.open_run(tmp_path / "run", create=True)
    run.add_mining(result, data, sae="sae")
    assert sorted(u.id for u in run.units(kind="feature")) == ["4/sae:0", "4/sae:1", "4/sae:2"]
    assert [e.image_id for e in run.examples("4/sae:1")] == [f"img{i}" for i in result.layers["4"].top_index[1]]


def test_stored_activation_maps_are_each_examples_own_map(tmp_path):
    """The heatmap overlay's data: example j of unit u carries unit u's map on that very image."""
    import torch

    from circuitsviz.data import ConceptDataset
    from circuitsviz.mining import mine
    from circuitsviz.models import load_model
    from circuitsviz.store import open_run

    model = load_model("demo")
    data = ConceptDataset(n=40, seed=5, size=64)
    result = mine(model, data, ["mixed3b"], k=4, batch_size=16, progress=False)
    run = open_run(tmp_path / "run", create=True)
    run.set_data_source(data.spec(), classes=data.classes)
    run.add_mining(result, data, model=model, actmaps=True)
    for u in (0, 5):
        for ex in run.examples(f"mixed3b:{u}"):
            image = data[data.index_of(ex.image_id)][0][None]
            with torch.inference_mode():
                expected = model.activations(image, "mixed3b")["mixed3b"][0, u].numpy()
            assert ex.actmap is not None and ex.actmap.shape == expected.shape
            np.testing.assert_allclose(ex.actmap, expected, rtol=1e-2, atol=1e-2)
            assert np.unravel_index(np.argmax(ex.actmap), ex.actmap.shape) == (ex.y, ex.x) or \
                ex.actmap.max() == pytest.approx(float(ex.actmap[ex.y, ex.x]), rel=1e-2)
