"""``circuitsviz merge``: combine mining shards into one result, written into a run."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_run_args

    p = sub.add_parser(
        "merge", help="merge `circuitsviz mine --shard` results into one run",
        description="Merge the shard files written by `circuitsviz mine --shard I/N` into exactly the result "
        "a single run over the whole dataset gives, and write it into the run OUT. Nothing is recomputed.",
        epilog="example:\n  circuitsviz merge runs/cat/mining/mixed4e-*-of-4.npz --out runs/cat",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shards", nargs="+", metavar="SHARD", help="shard files (OUT/mining/LAYERS-HASH.I-of-N.npz)")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..mining import MiningResult, merge
    from ..store import open_run

    result = merge([MiningResult.load(p) for p in args.shards])
    if result.config.get("transform") is not None:
        from ..errors import BadInputError

        raise BadInputError("these shards mined SAE features; merging those into a run is not supported yet: "
                            "mine them unsharded (`circuitsviz mine --layers LAYER/SAE`)")
    path = Path(re.sub(r"\.\d+-of-\d+\.npz$", ".npz", str(args.shards[0])))
    result.save(path)
    print(result.report())
    print(f"merged {len(args.shards)} shards into {path}")
    units = open_run(args.out, create=True).add_mining(result, overwrite=args.overwrite)
    print(f"wrote examples and statistics of {units} units to {args.out}")
    return 0
