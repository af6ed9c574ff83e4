"""Mining throughput against a bare truncated forward over the same data and batch size.

    python benchmarks/mining.py [--images 256] [--batch 32] [--device cuda]

InceptionV1 with random weights (speed does not depend on them) over generated 224-px images held
in memory. Mining keeps top-32 examples, positions, statistics, histograms and binned examples for
every channel of mixed3b, mixed4a and mixed4e; the baseline runs the same batches to mixed4e
and throws the activations away. Mining is timed with fixed histogram bins (``hist_range``); with
``--calibration`` it also times the calibration forward over the first 64 images that fixes
per-unit bins, a one-off cost, since it does not grow with the dataset; so is the setup every
run does once (tracing receptive fields; the layers' shapes come from the first batch).
The process applies ``retain_freed_memory()`` first, as the ``circuitsviz`` command does.
Target: the whole mining call >= 0.95x the baseline's images/s.
"""

import argparse
import os
import time

import torch

from _common import add_retain_memory_flag, apply_retain_memory, sync
from circuitsviz.data import iterate_batches
from circuitsviz.mining import mine
from circuitsviz.mining.mine import _calibrate, _fields, _LayerState, _Pairs
from circuitsviz.mining.stats import histogram_edges
from circuitsviz.models import load_model

LAYERS = ["mixed3b", "mixed4a", "mixed4e"]


class Generated(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.images = torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 10


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds). On a CPU shared with other jobs the CPU time
    counts only the work done here, so it is the steadier measure; on CUDA read the wall time."""
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3, help="best of this many passes each")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--calibration", action="store_true", help="also time the one-off calibration forward")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 images, batch 16, one pass")
    add_retain_memory_flag(ap)
    args = ap.parse_args()
    if args.quick:
        args.images, args.batch, args.reps = 32, 16, 1
    retained = apply_retain_memory(args)
    model = load_model("inceptionv1", pretrained=False, device=args.device)
    data = Generated(args.images)

    def bare():
        for batch in iterate_batches(data, batch_size=args.batch):
            model.activations(batch.images, "mixed4e")

    def mining():
        mine(model, data, LAYERS, k=32, batch_size=args.batch, progress=False, hist_range=(0.0, 100.0))

    def calibration():
        _calibrate(model, _Pairs(data), LAYERS, None, 64, args.batch)

    def setup():  # what mine() does once per run with fixed bins: trace receptive fields
        _fields(model, LAYERS)

    bare()  # warm-up
    # Interleaved, best of each: a shared machine's load drifts less between neighbouring passes.
    runs = [(timed(bare, args.device), timed(mining, args.device), timed(setup, args.device),
             timed(calibration, args.device) if args.calibration else (0.0, 0.0)) for _ in range(args.reps)]
    (w_bare, c_bare), (w_mine, c_mine), (w_setup, c_setup), (w_cal, _) = (
        (min(r[i][0] for r in runs), min(r[i][1] for r in runs)) for i in range(4))
    # Per batch, interleaved: the bare forward, then mining's inner loop (forward capturing three
    # layers + bookkeeping) on the same batch. Robust to load drift on a shared machine.
    states, lone, inner = None, [0.0, 0.0], [0.0, 0.0]
    for batch in iterate_batches(data, batch_size=args.batch):
        for i, t in enumerate(timed(lambda: model.activations(batch.images, "mixed4e"), args.device)):
            lone[i] += t

        def step():
            nonlocal states
            acts = model.activations(batch.images, LAYERS)
            states = states or {n: _LayerState(a.shape[1], a.shape[2], a.shape[3], 32, histogram_edges(
                a.flatten(2).amax(2).cpu(), 64, (0.0, 100.0)), 4, False, a.device) for n, a in acts.items()}
            idx, lab = batch.indices.to(args.device), batch.labels.to(args.device)
            for n, a in acts.items():
                states[n].update(a, idx, lab)

        for i, t in enumerate(timed(step, args.device)):
            inner[i] += t
    n = args.images
    print(f"device={args.device} images={n} batch={args.batch} threads={torch.get_num_threads()} "
          f"retain_freed_memory={retained} load average {os.getloadavg()[0]:.1f}")
    print(f"{'':36}{'wall':>9}{'CPU time':>10}")
    print(f"{'bare forward to mixed4e, img/s':36}{n / w_bare:9.1f}{n / c_bare:10.1f}")
    print(f"{'mining 3 layers, whole call, img/s':36}{n / w_mine:9.1f}{n / c_mine:10.1f}")
    print(f"{'ratio mining / bare (target >= 0.95)':36}{w_bare / w_mine:9.3f}{c_bare / c_mine:10.3f}")
    print(f"{'  without the one-off setup':36}{w_bare / (w_mine - w_setup):9.3f}{c_bare / (c_mine - c_setup):10.3f}"
          f"  (setup {w_setup:.2f} s wall: the receptive-field trace)")
    print(f"{'per-batch interleaved ratio':36}{lone[0] / inner[0]:9.3f}{lone[1] / inner[1]:10.3f}")
    if args.calibration:
        print(f"with per-unit calibrated bins: {n / (w_mine + w_cal):.1f} img/s wall (one-off calibration {w_cal:.2f} s)")


if __name__ == "__main__":
    main()
