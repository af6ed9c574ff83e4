"""``circuitsviz fit-sae`` then ``circuitsviz split`` on a random-weight InceptionV1, end to end."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from circuitsviz.cli import main
from circuitsviz.sae import load_sae, open_cache, split_channel


def test_fit_sae_then_split_records_ranked_features_in_the_run(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    run = tmp_path / "run"
    common = ["--model", "inceptionv1", "--no-pretrained", "--device", "cpu"]
    rc = main(["fit-sae", *common, "--data", str(images), "--layer", "mixed3a", "--expansion", "1", "--k", "4",
               "--sampler", "all", "--steps", "8", "--batch-size", "128", "--out", str(run), "--no-progress"])
    assert rc == 0
    sae_dir = run / "saes" / "mixed3a" / "topk1x_k4"
    assert json.loads((sae_dir / "sae.json").read_text())["config"]["layer"] == "mixed3a"
    assert len((sae_dir / "train_log.jsonl").read_text().splitlines()) >= 2

    # A channel that never fires is reported clearly; an out-of-range one too.
    rc = main(["split", "--run", str(run), "--layer", "mixed3a", "--channel", "999"])
    assert rc == 2 and "valid: 0..255" in capsys.readouterr().err
    rc = main(["split", "--run", str(run), "--layer", "mixed4e", "--channel", "1"])
    assert rc == 2 and "no SAE on layer 'mixed4e'" in capsys.readouterr().err

    sae = load_sae(sae_dir)
    samples = np.concatenate([np.load(p) for p in sorted(run.glob("activations/*/acts_*.npy"))])
    channel = int(np.argmax((samples > 0).mean(0)))
    capsys.readouterr()
    rc = main(["split", "--run", str(run), "--layer", "mixed3a", "--channel", str(channel), "--top", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "mixed3a/topk1x_k4:" in out
    from circuitsviz.store import open_run

    stored = open_run(run).split("mixed3a", channel)
    want = split_channel(sae, channel, data=open_cache(sae.config.extra["cache"]), top=3)
    assert [f.unit_id for f in stored.features] == [f.unit_id for f in want.features]
    assert open_run(run).saes("mixed3a")[0].name == "topk1x_k4"
