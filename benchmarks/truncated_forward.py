"""Speed-up of a truncated forward (to mixed3b) over a full InceptionV1 forward.

    python benchmarks/truncated_forward.py [--batch 16] [--reps 5] [--device cuda]

Random weights: speed does not depend on them. Both paths are timed in the same run.
"""

import argparse
import time

import torch

from circuitsviz.models import load_model


def best_of(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    model = load_model("inceptionv1", pretrained=False, device=args.device)
    x = torch.rand(args.batch, 3, 224, 224, device=args.device)
    with torch.inference_mode():
        full = best_of(lambda: model(x), args.reps)
        trunc = best_of(lambda: model.activations(x, "mixed3b"), args.reps)
    print(f"device={args.device} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"full forward      {args.batch / full:8.1f} img/s")
    print(f"to mixed3b        {args.batch / trunc:8.1f} img/s")
    print(f"speed-up          {full / trunc:8.2f}x")


if __name__ == "__main__":
    main()
