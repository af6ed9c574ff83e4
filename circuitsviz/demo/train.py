"""Train the demo model on the procedural concepts: ``python -m circuitsviz.demo.train --out weights/``.

Seeded end to end (dataset seed, init, batch order), CPU-friendly (a few minutes on 2 cores).
Training images come from ``ConceptDataset(seed=train seed)``; accuracy is measured on a fixed
held-out sample ``ConceptDataset(n=HELDOUT_N, seed=HELDOUT_SEED)``, a seed training never uses.
Writes ``demo.pt`` (a plain state dict, loadable with ``torch.load(weights_only=True)``) and
``demo.pt.json``: accuracy, seed, architecture, dataset and trainer versions, the file's size and
SHA-256, and the superposition layer's per-channel firing rates and concept counts.

>>> model, metrics = train(steps=50, pool=1000)      # a quick, worse model   # doctest: +SKIP
>>> metrics.losses[0] > metrics.losses[-1]                                     # doctest: +SKIP
True
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.loader import iterate_batches
from ..data.procedural import CONCEPTS, DATASET_VERSION, ConceptDataset
from ..errors import BadInputError
from ..models.weights import sha256_of
from ..models.wrapper import VisionModel
from .model import INPUT_SCALE, INPUT_SHIFT, INPUT_SIZE, MIXED, STEM, SUPERPOSITION_LAYER, WEIGHTS_FILE, DemoNet, layer_table

# Bump when the recipe below changes what a given seed produces.
TRAINER_VERSION = 1
HELDOUT_SEED = 10_000
HELDOUT_N = 5000
FIRING_FLOOR = 0.01  # a channel that fires on fewer images than this is dead


@dataclass
class TrainMetrics:
    """What one training run did: the loss curve (one value per logged step) and its timing."""

    steps: int
    seed: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ChannelProfile:
    """How each channel of a layer responds to the labelled concepts (image level: max over space).

    ``label_means[c][k]`` is channel c's mean image-level activation over images of concept k;
    a channel's concept count is how many concepts reach half of its best concept's mean.
    """

    layer: str
    firing: list[float]            # per channel: fraction of images where it is > 0 somewhere
    concept_counts: list[int]
    label_means: list[list[float]]

    @property
    def dead(self) -> list[int]:
        return [c for c, f in enumerate(self.firing) if f < FIRING_FLOOR]

    @property
    def mean_concept_count(self) -> float:
        return sum(self.concept_counts) / len(self.concept_counts)


def build_model(seed: int = 0) -> VisionModel:
    """A freshly initialised demo model (seeded), wrapped like the zoo wraps the trained one."""
    with torch.random.fork_rng(devices=[]):  # nn layers draw their default init from the global RNG
        net = DemoNet(num_classes=len(CONCEPTS))
    gen = torch.Generator().manual_seed(seed)  # our own generator: torch's global RNG is never touched
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=gen)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01, generator=gen)
            nn.init.zeros_(m.bias)
    return VisionModel(net, name="demo", layers=layer_table(), input_size=INPUT_SIZE,
                       input_scale=INPUT_SCALE, input_shift=INPUT_SHIFT, labels=list(CONCEPTS))


def render_pool(n: int, seed: int, size: int = INPUT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``n`` images of ``ConceptDataset(seed=seed)`` once, kept as uint8 (12 KB each at 64 px)."""
    ds = ConceptDataset(n=n, seed=seed, size=size)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        pil = ds.load_image(str(i))
        images[i] = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        labels[i] = ds.label(i)
    return images, labels


