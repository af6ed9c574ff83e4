"""Runs keyed by their settings: re-running ``study`` with the same, other, or added settings.

Every case of issue 14: the same settings reuse each step; a setting with its own name (another
SAE, another layer) computes beside the old results; any other changed setting stops before
any work, naming the setting and ``--overwrite``; ``overwrite=True`` replaces the old results
and everything made from them, so a run never holds results its recorded settings did not make.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from circuitsviz.errors import BadInputError
from circuitsviz.store import SettingsChangedError, StoreVersionError, open_run
from circuitsviz.study import StudySettings, study

# Tiny on purpose: these tests check bookkeeping, not science.
TINY = StudySettings(n_images=120, vis_size=32, vis_steps=2, k=4, batch_size=40, sae_steps=20, sae_images=120,
                     sae_per_image=8, n_split=1, split_top=3, feature_vis=1)
VIS = [0, 1]


def run_study(out, layers=("mixed3b",), overwrite=False, **changes):
    return study("demo", "procedural", out=out, layers=list(layers), vis_channels=VIS, progress=False,
                 settings=dataclasses.replace(TINY, **changes), overwrite=overwrite)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "base"
    run_study(out)
    return out


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the finished base run, for a test that changes it."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def step_times(out) -> list:
    return [(r.step, r.key, r.at, r.complete) for r in open_run(out).steps()]


def assert_consistent(out) -> None:
    """Every stored result was made with the settings its step records, on the recorded data."""
    run = open_run(out)
    for rec in run.steps("vis"):
        prefix, kind = rec.key.rsplit("|", 1)
        layer, _, sae = prefix.partition("/")
        for u in run.units(layer=layer, sae=sae or None):
            for v in run.visualizations(u.id, kind=kind):
                assert (v.settings["steps"], v.settings["size"]) == (rec.settings["steps"], rec.settings["size"]), u.id
    mined = {r.key: r.settings for r in run.steps("mine")}
    for u in run.units():
        examples = run.examples(u.id)
        if examples:
            key = u.layer + (f"/{u.sae}" if u.sae else "")
            assert len(examples) <= mined[key]["k"], u.id
            source = run.source()
            assert all(0 <= source.index_of(e.image_id) < len(source) for e in examples)
    for s in run.saes():
        assert run.step("sae", f"{s.layer}/{s.name}").complete
        assert {f.sae for f in run.features(s.name)} <= {s.name}
    for sp in run.splits():
        assert run.sae(sp.sae, sp.layer) is not None


def test_the_same_settings_reuse_every_step(copy, capsys):
    before = step_times(copy)
    report = run_study(copy)
    log = capsys.readouterr().out
    assert step_times(copy) == before  # no step was redone or even re-marked
    for what in ("visualizations of mixed3b", "dataset examples of mixed3b", "SAE mixed3b/topk8x_k1",
                 f"split of {report.splits[0].channel}", "dataset examples of mixed3b/topk8x_k1"):
        assert f"{what}: done already" in log
    assert report.sae == "topk8x_k1" and report.splits
    assert_consistent(copy)


@pytest.mark.parametrize("change, named", [
    (dict(vis_steps=3), "steps=2 (now 3)"),
    (dict(sae_steps=25), "steps=20 (now 25)"),
    (dict(k=5), "k=4 (now 5)"),
    (dict(data_seed=2), "seed=1 (now 2)"),
])
def test_a_changed_setting_stops_before_any_work_naming_it(copy, change, named):
    before, source = step_times(copy), open_run(copy).info().data_source
    with pytest.raises(SettingsChangedError, match="--overwrite") as err:
        run_study(copy, **change)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert step_times(copy) == before and open_run(copy).info().data_source == source


def test_another_sae_k_fits_a_second_sae_beside_the_first(copy):
    report = run_study(copy, sae_k=2)
    run = open_run(copy)
    assert sorted(s.name for s in run.saes("mixed3b")) == ["topk8x_k1", "topk8x_k2"]
    assert report.sae == "topk8x_k2" and report.splits and report.features is not None
    for name in ("topk8x_k1", "topk8x_k2"):
        feats = run.units(layer="mixed3b", kind="feature", sae=name)
        assert len(feats) == 64 and all(run.examples(f.id) or run.stats(f.id).max == 0 for f in feats)
    run_study(copy, sae_k=2)  # and it is reusable in turn (the old split step crashed here)
    assert_consistent(copy)


def test_another_layer_is_added_to_the_run(copy):
    report = run_study(copy, layers=["mixed3a"])
    run = open_run(copy)
    assert report.layer == "mixed3a" and run.saes("mixed3a") and run.saes("mixed3b")
    for layer in ("mixed3a", "mixed3b"):
        assert run.visualizations(f"{layer}:0") and run.examples(f"{layer}:0")
    assert_consistent(copy)


def test_overwrite_replaces_old_results_and_everything_made_from_them(copy):
    report = run_study(copy, overwrite=True, vis_steps=3, k=3, data_seed=2, sae_steps=25)
    run = open_run(copy)
    assert run.info().data_source["seed"] == 2
    assert {v.settings["steps"] for u in run.units() for v in run.visualizations(u.id)} == {3}
    assert max(len(run.examples(u.id)) for u in run.units()) == 3
    assert [s.config["extra"]["fit"]["steps"] for s in run.saes()] == [25]
    assert report.seconds > 0 and report.splits
    assert_consistent(copy)


def test_report_seconds_survive_a_rerun_that_reuses_everything(copy):
    import json

    first = json.loads((copy / "report.json").read_text())["seconds"]
    run_study(copy)
    assert json.loads((copy / "report.json").read_text())["seconds"] == first


@pytest.mark.parametrize("change, match", [
    (dict(k=0), r"^k must be an integer in \[1, 1048576\], got 0$"),
    (dict(sae_k=0), r"^sae_k must be an integer in \[1, "),
    (dict(sae_k=10_000), "valid: 1..64"),
    (dict(sae_expansion=64, sae_images=20, sae_per_image=1), "needs more samples than features"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, change, match):
    with pytest.raises(BadInputError, match=match):
        run_study(tmp_path / "run", **change)
    assert not (tmp_path / "run").exists()


def test_split_cli_finds_the_studys_sae_through_the_run_index(copy, capsys):
    from circuitsviz.cli import main

    rc = main(["split", "--run", str(copy), "--channel", "mixed3b:1", "--top", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "mixed3b/topk8x_k1:" in out
    split = open_run(copy).split("mixed3b:1", sae="topk8x_k1")
    assert len(split.features) == 2 and split.features[0].unit_id in out


def test_a_schema_1_run_is_upgraded_in_place(tmp_path):
    """Runs written before SAEs were named within their layer, and steps recorded their settings."""
    from circuitsviz.store.schema import CIRCUIT_TABLES, SCHEMA, SCHEMA_VERSION, SPLIT_TOTALS

    v1 = (SCHEMA.replace(CIRCUIT_TABLES, "").replace(SPLIT_TOTALS, "").replace("metrics TEXT NOT NULL DEFAULT '{}', path TEXT, PRIMARY KEY (layer, name));",
                         "metrics TEXT NOT NULL DEFAULT '{}', path TEXT, PRIMARY KEY (name));")
          .replace("settings TEXT, complete INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (step, key));",
                   "PRIMARY KEY (step, key));"))
    assert v1 != SCHEMA
    _old_index(tmp_path / "old", v1, 1, ["INSERT INTO saes VALUES ('sae', 'mixed3b', '{}', '{}', NULL)",
                                        "INSERT INTO done VALUES ('vis', 'mixed3b:0', 1.0)"])
    with pytest.raises(StoreVersionError, match="older store schema 1"):  # a reader changes nothing
        open_run(tmp_path / "old")
    run = open_run(tmp_path / "old", writable=True)
    assert run._rows("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 5
    assert [(s.layer, s.name) for s in run.saes()] == [("mixed3b", "sae")]
    rec = run.step("vis", "mixed3b:0")
    assert rec.complete and rec.settings is None  # unknown: a re-run with any settings is refused
    with pytest.raises(SettingsChangedError, match="not recorded"):
        run.check_step("vis", "mixed3b:0", {"steps": 2})


def test_a_schema_3_run_keeps_its_crops_when_its_fields_move_to_the_first_pixel_convention(tmp_path):
    """Schema 3 recorded a field's centre; 4 records its first pixel, as mining's ReceptiveField does."""
    from circuitsviz.geometry import ReceptiveField
    from circuitsviz.store import receptive_box
    from circuitsviz.store.schema import SCHEMA

    # conv2d0 of InceptionV1: 7 px, stride 2, first pixel -2 -> centre 1.5; one layer without a field
    _old_index(tmp_path / "old", SCHEMA, 3, ["INSERT INTO layers VALUES ('conv2d0', 64, 112, 112, '[]', 7, 2, 1.5)",
                                            "INSERT INTO layers VALUES ('head', 8, NULL, NULL, '[]', NULL, NULL, NULL)"])
    with pytest.raises(StoreVersionError, match="older store schema 3"):
        open_run(tmp_path / "old")
    open_run(tmp_path / "old", writable=True).close()
    run = open_run(tmp_path / "old")
    assert run.layer("conv2d0").rf == (7, 2, -2) and run.layer("head").rf is None
    rf = ReceptiveField((7, 7), (2, 2), (-2, -2))
    for y, x in [(0, 0), (3, 5), (111, 111)]:
        top, left, bottom, right = rf.box(y, x, image_size=224)
        assert receptive_box(run.layer("conv2d0").rf, y, x, 224) == (left, top, right, bottom)


def test_the_study_stores_the_circuits_of_its_split_channels_and_their_top_features(base):
    from circuitsviz.circuits import circuit
    from circuitsviz.models import load_model
    from circuitsviz.sae import load_sae

    run = open_run(base)
    [sp] = run.splits("mixed3b")
    units = [sp.channel_id] + [f.unit_id for f in sp.features[:2]]
    assert run.circuit_units() == units
    sae = load_sae(run.sae(sp.sae, "mixed3b").path, layer="mixed3b")
    for u in units:  # the stored weights are those circuit() computes from the layer before
        want = circuit(load_model("demo"), u, source="mixed3a", top=8, sae=sae).to_rows()
        got = run.circuit(u, source="mixed3a").to_rows()
        assert [r["other"] for r in got] == [r["other"] for r in want]
        assert [r["total"] for r in got] == pytest.approx([r["total"] for r in want], rel=1e-6)
        [f] = run.faithfulness(u)
        assert (f.source, f.n, f.data["seed"]) == ("mixed3a", 5, 10000)  # held out: not the study's data seed


def _old_index(folder, schema: str, version: int, inserts: list[str]) -> None:
    """A run folder whose index an older release wrote: ``schema`` at ``user_version``, with rows."""
    import sqlite3

    folder.mkdir()
    conn = sqlite3.connect(folder / "index.sqlite")
    conn.executescript(schema + f"PRAGMA user_version = {version};")
    for sql in inserts:
        conn.execute(sql)
    conn.commit()
    conn.close()
