"""TopK SAE training speed at InceptionV1 mixed4e width (832 -> 6656, k=32), against a dense step.

Both steps do the same maths on the same batch: TopK encoder, MSE, backward, decoder-gradient
projection, clipping, Adam, decoder renormalisation. They differ only in how the code is used:

- **circuitsviz**: ``TopKSAE.training_loss`` via ``train_step`` (the trainer's own step): the
  decoder sums the k selected rows (embedding_bag) and the encoder's backward touches only the
  k selected rows;
- **dense reference** (below): the N x F code is materialised and multiplied by the full
  decoder, and autograd back-propagates through the dense encoder matmul.

Then it fits the circuitsviz SAE on synthetic ground-truth activations for a fixed budget and
prints held-out FVU, L0 and the recovery of the planted directions (MMCS).

    OMP_NUM_THREADS=2 python benchmarks/sae.py              # CPU
    python benchmarks/sae.py --device cuda                  # GPU
"""

from __future__ import annotations

import argparse
import time

import torch

from circuitsviz.sae import TopKSAE, fit_sae
from circuitsviz.sae.train import make_optimizer, train_step

TRUTH_SEED = 1  # not 0, the SAE's own init seed (see main)


def dense_reference_step(sae: TopKSAE, opt: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """The same TopK step written densely: z is N x F, x_hat = z @ W_dec."""
    xn = sae.normalize(x)
    pre = (xn - sae.b_pre) @ sae.W_enc.T + sae.b_enc
    idx = pre.detach().topk(sae.k, dim=1, sorted=False).indices
    z = torch.zeros_like(pre).scatter(1, idx, pre.gather(1, idx).clamp_min(0))
    x_hat = z @ sae.W_dec + sae.b_pre
    loss = (x_hat - xn).pow(2).sum(1).mean() / sae.d_in
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.remove_parallel_grad_()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    opt.step()
    sae.post_step_()
    return float(loss.detach())


def synthetic(d: int, n_true: int, active: int, samples: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth superposition: ``n_true`` unit directions, ~``active`` on per sample, U(0,1) magnitudes."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n_true, d, generator=g)
    truth /= truth.norm(dim=1, keepdim=True)
    rows = []
    for i in range(0, samples, 8192):
        m = min(8192, samples - i)
        on = torch.rand(m, n_true, generator=g) < active / n_true
        rows.append((torch.rand(m, n_true, generator=g) * on) @ truth)
    return torch.cat(rows).to(device), truth.to(device)


def time_steps(step, batches: list[torch.Tensor], device) -> float:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for x in batches:
        step(x)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=6, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    p.add_argument("--fit-steps", type=int, default=300, help="budget of the FVU/L0 fit")
    args = p.parse_args()
    d, f, k = 832, 6656, 32
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"SAE {d} -> {f}, k={k}, batch {args.batch}")

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch, d, generator=gen).relu().to(args.device) for _ in range(args.steps)]
    ours, dense = TopKSAE(d, f, k).to(args.device), TopKSAE(d, f, k).to(args.device)
    opt_ours, opt_dense = make_optimizer(ours, 1e-4), make_optimizer(dense, 1e-4)  # the same optimizer for both
    our_step = lambda x: train_step(ours, opt_ours, x, None)
    dense_step = lambda x: dense_reference_step(dense, opt_dense, x)
    time_steps(our_step, batches[:2], args.device)      # warm-up
    time_steps(dense_step, batches[:2], args.device)
    t_ours, t_dense = [], []
    for _ in range(args.rounds):                          # alternate, so load changes hit both
        t_ours.append(time_steps(our_step, batches, args.device))
        t_dense.append(time_steps(dense_step, batches, args.device))
    med = lambda v: sorted(v)[len(v) // 2]
    n = args.batch * args.steps
    print(f"circuitsviz step : {n / med(t_ours):9.0f} samples/s  ({med(t_ours) / args.steps * 1e3:.0f} ms/step)")
    print(f"dense reference  : {n / med(t_dense):9.0f} samples/s  ({med(t_dense) / args.steps * 1e3:.0f} ms/step)")
    print(f"speed-up         : {med(t_dense) / med(t_ours):.2f}x  (target >= 1.5x on CPU)")

    if args.fit_steps <= 0:
        return
    # The truth's seed must differ from the SAE's (fit_sae draws its initial decoder from a
    # generator seeded 0, same width): with seed 0 the planted directions *are* its first rows,
    # and MMCS reads ~1.0 before any training. peers_sae.py plants with seed 1 too.
    x, truth = synthetic(d, n_true=4 * d, active=k, samples=args.fit_steps * args.batch // 2 + 20000,
                         seed=TRUTH_SEED, device=args.device)
    t = time.perf_counter()
    sae = fit_sae(None, x, "synthetic", expansion=f // d, k=k, steps=args.fit_steps, batch_size=args.batch,
                  progress=False)
    w = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    mmcs = float((truth @ w.T).max(1).values.mean())
    m = sae.metrics
    print(f"fit on synthetic ground truth ({len(x)} samples of {truth.shape[0]} planted directions drawn with "
          f"seed {TRUTH_SEED}, the SAE's init with seed 0, "
          f"{args.fit_steps} steps x {args.batch}, {time.perf_counter() - t:.0f} s): "
          f"held-out FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, MMCS {mmcs:.3f}")


if __name__ == "__main__":
    main()
