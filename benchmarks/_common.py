"""What the benchmark scripts share: the process allocator setting the ``circuitsviz`` command applies."""

from __future__ import annotations

import argparse

from circuitsviz.runtime import retain_freed_memory


def add_retain_memory_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--no-retain-memory", action="store_true",
                    help="leave glibc malloc at its defaults instead of applying circuitsviz.retain_freed_memory() "
                         "(what the circuitsviz command does) to this process, for both sides of the comparison")


def apply_retain_memory(args: argparse.Namespace) -> bool:
    """Apply the setting unless ``--no-retain-memory``; True if it took effect."""
    return False if args.no_retain_memory else retain_freed_memory()


def missing_peer(module: str, name: str | None = None) -> bool:
    """True (after a one-line note) if a peer library is not installed: ``pip install -e '.[bench]'``."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return False
    print(f"skipping {name or module}: not installed (pip install -e '.[bench]')")
    return True


def sync(device) -> None:
    """Wait for queued CUDA work, so wall-clock times cover it."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
