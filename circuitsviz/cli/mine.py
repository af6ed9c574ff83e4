"""``circuitsviz mine``: dataset examples and statistics for every unit of some layers (or SAEs)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  circuitsviz mine --model inceptionv1 --data ~/imagenet/val --layers mixed4e,mixed3b --out runs/cat
  circuitsviz mine --model demo --data procedural --layers mixed4e --k 16 --out runs/demo
  circuitsviz mine --model demo --data procedural --layers mixed3b/topk8x_k1 --out runs/demo   # SAE features

on several machines (any scheduler; each command is independent):
  circuitsviz mine ... --shard 0/4 --out runs/cat      # ... up to --shard 3/4
  circuitsviz merge runs/cat/mining/mixed4e-*-of-4.npz --out runs/cat

Each job checkpoints to its own file, OUT/mining/LAYERS-HASH.npz (every --checkpoint-every
images); interrupted, the same command resumes there and ends with exactly the uninterrupted
result. Layers the run already holds with these settings are skipped, so adding a layer is
a normal call. Shards are contiguous runs of whole batches: give every shard the same --batch-size.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_model_args, add_run_args

    p = sub.add_parser(
        "mine", help="find each unit's top-k dataset examples, positions and activation statistics",
        description="Stream a dataset once and keep, for every channel of the given layers, the k images "
        "that excite it most (with the position of the maximum), activation statistics, a histogram, "
        "quantile-binned examples and, for labelled data, polysemanticity scores. Writes into the run OUT.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("--data", required=True, help="a folder of images (class subfolders become labels) or 'procedural'")
    p.add_argument("--layers", required=True, help="comma-separated layers, e.g. mixed4e,mixed3b; LAYER/SAE mines "
                   "the features of an SAE the run holds")
    p.add_argument("--k", type=int, default=32, help="examples kept per unit (default: %(default)s)")
    add_run_args(p)
    p.add_argument("--shard", default=None, metavar="I/N", help="mine only shard I of N (then `circuitsviz merge`)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers for decoding (default: %(default)s)")
    p.add_argument("--mean-top-k", action="store_true", help="also rank images by the spatial mean activation")
    p.add_argument("--hist-bins", type=int, default=64, help="histogram bins per unit (default: %(default)s)")
    p.add_argument("--hist-range", default=None, metavar="LO,HI",
                   help="fixed histogram range for every unit (default: per unit, from the first 64 images)")
    p.add_argument("--checkpoint-every", type=int, default=2048, metavar="N", help="checkpoint every N images")
    p.add_argument("--restart", action="store_true", help="ignore this job's checkpoint and start afresh")
    p.add_argument("--n", type=int, default=2000, help="images in the procedural dataset (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def _hist_range(text: str | None) -> tuple[float, float] | None:
    from ..errors import BadInputError

    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise BadInputError(f"--hist-range {text!r} must be LO,HI, e.g. 0,20") from None
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from ..data import as_dataset
    from ..errors import BadInputError
    from ..mining import parse_shard
    from ..store import open_run
    from .common import model_from_args, split_list

    shard = parse_shard(args.shard)
    hist_range = _hist_range(args.hist_range)
    if args.k < 1 or args.batch_size < 1 or args.hist_bins < 1:
        raise BadInputError(f"--k, --batch-size and --hist-bins must be >= 1 (got {args.k}, {args.batch_size}, "
                            f"{args.hist_bins})")
    model = model_from_args(args)
    data = as_dataset(args.data, model, n=args.n, param="--data ")
    run = open_run(args.out, create=True)
    layers = split_list(args.layers)
    results = run.mine(model, data, layers, k=args.k, batch_size=args.batch_size,
                       num_workers=args.num_workers, shard=shard, checkpoint_every=args.checkpoint_every,
                       restart=args.restart, progress=args.progress, mean_top_k=args.mean_top_k,
                       hist_bins=args.hist_bins, hist_range=hist_range, overwrite=args.overwrite)
    mined = {name for r in results for name in r.layers}
    for name in layers:
        if name.partition("/")[0] not in mined:
            print(f"{name}: in the run already with these settings")
    for r in results:
        print(r.report())
        if shard:
            print(f"saved shard {shard[0]}/{shard[1]} of {', '.join(r.layers)} under {args.out}/mining/; "
                  "merge all shards with `circuitsviz merge`")
    if not shard and results:
        print(f"wrote examples and statistics of {sum(r.layers[n].units for r in results for n in r.layers)} "
              f"units to {args.out}")
    run.set_settings("mining", dict(k=args.k, mean_top_k=args.mean_top_k, hist_bins=args.hist_bins,
                                    hist_range=hist_range))
    return 0
