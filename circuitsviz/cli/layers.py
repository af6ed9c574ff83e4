"""``circuitsviz layers``: the layer table of a model."""

from __future__ import annotations

import argparse

from ..models import list_layers
from .common import add_model_args, model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "layers", help="list a model's layers with channels, spatial size and branch ranges",
        description="List a model's named layers. For InceptionV1, mixed layers also show which "
        "branch owns which channel range: mixed4e:55 lies in the 1x1 branch (channels 0-255).",
        epilog="example: circuitsviz layers --model inceptionv1 --no-pretrained --all",
    )
    add_model_args(p)
    p.add_argument("--input-size", type=int, default=None, help="input size for spatial dims (default: the model's)")
    p.add_argument("--all", action="store_true", help="include branch and *_pre_relu layers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    rows = list_layers(model, args.input_size)
    if not args.all and model.name in ("inceptionv1", "demo"):
        rows = [r for r in rows if "_" not in r.name or r.name.startswith("softmax2_pre")]
    width = max(len(r.name) for r in rows)
    print(f"{'layer':<{width}}  {'channels':>8}  {'size':>7}  branches")
    for r in rows:
        size = f"{r.height}x{r.width}" if r.height else "-"
        br = "  ".join(f"{b.name}:{b.start}-{b.stop - 1}" for b in r.branches)
        print(f"{r.name:<{width}}  {r.channels:>8}  {size:>7}  {br}")
    return 0
