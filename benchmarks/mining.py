"""Mining throughput against a bare truncated forward over the same data and batch size.

    python benchmarks/mining.py [--images 256] [--batch 32] [--device cuda]

InceptionV1 with random weights (speed does not depend on them) over generated 224-px images held
in memory. Mining keeps top-32 examples, positions, statistics, histograms and binned examples for
every channel of mixed3b, mixed4a and mixed4e; the baseline runs the same batches to mixed4e
and throws the activations away. Mining also runs one calibration forward (the first 64 images)
to fix histogram bins; it is timed separately, since it does not grow with the dataset.
Target: mining >= 0.9x the baseline's images/s.
"""

import argparse
import time

import torch

from circuitsviz.data import iterate_batches
from circuitsviz.mining import mine
from circuitsviz.mining.mine import _calibrate, _Pairs
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
    ap.add_argument("--reps", type=int, default=2, help="best of this many passes each")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    model = load_model("inceptionv1", pretrained=False, device=args.device)
    data = Generated(args.images)

    def bare():
        for batch in iterate_batches(data, batch_size=args.batch):
            model.activations(batch.images, "mixed4e")

    def mining():
        mine(model, data, LAYERS, k=32, batch_size=args.batch, progress=False)

    def calibration():
        _calibrate(model, _Pairs(data), LAYERS, None, 64, args.batch)

    bare()  # warm-up
    # Interleaved, best of each: a shared machine's load drifts less between neighbouring passes.
    runs = [(timed(bare, args.device), timed(mining, args.device), timed(calibration, args.device))
            for _ in range(args.reps)]
    t_bare, t_mine, t_cal = (min(r[i] for r in runs) for i in range(3))
    n = args.images
    print(f"device={args.device} images={n} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"bare forward to mixed4e            {n / t_bare:8.1f} img/s")
    print(f"mining mixed3b+mixed4a+mixed4e     {n / (t_mine - t_cal):8.1f} img/s  (calibration excluded)")
    print(f"  including one-off calibration    {n / t_mine:8.1f} img/s  (calibration {t_cal:.2f} s)")
    print(f"ratio mining / bare                {t_bare / (t_mine - t_cal):8.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
