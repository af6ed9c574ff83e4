"""``circuitsviz visualize`` writes images, objectives and settings into the run store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuitsviz.cli import main


def test_visualize_cli_writes_one_visualization_per_channel_into_the_run(tmp_path, capsys):
    from circuitsviz.store import open_run

    out = tmp_path / "run"
    with torch.random.fork_rng():  # random weights come from the global RNG; fix them, then restore it
        torch.manual_seed(0)
        rc = main(["visualize", "--model", "inceptionv1", "--no-pretrained", "--layer", "conv2d0",
                   "--channels", "3,5-6", "--size", "24", "--steps", "3", "--quiet", "--out", str(out)])
    assert rc == 0
    run = open_run(out)
    ids = sorted(u["id"] if isinstance(u, dict) else u.id for u in run.units(layer="conv2d0"))
    assert ids == ["conv2d0:3", "conv2d0:5", "conv2d0:6"]
    [vis] = run.visualizations("conv2d0:5")
    assert (vis.height, vis.width, vis.kind) == (24, 24, "positive")
    assert vis.settings["seed"] == 0 and vis.settings["steps"] == 3
    # the stored PNG is exactly what the Python API renders with the same settings
    from PIL import Image

    from circuitsviz.models import load_model
    from circuitsviz.optvis import visualize

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = load_model("inceptionv1", pretrained=False)
    [r] = visualize(model, "conv2d0:5", size=24, steps=3, progress=False)
    assert np.array_equal(np.asarray(Image.open(vis.path).convert("RGB")), r.image)
    assert vis.objective == pytest.approx(r.objective)
    assert "wrote 3 images" in capsys.readouterr().out


def test_visualize_cli_reports_a_channel_out_of_range_as_one_line(tmp_path, capsys):
    rc = main(["visualize", "--no-pretrained", "--layer", "conv2d0", "--channels", "64",
               "--steps", "1", "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "out of range" in err and "0..63" in err
