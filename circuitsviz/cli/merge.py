"""``circuitsviz merge``: combine mining shards into one result, written into a run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge", help="merge `circuitsviz mine --shard` results into one run",
        description="Merge the shard files written by `circuitsviz mine --shard I/N` into exactly the result "
        "a single run over the whole dataset gives, and write it into the run OUT. Nothing is recomputed.",
        epilog="example:\n  circuitsviz merge runs/cat/mining/shard-*-of-4.npz --out runs/cat",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shards", nargs="+", metavar="SHARD", help="shard files (OUT/mining/shard-I-of-N.npz)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write into")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import open_source
    from ..mining import MiningResult, merge
    from .mine import publish, result_path

    result = merge([MiningResult.load(p) for p in args.shards])
    path = result_path(args.out, None)
    result.save(path)
    print(result.report())
    print(f"merged {len(args.shards)} shards into {path}")
    spec = result.config.get("data", {})
    dataset = open_source(spec) if spec.get("kind") in ("folder", "procedural") else None
    return publish(result, args.out, dataset)
