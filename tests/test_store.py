"""The run store: every record round-trips, writes are atomic, versions are checked."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

import circuitsviz
from circuitsviz.errors import BadInputError, UnknownNameError
from circuitsviz.store import SCHEMA_VERSION, StoreVersionError, open_run, receptive_box
from circuitsviz.store.synthetic import write_image_folder


@pytest.fixture
def run(tmp_path):
    r = open_run(tmp_path / "run", create=True)
    yield r
    r.close()


def test_every_record_type_round_trips(run, tmp_path):
    run.set_info(model="inceptionv1", weights_sha256="ab" * 32, input_size=224, settings={"k": 16})
    run.set_data_source({"kind": "folder", "root": "/data", "size": 224}, classes=["cat", "car"])
    run.put_layer("mixed4e", 832, 14, 14, branches=[("1x1", 0, 256), ("3x3", 256, 576)], rf=(139, 16, 7.5))
    run.add_units([{"id": "mixed4e:55", "layer": "mixed4e", "index": 55, "kind": "channel"}, "mixed4e:55@7,3"])
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    path = run.put_visualization("mixed4e:55", img, kind="negative", index=2, objective=-3.5, settings={"steps": 512})
    actmap = np.linspace(0, 1, 14 * 14, dtype=np.float32).reshape(14, 14)
    rows = [dict(rank=0, image_id="b.jpg", value=9.5, y=7, x=3, label=1, actmap=actmap),
            dict(rank=1, image_id="a.jpg", value=2.0, y=0, x=13, label=None)]
    run.put_examples("mixed4e:55", rows, kind="mean")
    run.put_quantile_examples("mixed4e:55", [dict(bin=3, image_id="q.jpg", value=0.5, y=1, x=2)])
    run.put_stats("mixed4e:55", mean=0.25, max=9.5, frac_positive=0.1, hist_counts=np.array([3, 4]),
                  hist_edges=[0.0, 1.0, 2.0], scores={"purity": 0.5, "entropy": 0.69}, label_counts={1: 3, "cat": 2})
    run.put_sae("sae", "mixed4e", config={"k": 32}, metrics={"fvu": 0.1}, path=tmp_path / "sae")
    run.put_feature("mixed4e/sae:17", sae="sae", decoder_top=[(55, 0.9), (3, 0.2)], freq=0.01, mean_act=2.0)
    run.put_split("mixed4e", 55, "sae", [dict(unit_id="mixed4e/sae:17", share=0.6, cosine=0.9, freq=0.01)],
                  totals=dict(explained=0.75, bias_share=0.3, n_samples=100, n_firing=40))
    run.mark_done("mine", "mixed4e")

    r = circuitsviz.open_run(run.path)  # a second handle, as a reader would open it
    info = r.info()
    assert (info.model, info.weights_sha256, info.input_size, info.settings) == ("inceptionv1", "ab" * 32, 224, {"k": 16})
    assert info.data_source == {"kind": "folder", "root": "/data", "size": 224} and info.classes == ["cat", "car"]
    layer = r.layer("mixed4e")
    assert (layer.channels, layer.height, layer.rf) == (832, 14, (139.0, 16.0, 7.5))
    assert layer.branch_of(55) == "1x1" and layer.branch_of(300) == "3x3" and layer.branch_of(700) is None
    assert [u.id for u in r.units(kind="neuron")] == ["mixed4e:55@7,3"] and r.unit("mixed4e:55@7,3").pos == (7, 3)
    [vis] = r.visualizations("mixed4e:55")
    assert (vis.kind, vis.index, vis.objective, vis.settings, vis.path) == ("negative", 2, -3.5, {"steps": 512}, path)
    np.testing.assert_array_equal(np.asarray(Image.open(vis.path)), img)
    ex = r.examples("mixed4e:55", kind="mean")
    assert [(e.rank, e.image_id, e.value, e.y, e.x, e.label) for e in ex] == [(0, "b.jpg", 9.5, 7, 3, 1), (1, "a.jpg", 2.0, 0, 13, -1)]
    np.testing.assert_allclose(ex[0].actmap, actmap, atol=1e-3)
    assert ex[1].actmap is None and r.examples("mixed4e:55", kind="max") == []
    [q] = r.quantile_examples("mixed4e:55")
    assert (q.bin, q.image_id, q.value, q.y, q.x) == (3, "q.jpg", 0.5, 1, 2)
    s = r.stats("mixed4e:55")
    assert (s.mean, s.max, s.frac_positive, s.hist_counts, s.hist_edges) == (0.25, 9.5, 0.1, [3, 4], [0.0, 1.0, 2.0])
    assert s.label_counts == {"1": 3, "cat": 2} and s.polysemanticity == 0.69
    [sae] = r.saes()
    assert (sae.name, sae.layer, sae.config, sae.metrics, sae.path) == ("sae", "mixed4e", {"k": 32}, {"fvu": 0.1}, str(tmp_path / "sae"))
    f = r.feature("mixed4e/sae:17")
    assert (f.sae, f.decoder_top, f.freq, f.mean_act) == ("sae", [(55, 0.9), (3, 0.2)], 0.01, 2.0)
    assert [(g.unit_id, w) for g, w in r.features_of_channel("mixed4e", 55)] == [("mixed4e/sae:17", 0.9)]
    assert r.features_of_channel("mixed4e", 54) == []
    split = r.split("mixed4e", 55)
    assert (split.sae, [(x.unit_id, x.share, x.cosine) for x in split.features]) == ("sae", [("mixed4e/sae:17", 0.6, 0.9)])
    assert (split.explained, split.bias_share, split.n_samples, split.n_firing) == (0.75, 0.3, 100, 40)
    assert split.error == pytest.approx(-0.05)  # the SAE overshoots: the error is negative, not hidden
    assert r.is_done("mine", "mixed4e") and not r.is_done("mine", "mixed3b")
    assert r.verify() == []


def test_re_putting_a_key_replaces_the_whole_record(run):
    run.put_examples("l:1", [dict(rank=i, image_id=f"{i}", value=10 - i, y=0, x=0) for i in range(5)])
    run.put_examples("l:1", [dict(rank=0, image_id="new", value=1.0, y=0, x=0)])
    assert [e.image_id for e in run.examples("l:1")] == ["new"]
    run.put_feature("l/sae:0", decoder_top=[(1, 0.5)])
    run.put_feature("l/sae:0", decoder_top=[(2, 0.5)])
    assert run.features_of_channel("l", 1) == [] and len(run.features_of_channel("l", 2)) == 1


def test_identical_visualizations_share_one_content_addressed_file(run):
    img = np.full((8, 8, 3), 7, np.uint8)
    a = run.put_visualization("l:1", img)
    b = run.put_visualization("l:2", img)
    assert a == b and len(list((run.path / "images").rglob("*.png"))) == 1


def test_bad_inputs_are_refused_with_the_valid_choices(run):
    with pytest.raises(UnknownNameError, match="positive"):
        run.put_visualization("l:1", np.zeros((2, 2, 3), np.uint8), kind="best")
    with pytest.raises(BadInputError, match="H x W x 3 uint8"):
        run.put_visualization("l:1", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(BadInputError, match="must name its SAE"):
        run.put_feature("l:3")
    with pytest.raises(BadInputError, match="3 edges"):
        run.put_stats("l:1", hist_counts=[1, 2], hist_edges=[0, 1])
    run.add_units(["mixed4e:55"])
    with pytest.raises(UnknownNameError, match="Did you mean 'mixed4e:55'"):
        run.unit("mixed4e:56")


def test_a_missing_run_is_a_clear_error_and_is_not_created(tmp_path):
    with pytest.raises(BadInputError, match="no circuitsviz run"):
        open_run(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_a_newer_schema_version_is_refused(tmp_path):
    open_run(tmp_path / "r", create=True).close()
    with sqlite3.connect(tmp_path / "r" / "index.sqlite") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match=f"version {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}"):
        open_run(tmp_path / "r")


def test_a_schema_4_run_is_upgraded_keeping_its_splits_without_totals(tmp_path):
    from circuitsviz.store import schema

    path = tmp_path / "old"
    path.mkdir()
    conn = sqlite3.connect(path / "index.sqlite")
    conn.executescript(schema.SCHEMA.replace(schema.SPLIT_TOTALS, "") + "PRAGMA user_version = 4;")
    conn.execute("INSERT INTO splits VALUES ('mixed3b', 1, 'sae', 0, 'mixed3b/sae:4', 0.5, 0.9, 0.1)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError, match="older store schema 4"):
        open_run(path)  # a reader never writes
    with open_run(path, writable=True) as run:
        old = run.split("mixed3b", 1)
        assert [(f.unit_id, f.share) for f in old.features] == [("mixed3b/sae:4", 0.5)]
        assert (old.explained, old.bias_share, old.error) == (None, None, None)  # unknown, not zero
        run.put_split("mixed3b", 1, "sae", [dict(unit_id="mixed3b/sae:4", share=0.5)],
                      totals=dict(explained=0.8, bias_share=0.1))
    with open_run(path) as run:
        assert run._rows("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 5
        assert run.split("mixed3b", 1).error == pytest.approx(0.1)


def test_the_index_is_in_wal_mode(run):
    assert run._rows("PRAGMA journal_mode")[0][0] == "wal"


def test_a_batch_that_fails_leaves_nothing_behind(run):
    run.put_examples("l:1", [dict(rank=0, image_id="old", value=1, y=0, x=0)])
    with pytest.raises(RuntimeError):
        with run.batch():
            run.put_examples("l:1", [dict(rank=0, image_id="new", value=1, y=0, x=0)])
            run.put_stats("l:1", max=5.0)
            raise RuntimeError("job died")
    assert [e.image_id for e in run.examples("l:1")] == ["old"] and run.stats("l:1") is None


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from circuitsviz.store import open_run
    run = open_run(sys.argv[1], create=True)
    g = 0
    while True:   # each generation rewrites every unit whole: k rows all carrying value g
        g += 1
        for u in range(4):
            with run.batch():
                run.put_visualization(f"l:{u}", np.full((16, 16, 3), g % 256, np.uint8))
                run.put_examples(f"l:{u}", [dict(rank=r, image_id=f"{g}-{r}", value=g, y=0, x=0) for r in range(8 + g % 5)])
                run.put_stats(f"l:{u}", max=float(g), hist_counts=[g] * (8 + g % 5), hist_edges=list(range(9 + g % 5)))
        print(g, flush=True)
""")


