"""The publishing API from Python, the thin commands on top of it, and two writers at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import circuitsviz as cv
from circuitsviz.cli import main
from circuitsviz.data import ConceptDataset
from circuitsviz.store import SettingsChangedError, open_run

DEMO = ["--model", "demo", "--device", "cpu"]


@pytest.fixture(scope="module")
def demo():
    return cv.load_model("demo")


def test_python_puts_a_visualization_mining_and_split_into_a_run_the_viewer_shows(demo, tmp_path):
    data = ConceptDataset(n=60, seed=3, size=64)
    run = cv.open_run(tmp_path / "run", create=True)
    assert run.add_visualizations(cv.visualize(demo, ["mixed3b:0", "mixed3b:1"], size=32, steps=2,
                                               progress=False), model=demo) == 2
    assert run.add_mining(cv.mine(demo, data, ["mixed3b"], k=4, progress=False), data, model=demo) == 8
    sae = cv.fit_sae(demo, data, "mixed3b", expansion=2, k=2, steps=20, n_images=60, progress=False,
                     cache_root=tmp_path / "cache")
    assert run.add_sae(sae) == "mixed3b/topk2x_k2"
    split = cv.split_channel(sae, 1, data=data, model=demo, top=3)
    run.add_split(split)
    feature = split.features[0].unit_id
    [r] = cv.visualize(demo, cv.feature_objective(feature, sae=sae), size=32, steps=2, progress=False)
    assert r.unit == feature
    run.add_visualizations([r])

    again = cv.open_run(tmp_path / "run")
    assert again.layer("mixed3b").rf is not None and len(again.examples("mixed3b:1")) == 4
    stored = again.split("mixed3b:1")
    assert [f.unit_id for f in stored.features] == [f.unit_id for f in split.features]
    assert again.visualizations(feature) and again.feature(feature).decoder_top
    assert again.verify() == []
    # The Python path saved the SAE inside the run, so the run alone gives it back, weights and all.
    loaded = again.load_sae("mixed3b/topk2x_k2", model=demo)
    assert Path(again.sae("mixed3b/topk2x_k2").path).resolve().is_relative_to((tmp_path / "run").resolve())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), sae.state_dict().values()))

    from streamlit.testing.v1 import AppTest

    viewer = str(Path(__file__).resolve().parents[1] / "apps" / "viewer.py")
    os.environ["CIRCUITSVIZ_RUN"] = str(tmp_path / "run")  # the run `circuitsviz serve` serves
    at = AppTest.from_file(viewer, default_timeout=60)
    at.query_params.update({"page": "compare", "unit": "mixed3b:1"})
    at.run()
    assert not at.exception
    shown = " ".join(str(e.proto.body) for e in at.get("html"))  # the compare page's feature cards
    assert all(f'data-feature="{f.unit_id}"' in shown for f in split.features)


def test_python_visualizations_with_other_settings_are_refused_unless_overwrite(demo, tmp_path):
    run = cv.open_run(tmp_path / "run", create=True)
    run.add_visualizations(cv.visualize(demo, "mixed3b:0", size=32, steps=2, progress=False))
    other = cv.visualize(demo, "mixed3b:1", size=32, steps=3, progress=False)
    with pytest.raises(SettingsChangedError, match=r"steps=2 \(now 3\)"):
        run.add_visualizations(other)
    run.add_visualizations(other, overwrite=True)  # the layer's old 2-step images go with it
    assert not run.visualizations("mixed3b:0") and run.visualizations("mixed3b:1")[0].settings["steps"] == 3


def test_mine_adds_a_layer_as_a_normal_call_with_one_checkpoint_per_job(tmp_path, capsys):
    out = str(tmp_path / "run")
    common = ["mine", *DEMO, "--data", "procedural", "--n", "40", "--batch-size", "20",
              "--num-workers", "0", "--no-progress", "--out", out, "--k", "3"]
    assert main([*common, "--layers", "mixed3b"]) == 0
    capsys.readouterr()
    assert main([*common, "--layers", "mixed3a,mixed3b"]) == 0
    assert "mixed3b: in the run already" in capsys.readouterr().out
    run = open_run(out)
    assert len(run.examples("mixed3a:0")) == 3 and len(run.examples("mixed3b:0")) == 3
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "run" / "mining").glob("*.npz")) == ["mixed3a", "mixed3b"]
    rc = main([*common[:-1], "5", "--layers", "mixed3b"])
    err = capsys.readouterr().err
    assert rc == 2 and "k=3 (now 5)" in err and "--overwrite" in err


def _fit(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "circuitsviz", "fit-sae", *DEMO, "--data", "procedural", "--images", "80",
           "--layer", "mixed3b", "--expansion", "2", "--k", "2", "--steps", "40", "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow  # two fresh interpreters import torch at once: ~40 s on a 2-core machine
def test_two_concurrent_fit_sae_into_one_run_neither_crash_nor_corrupt(tmp_path, capsys):
    out = tmp_path / "run"
    procs = [_fit(out), _fit(out)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-2000:]
    said = "".join(stdout for stdout, _ in results)
    assert said.count("in the run already") == 1  # the second waited, then reused the first's SAE
    run = open_run(out)
    [record] = run.saes("mixed3b")
    sae = cv.load_sae(record.path)
    assert sae.name == "topk2x_k2" and torch.isfinite(sae.W_dec).all()
    steps = [json.loads(line)["step"] for line in (Path(record.path) / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one curve, not two interleaved
    assert run.verify() == []

    # A feature of that SAE is a unit like any other for the visualize command.
    rc = main(["visualize", *DEMO, "--units", "mixed3b/topk2x_k2:3,mixed3b:2", "--size", "32", "--steps", "2",
               "--quiet", "--out", str(out), "--png", str(tmp_path / "png")])
    assert rc == 0
    assert run.visualizations("mixed3b/topk2x_k2:3") and run.visualizations("mixed3b:2")
    assert (tmp_path / "png" / "mixed3b~topk2x_k2_3.png").is_file()

    # ... and for `circuit`, which finds the SAE through the run's index instead of a --sae path.
    from circuitsviz.circuits import circuit

    capsys.readouterr()
    assert main(["circuit", *DEMO, "--unit", "mixed3b/topk2x_k2:3", "--source", "mixed3a", "--run", str(out),
                 "--top", "3"]) == 0
    demo = cv.load_model("demo")
    expected = circuit(demo, "mixed3b/topk2x_k2:3", source="mixed3a", top=3, sae=[cv.load_sae(record.path)])
    assert expected.table() in capsys.readouterr().out


def test_fit_sae_warns_when_k_is_a_large_share_of_the_features(recwarn):
    x = torch.randn(600, 4)
    cv.fit_sae(None, x, "toy", expansion=2, k=1, steps=2, progress=False)
    assert not [w for w in recwarn if "dense SAE" in str(w.message)]
    with pytest.warns(UserWarning, match=r"k=4 active of 8 features.*try k <= 1"):
        cv.fit_sae(None, x, "toy", expansion=2, k=4, steps=2, progress=False)


def test_an_interrupted_run_visualize_keeps_finished_chunks_and_resumes(demo, tmp_path, monkeypatch):
    import circuitsviz.optvis as optvis

    run = cv.open_run(tmp_path / "run", create=True)
    real, calls = optvis.visualize, []

    def dies_on_the_second_chunk(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(optvis, "visualize", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run.visualize(demo, "mixed3b:*", chunk=3, size=32, steps=2, progress=False)
    assert [u.id for u in run.units() if run.visualizations(u.id)] == ["mixed3b:0", "mixed3b:1", "mixed3b:2"]
    monkeypatch.setattr(optvis, "visualize", real)
    assert run.visualize(demo, "mixed3b:*", chunk=3, size=32, steps=2, progress=False) == 5  # only the rest
    assert run.visualize(demo, "mixed3b:*", chunk=3, size=32, steps=2, progress=False) == 0
    with pytest.raises(SettingsChangedError, match=r"steps=2 \(now 3\)"):
        run.visualize(demo, "mixed3b:0", size=32, steps=3, progress=False)

