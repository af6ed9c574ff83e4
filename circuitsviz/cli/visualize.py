"""``circuitsviz visualize``: render channels, neurons or SAE features into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BadInputError
from ..units import Unit, parse_channels
from .common import add_model_args, add_run_args, model_from_args, split_list

EPILOG = """\
examples:
  circuitsviz visualize --model inceptionv1 --layer mixed4e --channels 55,56,60-70 --out runs/cat
  circuitsviz visualize --layer mixed3b --channels '*' --steps 256 --out runs/mixed3b
  circuitsviz visualize --layer mixed4e --channels 55 --negative --diversity 100 --out runs/cat
  circuitsviz visualize --model demo --units mixed3b/topk8x_k1:17,mixed3b:4 --out runs/demo --png pngs/
  circuitsviz visualize --no-pretrained --layer mixed3b --channels 0-7 --size 64 --steps 32 --out runs/try

Images go into the run's store (one PNG per image plus its objective and settings); open them
with `circuitsviz serve RUN`. SAE features (layer/sae:i) are rendered along their decoder
direction; the run's index says where the SAE is. The same --seed and settings give the same
images on one device. Finished batches are kept: interrupted, the same command renders only
what is missing; other settings for units the run already holds stop before any work unless
--overwrite.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize", help="render feature visualizations of channels or SAE features (Lucid's method, batched)",
        description="Render the image each channel most wants to see, with Lucid's defaults: "
        "decorrelated FFT parameterization, standard transforms, Adam lr 0.05, 512 steps, "
        "redirected ReLU for the first 16 steps. Many channels share one optimisation, and the "
        "forward pass stops at the layer.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("--layer", help="layer name, e.g. mixed4e (see `circuitsviz layers`)")
    p.add_argument("--channels", default="*", help="channels of --layer: '55,56,60-70' or '*' for all (default: all)")
    p.add_argument("--units", help="unit ids instead of --layer/--channels, e.g. mixed4e:55,mixed3b/topk8x_k1:17")
    p.add_argument("--neuron", action="store_true", help="render the centre neuron instead of the whole channel")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input size)")
    p.add_argument("--steps", type=int, default=512, help="optimisation steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="images per optimisation (default: fit memory)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--param", choices=["fft", "pixel"], default="fft", help="parameterization (default: %(default)s)")
    p.add_argument("--no-transforms", action="store_true", help="turn off the standard transforms (ablation)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--negative", action="store_true", help="minimise the channel instead")
    p.add_argument("--diversity", type=float, default=0.0, metavar="W",
                   help="render --images per channel with diversity weight W (Lucid uses 1e2-1e3)")
    p.add_argument("--images", type=int, default=None, help="images per channel with --diversity (default: 4)")
    p.add_argument("--upsample", action="store_true",
                   help="upsample small images to the model's input size, as lucent does")
    p.add_argument("--png", metavar="DIR", help="also copy each image to DIR/<unit>.png (mixed3b~topk8x_k1_17.png) and tile them all, "
                   "captioned with their unit ids, in DIR/contact.png")
    add_run_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _units(args: argparse.Namespace, model) -> list[Unit]:
    if args.units:
        units = [Unit.parse(u) for u in split_list(args.units)]
    elif args.layer:
        units = [Unit(args.layer, c) for c in parse_channels(args.channels, model.channels(args.layer))]
    else:
        raise BadInputError("give --layer (with --channels) or --units; see `circuitsviz layers` for layer names")
    for u in units:
        model.layer(u.layer)
        if u.sae is None:
            model.check_channel(u.layer, u.index)
    if args.neuron:
        units = [u if u.sae else Unit(u.layer, u.index, pos=_centre(model, u.layer)) for u in units]
    return units


def _centre(model, layer: str) -> tuple[int, int]:
    shape = model.layer_shapes([layer])[layer]
    return shape[1] // 2, shape[2] // 2


def run(args: argparse.Namespace) -> int:
    from ..store import open_run

    model = model_from_args(args)
    units = _units(args, model)
    run = open_run(args.out, create=True)
    n = run.visualize(model, [u.id for u in units], size=args.size or model.input_size, steps=args.steps,
                      batch_size=args.batch_size, seed=args.seed, param=args.param, lr=args.lr,
                      transforms=None if args.no_transforms else "standard", negative=args.negative,
                      diversity=args.diversity, images_per_unit=args.images, upsample=args.upsample,
                      progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {n} images of {len(units)} units to {args.out}"
          + ("" if n else " (all were in the run already with these settings)"))
    if args.png:
        _copy_pngs(run, units, Path(args.png))
    return 0


def _copy_pngs(run, units: list[Unit], folder: Path) -> None:
    """Each image as DIR/<unit>.png, and all of them on one captioned sheet, DIR/contact.png."""
    import shutil

    import numpy as np
    from PIL import Image

    from ..optvis import VisResult, save_grid

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot create the --png folder {str(folder)!r}: {e.strerror or e}") from None
    sheet = []
    for u in units:
        for v in run.visualizations(u.id):
            name = u.id.replace("/", "~").replace(":", "_").replace("@", "_at_").replace(",", "_")
            shutil.copyfile(v.path, folder / f"{name}{'' if v.kind == 'positive' else '-' + v.kind}"
                                             f"{'-' + str(v.index) if v.index else ''}.png")
            with Image.open(v.path) as im:
                image = np.asarray(im.convert("RGB"))
            sheet.append(VisResult(v.unit_id, image, float("nan") if v.objective is None else v.objective,
                                   v.settings, kind=v.kind, index=v.index))
    if sheet:
        save_grid(sheet, folder / CONTACT_SHEET)
    print(f"copied {len(sheet)} PNGs to {folder}/" + (f" and tiled them in {folder / CONTACT_SHEET}" if sheet else ""))


CONTACT_SHEET = "contact.png"  # every --png image on one sheet, captioned with its unit id
