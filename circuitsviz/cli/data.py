"""``circuitsviz data``: the procedural concept dataset on disk (``export``) or at a glance (``preview``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="export the procedural concept dataset as an image folder, or preview it",
        description="The procedural concept dataset: labelled 64 px images of known concepts "
        "(face, car, wheel, rings, gratings, ...). Image i depends only on (seed, i).",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    ex = dsub.add_parser(
        "export", help="write N images as DIR/<concept>/<i>.png",
        description="Write the procedural dataset as an ImageFolder tree, DIR/<concept>/<i>.png, "
        "which you can browse and which `--data DIR` reads like any image folder.",
        epilog="example: circuitsviz data export --n 2000 --out concepts/",
    )
    _add_dataset_args(ex)
    ex.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    ex.set_defaults(func=run_export)
    pv = dsub.add_parser(
        "preview", help="write one PNG sheet: a row of examples per concept, named on its left",
        description="Render a contact sheet with one row per concept, the concept's name on its left, "
        "to see what the dataset holds.",
        epilog="example: circuitsviz data preview --out concepts.png --per-concept 8",
    )
    _add_dataset_args(pv, n_default=None)
    pv.add_argument("--out", required=True, metavar="FILE.png", help="where to write the sheet")
    pv.add_argument("--per-concept", type=int, default=8, help="examples per row (default: %(default)s)")
    pv.set_defaults(func=run_preview)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_dataset_args(p: argparse.ArgumentParser, n_default: int | None = 2000) -> None:
    if n_default is not None:
        p.add_argument("--n", type=int, default=n_default, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")


def run_export(args: argparse.Namespace) -> int:
    from ..data.procedural import export

    out = export(args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"wrote {args.n} images to {out}/<concept>/<i>.png")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from ..data.procedural import save_preview_sheet

    save_preview_sheet(args.out, per_concept=args.per_concept, seed=args.seed, size=args.size)
    print(f"wrote {args.out}")
    return 0