def consistent(r, uid: str) -> bool:
    """A unit is whole when its examples, stats and visualization all come from one generation."""
    with r.snapshot():
        ex, stats, vis = r.examples(uid), r.stats(uid), r.visualizations(uid)
    if not ex:
        return stats is None
    g = ex[0].value
    ok = all(e.value == g for e in ex) and [e.rank for e in ex] == list(range(8 + int(g) % 5))
    ok &= stats is not None and stats.max == g and len(stats.hist_counts) == len(ex)
    return ok and len(vis) == 1 and int(np.asarray(Image.open(vis[0].path))[0, 0, 0]) == int(g) % 256


def start_writer(path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # wait until it has committed a few generations
        assert proc.stdout.readline(), "writer died"
    return proc


def test_a_reader_during_writes_never_sees_a_partial_unit(tmp_path):
    proc = start_writer(tmp_path / "r")
    try:
        reader = open_run(tmp_path / "r")
        seen, deadline = set(), time.time() + 4
        while time.time() < deadline:
            for u in range(4):
                assert consistent(reader, f"l:{u}")
                seen.add(reader.examples(f"l:{u}")[0].value)
        assert len(seen) > 3, "the writer made too little progress to test anything"
    finally:
        proc.kill()
        proc.wait()


def test_a_writer_killed_mid_write_leaves_a_readable_consistent_store(tmp_path):
    for delay in (0.05, 0.37, 0.71):  # kill at different points of the write loop
        proc = start_writer(tmp_path / "r")
        time.sleep(delay)
        proc.kill()
        proc.wait()
        r = open_run(tmp_path / "r")
        assert r.verify() == []
        assert all(consistent(r, f"l:{u}") for u in range(4))
        r.close()


def test_concurrent_threads_can_share_one_handle(run):
    errors = []

    def work(u):
        try:
            for i in range(20):
                run.put_examples(f"l:{u}", [dict(rank=0, image_id=str(i), value=i, y=0, x=0)])
                run.examples(f"l:{u}")
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(u,)) for u in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and [run.examples(f"l:{u}")[0].image_id for u in range(4)] == ["19"] * 4


