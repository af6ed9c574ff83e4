"""``circuitsviz visualize``: render channels of one layer into a run directory."""

from __future__ import annotations

import argparse

from ..units import parse_channels
from .common import add_model_args, model_from_args

EPILOG = """\
examples:
  circuitsviz visualize --model inceptionv1 --layer mixed4e --channels 55,56,60-70 --out runs/cat
  circuitsviz visualize --layer mixed3b --channels '*' --steps 256 --out runs/mixed3b
  circuitsviz visualize --layer mixed4e --channels 55 --negative --diversity 100 --out runs/cat
  circuitsviz visualize --no-pretrained --layer mixed3b --channels 0-7 --size 64 --steps 32 --out runs/try

Images go into the run's store (one PNG per image plus its objective and settings); open them
with `circuitsviz serve RUN`. The same --seed and settings give the same images on one device.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize", help="render feature visualizations of channels (Lucid's method, batched)",
        description="Render the image each channel most wants to see, with Lucid's defaults: "
        "decorrelated FFT parameterization, standard transforms, Adam lr 0.05, 512 steps, "
        "redirected ReLU for the first 16 steps. Many channels share one optimisation, and the "
        "forward pass stops at the layer.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("--layer", required=True, help="layer name, e.g. mixed4e (see `circuitsviz layers`)")
    p.add_argument("--channels", default="*", help="channels: '55,56,60-70' or '*' for all (default: all)")
    p.add_argument("--neuron", action="store_true", help="render the centre neuron instead of the whole channel")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: %(default)s)")
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
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (created if missing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..optvis import channel, neuron, visualize

    model = model_from_args(args)
    layer = args.layer
    channels = parse_channels(args.channels, model.channels(layer))
    for c in channels:
        model.check_channel(layer, c)
    objectives = [neuron(layer, c) if args.neuron else channel(layer, c) for c in channels]
    results = visualize(
        model, objectives, size=args.size, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        param=args.param, transforms=None if args.no_transforms else "standard", lr=args.lr,
        negative=args.negative, diversity=args.diversity, images_per_unit=args.images,
        progress=not args.quiet, upsample=args.upsample,
    )
    unit_ids = [f"{layer}:{c}" for c in channels]
    by_name = dict(zip([o.unit or o.name for o in objectives], unit_ids))
    path = save_results(args.out, model, layer, [(by_name[r.unit], r) for r in results])
    print(f"wrote {len(results)} images for {len(channels)} channels of {layer} to {path}")
    return 0


def save_results(out: str, model, layer: str, items) -> str:
    """Write ``(unit_id, VisResult)`` pairs into the run store at ``out``."""
    from ..store import open_run

    run = open_run(out, create=True)
    run.set_info(model=model.name, weights_sha256=model.weights_sha256, input_size=model.input_size,
                 settings={"visualize": items[0][1].settings} if items else {})
    info = model.layer(layer)
    shape = model.layer_shapes([layer])[layer]
    run.put_layer(layer, shape[0], *(shape[1:] if len(shape) == 3 else (None, None)),
                  branches=[(b.name, b.start, b.stop) for b in info.branches])
    units = {uid: int(uid.rsplit(":", 1)[1]) for uid, _ in items}
    run.add_units([{"id": uid, "layer": layer, "index": idx, "kind": "channel"} for uid, idx in units.items()])
    for uid, r in items:
        run.put_visualization(uid, r.image, kind=r.kind, index=r.index, objective=r.objective, settings=r.settings)
    return str(out)
