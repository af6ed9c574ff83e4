"""The study pipeline, end to end: ground truth on the demo model, idempotence, InceptionV1, bad input."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from circuitsviz.errors import BadInputError, UnknownNameError
from circuitsviz.study import StudySettings, study

# Small enough for a 2-core CI machine, large enough that concept counts are stable.
REDUCED = StudySettings(n_images=650, vis_size=32, vis_steps=4, k=16, sae_steps=600, n_split=2, feature_vis=2)


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "demo"
    with pytest.MonkeyPatch.context() as m:  # the study pre-renders example views: into a cache of the test's own
        m.setenv("CIRCUITSVIZ_CACHE", str(out.parent / "cache"))
        report = study("demo", "procedural", out=out, settings=REDUCED, progress=False)
        yield out, report


def test_split_lowers_concept_count_of_a_polysemantic_channel(demo_study):
    _, report = demo_study
    assert report.channels is not None and report.features is not None
    assert report.channels.mean_concepts >= 2.5  # the superposition layer really is polysemantic
    lowered = [
        s for s in report.splits
        if s.concept_count >= 2 and np.mean([f["concept_count"] for f in s.features[:3]]) < s.concept_count
    ]
    assert lowered, report.summary()
    # The features of the whole SAE are more monosemantic than the channels.
    assert report.features.mean_concepts < report.channels.mean_concepts


def test_study_writes_every_kind_of_record_into_the_run(demo_study):
    from circuitsviz.store import open_run

    out, report = demo_study
    run = open_run(out)
    channels = run.units(layer="mixed3b", kind="channel")
    assert len(channels) == 8
    for u in channels:
        assert run.visualizations(u.id) and run.examples(u.id) and run.stats(u.id) is not None
    split = run.split("mixed3b", int(report.splits[0].channel.split(":")[1]), report.sae)
    assert split is not None and len(split.features) > 0
    top = split.features[0].unit_id
    assert run.examples(top) and run.visualizations(top)
    assert run.saes()[0].metrics  # FVU, L0, ... were recorded
    assert run.verify() == []


def test_study_renders_the_split_channels_other_views(demo_study):
    from circuitsviz.models import load_model
    from circuitsviz.store import open_run

    out, report = demo_study
    run = open_run(out)
    h, w = load_model("demo", pretrained=False).layer_shapes(["mixed3b"], input_size=REDUCED.vis_size)["mixed3b"][1:]
    split = {int(s.channel.split(":")[1]) for s in report.splits}
    assert len(split) == REDUCED.n_split
    for u in run.units(layer="mixed3b", kind="channel"):
        kinds = sorted(v.kind for v in run.visualizations(u.id))
        neurons = [v for n in run.units(layer="mixed3b", kind="neuron") if n.index == u.index
                   for v in run.visualizations(n.id)]
        if u.index in split:  # Lucid's diversity renders 4 images; the neuron is the one at the centre
            assert kinds == ["diversity"] * 4 + ["negative", "positive"], (u.id, kinds)
            assert [(v.kind, v.unit_id) for v in neurons] == [("neuron", f"{u.id}@{h // 2},{w // 2}")]
            negative = run.visualizations(u.id, "negative")[0]
            assert negative.objective < run.visualizations(u.id, "positive")[0].objective
        else:
            assert kinds == ["positive"] and not neurons, (u.id, kinds)


def test_the_viewer_shows_the_split_channels_views_and_draws_no_example_on_a_cold_page(demo_study, monkeypatch):
    """The study pre-rendered every example view of its split channels and their features: with
    drawing made impossible, their unit and compare pages still show every image."""
    from circuitsviz.store import open_run, render

    from .test_viewer import app, attrs, html_blocks

    out, report = demo_study
    monkeypatch.setenv("CIRCUITSVIZ_CACHE", str(out.parent / "cache"))

    def no_drawing(*args, **kwargs):
        raise AssertionError("an example view was drawn while the page was shown")

    monkeypatch.setattr(render, "render_view", no_drawing)
    channel = report.splits[0].channel
    at = app(out, "unit", unit=channel)
    assert not at.exception and not at.error
    assert sorted(set(attrs(at, "data-vis"))) == ["diversity", "negative", "neuron", "positive"]
    assert not [e for e in at.expander if "Not rendered yet" in e.label]
    at = app(out, "compare", unit=channel)
    assert not at.exception and not at.error
    assert "image missing" not in html_blocks(at)
    run = open_run(out)
    for uid in [channel] + [f.unit_id for f in run.split(*channel.split(":")).features]:
        for e in run.examples(uid) + run.quantile_examples(uid):  # every view the pages can ask for
            render.render_example(run, e, render.default_mode(run.layer("mixed3b").rf, run.info().input_size))


def test_second_run_reuses_every_finished_step(demo_study, capsys):
    out, first = demo_study
    again = study("demo", "procedural", out=out, settings=REDUCED, progress=False)
    log = capsys.readouterr().out
    for step in ("visualizations of mixed3b", "dataset examples of mixed3b", "SAE", "split of"):
        assert f"{step}" in log and "done already" in log
    assert "fitting SAE" not in log and "mining" not in log and "visualizing" not in log
    assert again.channels.concept_count == first.channels.concept_count


def test_study_runs_end_to_end_on_inceptionv1_random_weights(tmp_path):
    """The documented mixed4e:55 recipe, on random weights and a handful of images."""
    data = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("cat", "car"):
        (data / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray((rng.random((90, 120, 3)) * 255).astype("uint8")).save(data / label / f"{i}.jpg")
    (data / "cat" / "broken.jpg").write_text("not an image")
    settings = StudySettings(vis_size=32, vis_steps=2, k=4, batch_size=4, sae_expansion=2, sae_k=8,
                             sae_steps=30, sae_per_image=196, feature_vis=1, split_top=4)
    report = study("inceptionv1", str(data), out=tmp_path / "run", layers=["mixed4e"], channels=[55],
                   vis_channels=[55], settings=settings, pretrained=False, progress=False)
    from circuitsviz.store import open_run

    run = open_run(tmp_path / "run")
    assert run.visualizations("mixed4e:55") and len(run.examples("mixed4e:55")) == 4
    assert run.split("mixed4e", 55, report.sae) is not None
    assert report.channels is not None and len(report.channels.ids) == 832


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model="inceptionv2"), UnknownNameError, "unknown model"),
    (dict(data="/nonexistent/folder"), BadInputError, "does not exist"),
    (dict(layers=["mixed9z"]), UnknownNameError, "mixed9z"),
    (dict(channels=[8]), Exception, "out of range"),
])
def test_bad_input_fails_before_any_work(tmp_path, kwargs, error, match):
    args = dict(model="demo", data="procedural", layers=None, channels=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        study(args.pop("model"), args.pop("data"), out=tmp_path / "run", settings=REDUCED, progress=False, **args)
    assert not (tmp_path / "run").exists()


def test_folder_without_images_is_refused_before_work(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(BadInputError, match="holds no images"):
        study("demo", str(tmp_path / "empty"), out=tmp_path / "run", settings=REDUCED, progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_bad_layer_is_one_clean_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "circuitsviz", "study", "--model", "demo", "--layers", "mixed3x",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown layer 'mixed3x'" in proc.stderr and "mixed3b" in proc.stderr


def test_killed_study_resumes_with_the_same_command(tmp_path):
    """Kill the study while it fits its SAE; the same command then finishes, reusing earlier steps."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-u", "-m", "circuitsviz", "study", "--model", "demo", "--out", str(out),
           "--n-images", "300", "--vis-size", "32", "--vis-steps", "2", "--k", "8", "--sae-steps", "4000",
           "--n-split", "1", "--feature-vis", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    for line in proc.stdout:
        if "fitting SAE" in line or time.time() > deadline:
            time.sleep(3)  # let it checkpoint part of the way
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "visualizations of mixed3b: done already" in done.stdout
    assert "dataset examples of mixed3b: done already" in done.stdout
    assert (out / "report.json").exists()
    from circuitsviz.store import open_run

    assert open_run(out).verify() == []