def test_receptive_box_is_the_field_from_the_first_pixel_clipped():
    # grid (y=2, x=0) starts at (offset + 2*stride, offset) = (16, -16); size 40 ends at (56, 24)
    assert receptive_box((40, 16, -16), 2, 0, 64) == (0, 16, 24, 56)
    assert receptive_box((8, 8, 0), 7, 7, 64) == (56, 56, 64, 64)
    assert receptive_box((8, 8, 0), 9, 0, 64) == (0, 0, 8, 64)  # a field below the image: all rows


def test_example_crop_is_the_receptive_field_of_the_model_input_image(tmp_path):
    ds = write_image_folder(tmp_path / "imgs", n=4)
    run = open_run(tmp_path / "r", create=True)
    run.set_info(input_size=64)
    run.set_data_source(ds.spec())
    run.put_layer("l", 4, 8, 8, rf=(16, 8, -4))
    run.put_examples("l:0", [dict(rank=0, image_id=ds.image_id(1), value=1, y=3, x=5, actmap=np.eye(8))])
    ex = run.examples("l:0")[0]
    crop = np.asarray(Image.open(run.example_image(ex, "crop", size=16)))
    from circuitsviz.data import preprocess_image

    full = np.asarray(preprocess_image(Image.open(tmp_path / "imgs" / ds.image_id(1)), 64))
    # position (3, 5) starts at (-4 + 3*8, -4 + 5*8) = (20, 36): the 16-pixel field is rows 20..36, columns 36..52
    np.testing.assert_array_equal(crop, full[20:36, 36:52])
    first = run.example_image(ex, "overlay")
    mtime = first.stat().st_mtime_ns
    assert run.example_image(ex, "overlay") == first and first.stat().st_mtime_ns == mtime  # cached, not redrawn
    overlay = np.asarray(Image.open(first)).astype(int)
    plain = np.asarray(Image.open(run.example_image(ex, "full"))).astype(int)
    # the heat sits on the actmap's diagonal (top-left) and not in the opposite corner
    assert np.abs(overlay[5:10, 5:10] - plain[5:10, 5:10]).sum() > 0
    assert np.abs(overlay[100:110, 5:15] - plain[100:110, 5:15]).sum() == 0