def train(steps: int = 800, seed: int = 0, *, batch_size: int = 64, pool: int = 12_000, lr: float = 5e-3,
          log_every: int = 10, progress: bool = False,
          build: Callable[[int], VisionModel] | None = None) -> tuple[VisionModel, TrainMetrics]:
    """Train a demo model from scratch; return it (eval mode) and its loss curve.

    Batches cycle through a pool of ``pool`` images of ``ConceptDataset(seed=seed)``, reshuffled
    each pass by a generator seeded with ``seed``. Adam with a one-cycle learning rate schedule.
    ``build(seed)`` makes the untrained model (default :func:`build_model`; the judge passes its own).
    """
    if seed == HELDOUT_SEED:
        raise BadInputError(f"seed {seed} is the held-out seed; train with any other")
    if steps < 1 or pool < batch_size:
        raise BadInputError(f"need steps >= 1 and pool >= batch_size, got steps={steps}, pool={pool}")
    start = time.perf_counter()
    images, labels = render_pool(pool, seed)
    model = (build or build_model)(seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(pool, generator=gen)
    pos, running = 0, None
    metrics = TrainMetrics(steps=steps, seed=seed)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps):
        if pos + batch_size > pool:
            order, pos = torch.randperm(pool, generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x = images[idx].float().div_(255)
        loss = loss_fn(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % log_every == 0 or step == steps - 1:
            metrics.losses.append(loss.item())
            if progress and (step % (log_every * 10) == 0 or step == steps - 1):
                print(f"step {step:5d}/{steps}  loss {running:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    metrics.seconds = time.perf_counter() - start
    return model.eval(), metrics


@torch.no_grad()
def evaluate(model: VisionModel, dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on a labelled dataset."""
    correct = total = 0
    for batch in iterate_batches(dataset, batch_size=batch_size):
        correct += int((model(batch.images.to(model.device)).argmax(1).cpu() == batch.labels).sum())
        total += len(batch.labels)
    return correct / total


@torch.no_grad()
def channel_profile(model: VisionModel, dataset, layer: str = SUPERPOSITION_LAYER, batch_size: int = 256) -> ChannelProfile:
    """Firing rate and concept count of every channel of ``layer`` over a labelled dataset."""
    maxes, labels = [], []
    for batch in iterate_batches(dataset, batch_size=batch_size):
        act = model.activations(batch.images, layer)[layer]
        maxes.append(act.flatten(2).amax(2).cpu())
        labels.append(batch.labels)
    m, y = torch.cat(maxes), torch.cat(labels)
    k = len(dataset.classes)
    means = torch.stack([m[y == j].mean(0) for j in range(k)], 1)  # channels x concepts
    counts = (means >= 0.5 * means.amax(1, keepdim=True)).sum(1)
    counts = torch.where(means.amax(1) > 0, counts, torch.zeros_like(counts))  # a dead channel has none
    return ChannelProfile(layer, (m > 0).float().mean(0).tolist(), counts.tolist(), means.tolist())


def architecture() -> dict:
    return {"class": "circuitsviz.demo.model.DemoNet", "input_size": INPUT_SIZE,
            "input": f"x * {INPUT_SCALE} + ({INPUT_SHIFT})", "stem": STEM, "mixed": MIXED,
            "mixed_columns": "in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce",
            "norm": "batch norm before every ReLU", "head": "avgpool0 -> softmax2_pre_activation_matmul (logits)",
            "superposition_layer": SUPERPOSITION_LAYER, "classes": list(CONCEPTS)}


def save(model: VisionModel, metrics: TrainMetrics, out_dir: str | Path, *, heldout_n: int = HELDOUT_N,
         settings: dict | None = None) -> Path:
    """Write ``demo.pt`` and its JSON record into ``out_dir``; return the weights path."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / WEIGHTS_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}, tmp)
    tmp.replace(path)
    heldout = ConceptDataset(n=heldout_n, seed=HELDOUT_SEED, size=INPUT_SIZE)
    profile = channel_profile(model, heldout)
    record = {
        "model": "demo",
        "heldout": {"dataset": heldout.spec(), "indices": f"0..{heldout_n - 1}",
                    "accuracy": evaluate(model, heldout)},
        "seed": metrics.seed,
        "train": {"dataset_seed": metrics.seed, "steps": metrics.steps, "seconds": round(metrics.seconds, 1),
                  "final_loss": metrics.losses[-1], **(settings or {})},
        "architecture": architecture(),
        "dataset_version": DATASET_VERSION,
        "trainer_version": TRAINER_VERSION,
        "torch": torch.__version__,
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
        "superposition": {"layer": profile.layer, "firing": profile.firing,
                          "concept_counts": profile.concept_counts,
                          "mean_concept_count": profile.mean_concept_count, "dead": profile.dead},
    }
    (out / f"{WEIGHTS_FILE}.json").write_text(json.dumps(record, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m circuitsviz.demo.train",
        description="Train the bundled demo model on the procedural concept dataset and write "
        f"{WEIGHTS_FILE} plus its JSON record.",
        epilog="example: python -m circuitsviz.demo.train --out weights/",
    )
    p.add_argument("--out", default="weights", help="folder for the weights and JSON (default: %(default)s)")
    p.add_argument("--steps", type=int, default=800, help="optimizer steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help=f"training seed; not {HELDOUT_SEED}, the held-out seed (default: %(default)s)")
    p.add_argument("--pool", type=int, default=12_000, help="training images rendered once and cycled (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    args = p.parse_args(argv)
    model, metrics = train(args.steps, args.seed, batch_size=args.batch_size, pool=args.pool, lr=args.lr, progress=True)
    path = save(model, metrics, args.out, settings={"pool": args.pool, "batch_size": args.batch_size, "lr": args.lr})
    record = json.loads(path.with_name(path.name + ".json").read_text())
    sp = record["superposition"]
    print(f"wrote {path} ({record['size'] / 1024:.0f} KB) in {metrics.seconds:.0f} s; "
          f"held-out accuracy {record['heldout']['accuracy']:.4f}")
    print(f"{sp['layer']}: firing {[round(f, 3) for f in sp['firing']]}, concept counts {sp['concept_counts']} "
          f"(mean {sp['mean_concept_count']:.2f}), dead {sp['dead']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
