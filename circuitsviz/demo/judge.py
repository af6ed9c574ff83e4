"""The judge: an independent classifier of the procedural concepts, to label rendered images.

Feature visualizations of the demo model are scored by asking a *different* network what they
show. The judge shares nothing with the demo model but the task: a plain conv stack (conv,
batch norm, ReLU, max pool; no narrow layer, no Inception branches), its own initialisation, and
training images from its own procedural seed (:data:`JUDGE_SEED`, which neither the demo model,
the study, nor the held-out sets use). It trains on the CPU in a few minutes with the demo
model's recipe (:func:`circuitsviz.demo.train.train`), and records its held-out accuracy on
``ConceptDataset(seed=HELDOUT_SEED)`` in ``judge.pt.json``.

>>> judge = load_judge()                                  # weights/judge.pt   # doctest: +SKIP
>>> judge.labels[int(judge(images).argmax(1)[0])]         # images in [0, 1]  # doctest: +SKIP
'star'

Remake it with ``python -m circuitsviz.demo.judge --out weights/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from ..data.procedural import CONCEPTS, DATASET_VERSION, ConceptDataset
from ..errors import WeightsError
from ..models.weights import default_weights_dir, sha256_of
from ..models.wrapper import LayerInfo, VisionModel
from .model import INPUT_SCALE, INPUT_SHIFT, INPUT_SIZE

JUDGE_FILE = "judge.pt"
JUDGE_SEED = 20_000
JUDGE_TRAINER_VERSION = 1
# (out channels, kernel, stride) per conv; each conv is followed by batch norm, ReLU and, but for
# the last, a 2x2 max pool: 64 px -> 32 -> 16 -> 8 -> 4, then global average pooling.
CONVS = ((24, 5, 2), (48, 3, 1), (96, 3, 1), (128, 3, 1))


class JudgeNet(nn.Module):
    """A plain conv net for 64 px images in the model's input space; returns logits."""

    def __init__(self, num_classes: int = len(CONCEPTS)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, (cout, k, stride) in enumerate(CONVS):
            layers += [nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU()]
            if i < len(CONVS) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logits = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pool(self.features(x)).flatten(1))


def build_judge(seed: int = JUDGE_SEED) -> VisionModel:
    """A freshly initialised judge, seeded from its own generator (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = JudgeNet()
    return VisionModel(net, name="judge", layers=[LayerInfo("logits", "logits", len(CONCEPTS))],
                       input_size=INPUT_SIZE, input_scale=INPUT_SCALE, input_shift=INPUT_SHIFT,
                       labels=list(CONCEPTS))


def judge_record(folder: str | Path | None = None) -> dict | None:
    path = Path(folder or default_weights_dir()) / f"{JUDGE_FILE}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_judge(path: str | Path | None = None, device: str | torch.device | None = None) -> VisionModel:
    """The shipped judge (``weights/judge.pt``), checked against its record's SHA-256, in eval mode."""
    path = Path(path) if path is not None else default_weights_dir() / JUDGE_FILE
    if not path.is_file():
        raise WeightsError(f"no judge weights at {path}; train them: python -m circuitsviz.demo.judge --out weights/")
    record = judge_record(path.parent) or {}
    if record.get("sha256") and record["sha256"] != sha256_of(path):
        raise WeightsError(f"{path} does not match the SHA-256 in {path.name}.json; retrain or restore it")
    model = build_judge()
    model.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device or "cpu").eval()


@torch.no_grad()
def judge_labels(judge: VisionModel, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's label and its softmax probability for each of ``images`` (N x 3 x 64 x 64 in [0, 1])."""
    labels, probs = [], []
    for i in range(0, len(images), batch_size):
        p = judge(images[i:i + batch_size].to(judge.device)).softmax(1).cpu()
        conf, lab = p.max(1)
        labels.append(lab)
        probs.append(conf)
    return torch.cat(labels), torch.cat(probs)


def main(argv: list[str] | None = None) -> int:
    from .train import HELDOUT_N, HELDOUT_SEED, evaluate, train

    p = argparse.ArgumentParser(prog="python -m circuitsviz.demo.judge",
                                description="Train the judge classifier on the procedural concepts and write "
                                f"{JUDGE_FILE} plus its JSON record.",
                                epilog="example: python -m circuitsviz.demo.judge --out weights/")
    p.add_argument("--out", default="weights", help="folder for the weights and JSON (default: %(default)s)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=JUDGE_SEED, help="training and data seed (default: %(default)s)")
    p.add_argument("--pool", type=int, default=12_000, help="training images rendered once and cycled (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    args = p.parse_args(argv)
    model, metrics = train(args.steps, args.seed, batch_size=args.batch_size, pool=args.pool, lr=args.lr,
                           progress=True, build=build_judge)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / JUDGE_FILE
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}, path)
    heldout = ConceptDataset(n=HELDOUT_N, seed=HELDOUT_SEED, size=INPUT_SIZE)
    record = {
        "model": "judge",
        "heldout": {"dataset": heldout.spec(), "indices": f"0..{HELDOUT_N - 1}", "accuracy": evaluate(model, heldout)},
        "seed": args.seed,
        "train": {"dataset_seed": args.seed, "steps": args.steps, "seconds": round(metrics.seconds, 1),
                  "final_loss": metrics.losses[-1], "pool": args.pool, "batch_size": args.batch_size, "lr": args.lr},
        "architecture": {"class": "circuitsviz.demo.judge.JudgeNet", "input_size": INPUT_SIZE,
                         "input": f"x * {INPUT_SCALE} + ({INPUT_SHIFT})",
                         "convs": [list(c) for c in CONVS],
                         "layout": "each conv: batch norm, ReLU, 2x2 max pool (not after the last); "
                                   "global average pool; linear", "classes": list(CONCEPTS)},
        "dataset_version": DATASET_VERSION,
        "trainer_version": JUDGE_TRAINER_VERSION,
        "torch": torch.__version__,
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
    }
    (out / f"{JUDGE_FILE}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path} ({record['size'] / 1024:.0f} KB) in {metrics.seconds:.0f} s; "
          f"held-out accuracy {record['heldout']['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
