"""The ``circuitsviz`` command. Each subcommand lives in its own module and wraps one public function.

A subcommand module defines ``register(subparsers)``; it adds its parser and sets
``func=run`` where ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CircuitsvizError
from ..runtime import retain_freed_memory

# Order is the order `circuitsviz --help` lists them in.
SUBCOMMANDS = ["layers", "visualize", "mine", "merge", "sae", "circuit", "serve", "data", "study", "verify"]

EPILOG = """\
typical session:
  circuitsviz layers --model inceptionv1 --no-pretrained
  circuitsviz visualize --model inceptionv1 --layer mixed4e --channels 55 --out runs/cat
  circuitsviz mine --model inceptionv1 --data ~/imagenet/val --layers mixed4e --out runs/cat
  circuitsviz fit-sae --model inceptionv1 --data ~/imagenet/val --layer mixed4e --out runs/cat
  circuitsviz split --run runs/cat --channel mixed4e:55
  circuitsviz visualize --model inceptionv1 --units mixed4e/topk8x_k32:17 --out runs/cat
  circuitsviz serve runs/cat

Every command writes into the run through the publishing API (circuitsviz/store/SPEC.md) and
remembers the settings of each step: other settings stop before any work unless --overwrite.

or all of it at once:  circuitsviz study --model demo --data procedural --out runs/demo
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuitsviz",
        description="Mechanistic interpretability for vision models: feature visualization, "
        "dataset examples, sparse autoencoders and a viewer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    retain_freed_memory()  # this process is ours: reuse big CPU buffers across steps (see runtime.py)
    try:
        return int(args.func(args) or 0)
    except CircuitsvizError as e:
        print(f"circuitsviz {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"circuitsviz {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
