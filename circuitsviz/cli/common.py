"""Arguments shared by several subcommands, so they read and behave the same everywhere."""

from __future__ import annotations

import argparse

from ..models import ZOO, VisionModel, load_model


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="inceptionv1", metavar="NAME",
                   help=f"zoo model: {', '.join(ZOO)} (default: %(default)s)")
    g.add_argument("--weights", metavar="PATH", help="explicit weights file (default: look in the "
                   "weights folder, then download)")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="use random weights (for trying things out; nothing is downloaded)")
    g.add_argument("--device", default=None, help="torch device, e.g. cuda or cuda:1 (default: cuda if available, else cpu)")


def resolve_device(name: str | None) -> str:
    import torch

    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_from_args(args: argparse.Namespace) -> VisionModel:
    return load_model(args.model, pretrained=args.pretrained, weights=args.weights,
                      device=resolve_device(args.device))


def add_run_args(p: argparse.ArgumentParser, flag: str = "--out") -> None:
    """The run a command writes into, and the flag that lets it replace results made with other settings."""
    p.add_argument(flag, required=True, metavar="RUN", help="run directory to write into, e.g. runs/NAME (created if missing)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results the run holds for other settings (and what was made from them); "
                   "without it such a call stops before any work and names the changed setting")


def split_list(text: str | None) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]
