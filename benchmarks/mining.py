"""Mining throughput against a bare truncated forward over the same data and batch size.

    python benchmarks/mining.py [--images 256] [--batch 32] [--device cuda]

InceptionV1 with random weights (speed does not depend on them) over generated 224-px images held
in memory. Mining keeps top-32 examples, positions, statistics, histograms and binned examples for
every channel of mixed3b, mixed4a and mixed4e; the baseline runs the same batches to mixed4e
and throws the activations away. Mining is timed with fixed histogram bins (``hist_range``); by
default it also runs one calibration forward over the first 64 images to fix per-unit bins, a
one-off cost timed separately, since it does not grow with the dataset; so is the setup every
run does once (tracing receptive fields; the layers' shapes come from the first batch).
The process applies ``retain_freed_memory()`` first, as the ``circuitsviz`` command does.
Target: the whole mining call >= 0.95x the baseline's images/s.
"""

import argparse
import time

import torch

from _common import add_retain_memory_flag, apply_retain_memory
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


def timed(fn, device) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3, help="best of this many passes each")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_retain_memory_flag(ap)
    args = ap.parse_args()
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
    runs = [(timed(bare, args.device), timed(mining, args.device), timed(calibration, args.device),
             timed(setup, args.device)) for _ in range(args.reps)]
    t_bare, t_mine, t_cal, t_setup = (min(r[i] for r in runs) for i in range(4))
    # Per batch, interleaved: the bare forward, then mining's inner loop (forward capturing three
    # layers + bookkeeping) on the same batch. Robust to load drift on a shared machine.
    states, lone, inner = None, 0.0, 0.0
    for batch in iterate_batches(data, batch_size=args.batch):
        lone += timed(lambda: model.activations(batch.images, "mixed4e"), args.device)

        def step():
            nonlocal states
            acts = model.activations(batch.images, LAYERS)
            states = states or {n: _LayerState(a.shape[1], a.shape[2], a.shape[3], 32, histogram_edges(
                a.flatten(2).amax(2).cpu(), 64), 4, False, a.device) for n, a in acts.items()}
            idx, lab = batch.indices.to(args.device), batch.labels.to(args.device)
            for n, a in acts.items():
                states[n].update(a, idx, lab)

        inner += timed(step, args.device)
    n = args.images
    print(f"device={args.device} images={n} batch={args.batch} threads={torch.get_num_threads()} "
          f"retain_freed_memory={retained}")
    print(f"bare forward to mixed4e            {n / t_bare:8.1f} img/s")
    print(f"mining mixed3b+mixed4a+mixed4e     {n / t_mine:8.1f} img/s")
    print(f"  with per-unit calibrated bins    {n / (t_mine + t_cal):8.1f} img/s  (one-off calibration {t_cal:.2f} s)")
    print(f"ratio mining / bare                {t_bare / t_mine:8.3f}  (whole call, {n} images; target >= 0.95)")
    print(f"  without the one-off setup        {t_bare / (t_mine - t_setup):8.3f}  (setup "
          f"{t_setup:.2f} s: the receptive-field trace)")
    print(f"per-batch interleaved ratio        {lone / inner:8.3f}  (bare {n / lone:.1f} img/s, mining loop {n / inner:.1f} img/s)")


if __name__ == "__main__":
    main()
