"""``circuitsviz verify RUN``: check a run directory without changing it (wraps ``Run.verify``)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check a run: its index, image records and PNGs (read-only)",
        description="Open a run read-only and list its problems, one per line: a damaged index, image "
        "hashes that are not 64 hex digits, missing PNGs, example image ids outside the data folder. "
        "Exits 0 when the run is consistent, 1 when it has problems, 2 when it cannot be opened.",
        epilog="example: circuitsviz verify runs/demo --source-images",
    )
    p.add_argument("run", help="the run directory")
    p.add_argument("--source-images", action="store_true",
                   help="also check that every example's image still exists in the data folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..store import open_run

    with open_run(args.run) as r:
        problems = r.verify(source_images=args.source_images)
    for line in problems:
        print(line)
    if problems:
        print(f"circuitsviz verify: {len(problems)} problem(s) in {args.run}", file=sys.stderr)
        return 1
    print(f"{args.run}: ok")
    return 0
