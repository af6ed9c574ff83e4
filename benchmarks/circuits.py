"""Expanded weights for a whole layer in one batched pass vs a per-unit autograd Jacobian.

    python benchmarks/circuits.py [--target mixed4c] [--source mixed4b] [--sample 32] [--device cuda]

Random seeded InceptionV1 weights (speed does not depend on them; nothing is downloaded).

- **batched**: ``expanded_weights(model, target, source)``, everything included: the probe that
  picks the input size, and one forward and one backward pass over a batch with one item per
  target channel (all 512 of mixed4c).
- **per-unit references**, both on the same linearised network at the same input size, both
  checked to give the same kernels:
  - *forward each*: for each unit, the linearised forward from the image with the source map
    requiring grad, then a backward from the unit's centre (what one would write per unit);
  - *shared forward*: one such forward, then one backward per unit (``retain_graph``).
  The references are timed on ``--sample`` units and extrapolated linearly to the whole layer
  (each unit costs the same); the printout says so.
"""

from __future__ import annotations

import argparse
import time

import torch

from circuitsviz.circuits import expanded_weights, linearised
from circuitsviz.models import load_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _source_and_target(model, source: str, target: str, size: int, device: str):
    """A linearised forward with the source map replaced by a leaf that requires grad."""
    state = {}

    def inject(_m, _i, out):
        state["x"] = torch.zeros_like(out).requires_grad_()
        return state["x"]

    handle = model.module(source).register_forward_hook(inject)
    try:
        with linearised(model.net), model.frozen(), torch.enable_grad():
            images = torch.full((1, 3, size, size), 0.5, device=device)
            acts = model.activations(images, [target], grad=True, check=False)[target]
    finally:
        handle.remove()
    return state["x"], acts


def per_unit(model, source: str, target: str, units: list[int], size: int, device: str, shared: bool):
    kernels = []
    x = acts = None
    for c in units:
        if not shared or x is None:
            x, acts = _source_and_target(model, source, target, size, device)
        cy, cx = acts.shape[2] // 2, acts.shape[3] // 2
        (g,) = torch.autograd.grad(acts[0, c, cy, cx], x, retain_graph=shared)
        kernels.append(g[0])
    _sync(device)
    return torch.stack(kernels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="mixed4c")
    ap.add_argument("--source", default="mixed4b")
    ap.add_argument("--sample", type=int, default=32, help="units the per-unit references are timed on")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    model = load_model("inceptionv1", pretrained=False, device=args.device, seed=0)
    n = model.channels(args.target)

    batched, ew = float("inf"), None
    for _ in range(args.reps):
        t = time.perf_counter()
        ew = expanded_weights(model, args.target, args.source)
        _sync(args.device)
        batched = min(batched, time.perf_counter() - t)

    step = max(1, n // args.sample)
    sample = list(range(0, n, step))[: args.sample]
    results = {}
    for name, shared in (("forward each", False), ("shared forward", True)):
        t = time.perf_counter()
        ref = per_unit(model, args.source, args.target, sample, ew.input_size, args.device, shared)
        per = (time.perf_counter() - t) / len(sample)
        r0, c0 = ew.origin
        kh, kw = ew.weights.shape[-2:]
        # The references ran on the whole map; the batched pass on a crop: compare by offset from the centre.
        cy, cx = ew.centre
        oy, ox = ref.shape[-2] // 2 - cy, ref.shape[-1] // 2 - cx
        crop = ref[:, :, r0 + oy:r0 + oy + kh, c0 + ox:c0 + ox + kw]
        err = float((crop - ew.weights[sample]).abs().max() / ew.weights.abs().max())
        results[name] = (per, err)

    print(f"device={args.device} threads={torch.get_num_threads()} {args.target} <- {args.source}: "
          f"{n} targets, kernels {tuple(ew.weights.shape)}, input {ew.input_size} px")
    print(f"batched, whole layer            {batched:8.2f} s")
    for name, (per, err) in results.items():
        print(f"per-unit ({name:<14}) {per * 1e3:8.1f} ms/unit x {n} = {per * n:8.2f} s "
              f"(timed on {len(sample)} units, extrapolated; max rel. diff {err:.1e})  ratio {per * n / batched:6.1f}x")


if __name__ == "__main__":
    main()
