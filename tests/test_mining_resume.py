"""A mining run killed mid-way and started again ends with exactly the uninterrupted result."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from circuitsviz.mining import MiningResult

# The job a user would rerun: a fixed tiny model over a slow dataset (so it can be killed mid-run).
SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    from circuitsviz.models import wrap_model
    from circuitsviz.mining import mine

    class Slow(torch.utils.data.Dataset):
        def __init__(self, delay):
            self.images = torch.rand(48, 3, 16, 16, generator=torch.Generator().manual_seed(0))
            self.delay = delay
        def __len__(self):
            return len(self.images)
        def __getitem__(self, i):
            time.sleep(self.delay)
            return self.images[i], i % 3

    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3), nn.ReLU())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    model = wrap_model(net, input_size=16)
    out, delay, checkpoint = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
    result = mine(model, Slow(delay), ["1", "4"], k=5, batch_size=4, progress=False, mean_top_k=True,
                  checkpoint=out if checkpoint else None, checkpoint_every=8)
    if not checkpoint:
        result.save(out)
""")


def _run(script, *args, env):
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env, check=True,
                          capture_output=True, text=True, timeout=120)


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ckpt = tmp_path / "ckpt.npz"
    job = subprocess.Popen([sys.executable, str(script), ckpt, "0.05", "1"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while not ckpt.exists() and time.time() < deadline and job.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)   # let it run past the checkpoint, into work that will be lost
    finally:
        job.kill()
        job.wait()
    partial = MiningResult.load(ckpt)
    assert 0 < partial.done < partial.total == 48, "the job must be killed mid-run"

    resumed = _run(script, ckpt, 0, 1, env=env)
    assert "resuming" in resumed.stdout
    _run(script, tmp_path / "full.npz", 0, 0, env=env)
    a, b = MiningResult.load(ckpt), MiningResult.load(tmp_path / "full.npz")
    assert a.complete and a.n_images == b.n_images == 48
    for name in ("1", "4"):
        ra, rb = a.layers[name], b.layers[name]
        for field in ("top_value", "top_index", "top_pos", "top_label", "mean_index", "max", "positive",
                      "hist_counts", "bin_index", "bin_value", "bin_pos"):
            assert np.array_equal(getattr(ra, field), getattr(rb, field)), (name, field)
        assert np.array_equal(ra.mean_sum, rb.mean_sum)     # same batches, same order: bit-exact
