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


def test_visualize_png_writes_each_image_and_a_captioned_contact_sheet_of_them(tmp_path, capsys):
    from PIL import Image

    from circuitsviz.optvis.grid import CAPTION_HEIGHT, GAP, tile_origin

    pngs = tmp_path / "png"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        rc = main(["visualize", "--no-pretrained", "--layer", "conv2d0", "--channels", "3,5-6", "--size", "24",
                   "--steps", "2", "--quiet", "--out", str(tmp_path / "run"), "--png", str(pngs)])
    assert rc == 0 and "contact.png" in capsys.readouterr().out
    singles = [np.asarray(Image.open(pngs / f"conv2d0_{c}.png").convert("RGB")) for c in (3, 5, 6)]
    sheet = np.asarray(Image.open(pngs / "contact.png").convert("RGB"))
    cols = 2                                        # three tiles: a near-square sheet of 2 x 2
    cell_w, cell_h = (sheet.shape[1] - GAP) // cols - GAP, 24 + CAPTION_HEIGHT
    assert sheet.shape[0] == GAP + 2 * (cell_h + GAP)
    strips = []
    for i, single in enumerate(singles):
        left, top = tile_origin(i, cols, cell_w, cell_h)
        assert np.array_equal(sheet[top:top + 24, left:left + 24], single), i   # the tile is that image
        strips.append(sheet[top + 24:top + cell_h, left:left + cell_w])
        assert (strips[-1] < 128).any(), f"no caption under tile {i}"
    assert not np.array_equal(strips[0], strips[1])  # each caption is its own unit id
    assert not any(np.array_equal(singles[0], s) for s in singles[1:])  # the tiles are told apart above
