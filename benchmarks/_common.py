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
