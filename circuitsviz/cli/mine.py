"""``circuitsviz mine``: dataset examples and statistics for every unit of some layers."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  circuitsviz mine --model inceptionv1 --data ~/imagenet/val --layers mixed4e,mixed3b --out runs/cat
  circuitsviz mine --model demo --data procedural --layers mixed4e --k 16 --out runs/demo

on several machines (any scheduler; each command is independent):
  circuitsviz mine ... --shard 0/4 --out runs/cat      # ... up to --shard 3/4
  circuitsviz merge runs/cat/mining/shard-*-of-4.npz --out runs/cat

Shards are contiguous runs of whole batches, so give every shard the same --batch-size.
Interrupted? Run the same command again: it resumes from OUT/mining/*.npz (checkpointed
every --checkpoint-every images) and ends with exactly the uninterrupted result.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_model_args

    p = sub.add_parser(
        "mine", help="find each unit's top-k dataset examples, positions and activation statistics",
        description="Stream a dataset once and keep, for every channel of the given layers, the k images "
        "that excite it most (with the position of the maximum), activation statistics, a histogram, "
        "quantile-binned examples and, for labelled data, polysemanticity scores. Writes into the run OUT.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("--data", required=True, help="a folder of images (class subfolders become labels) or 'procedural'")
    p.add_argument("--layers", required=True, help="comma-separated layer names, e.g. mixed4e,mixed3b")
    p.add_argument("--k", type=int, default=32, help="examples kept per unit (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write into, e.g. runs/NAME")
    p.add_argument("--shard", default=None, metavar="I/N", help="mine only shard I of N (then `circuitsviz merge`)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers for decoding (default: %(default)s)")
    p.add_argument("--mean-top-k", action="store_true", help="also rank images by the spatial mean activation")
    p.add_argument("--hist-bins", type=int, default=64, help="histogram bins per unit (default: %(default)s)")
    p.add_argument("--hist-range", default=None, metavar="LO,HI",
                   help="fixed histogram range for every unit (default: per unit, from the first 64 images)")
    p.add_argument("--checkpoint-every", type=int, default=2048, metavar="N", help="checkpoint every N images")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start afresh")
    p.add_argument("--n", type=int, default=2000, help="images in the procedural dataset (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def result_path(out: str | Path, shard: tuple[int, int] | None) -> Path:
    """Where a (shard) result lives inside a run directory."""
    name = f"shard-{shard[0]}-of-{shard[1]}.npz" if shard else "result.npz"
    return Path(out) / "mining" / name


def run(args: argparse.Namespace) -> int:
    from ..data import as_dataset
    from ..errors import BadInputError
    from ..mining import mine, parse_shard
    from .common import model_from_args

    shard = parse_shard(args.shard)
    hist_range = None
    if args.hist_range:
        try:
            lo, hi = (float(v) for v in args.hist_range.split(","))
        except ValueError:
            raise BadInputError(f"--hist-range {args.hist_range!r} must be LO,HI, e.g. 0,20") from None
        hist_range = (lo, hi)
    model = model_from_args(args)
    dataset = as_dataset(args.data, model, n=args.n)
    path = result_path(args.out, shard)
    result = mine(
        model, dataset, [s.strip() for s in args.layers.split(",") if s.strip()], k=args.k,
        batch_size=args.batch_size, num_workers=args.num_workers, shard=shard, checkpoint=path,
        checkpoint_every=args.checkpoint_every, restart=args.restart, progress=args.progress,
        mean_top_k=args.mean_top_k, hist_bins=args.hist_bins, hist_range=hist_range,
    )
    print(result.report())
    if shard:
        print(f"saved shard {shard[0]}/{shard[1]} to {path}; merge all shards with `circuitsviz merge`")
        return 0
    return publish(result, args.out, dataset, model)


def publish(result, out: str | Path, dataset, model=None) -> int:
    """Write a whole-dataset result into the run's store (or leave it saved if there is no store).

    Without ``model``, its name, weights hash and input size come from the result's configuration
    and branch ranges from the zoo's layer table.
    """
    try:
        from ..store import open_run
    except ImportError:
        print(f"result saved to {result_path(out, None)} (the store is not available to write into)")
        return 0
    from ..mining import write_to_run

    config = result.config
    if model is None:
        model = _TableOnly(config["model"])
    run = open_run(out, create=True)
    run.set_info(model=config["model"], weights_sha256=getattr(model, "weights_sha256", None) or config["weights"],
                 input_size=config["input_size"], settings={"mining": {k: v for k, v in config.items() if k != "data"}})
    if dataset is not None and hasattr(dataset, "spec"):
        run.set_data_source(dataset.spec(), classes=getattr(dataset, "classes", None))
    units = write_to_run(result, run, dataset, model=model)
    print(f"wrote examples and statistics of {units} units to {out}")
    return 0


class _TableOnly:
    """Branch ranges from the zoo's layer table, without building or loading the model."""

    def __init__(self, name: str) -> None:
        from ..models import ZOO, zoo_entry

        self._table = {i.name: i for i in zoo_entry(name).layers()} if name in ZOO else {}

    def layer(self, name: str):
        from ..models import LayerInfo

        return self._table.get(name, LayerInfo(name, name))
