"""``circuitsviz study`` (the whole job) and ``circuitsviz demo`` (the study on the bundled model)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..study import StudySettings, check_settings, study
from ..units import parse_channels
from .common import add_model_args, add_run_args, model_from_args, resolve_device, split_list

STUDY_EPILOG = """\
examples:
  circuitsviz study --model demo --data procedural --out runs/demo
  circuitsviz study --model inceptionv1 --data ~/imagenet/val --layers mixed4e --channels 55 \\
      --vis-size 224 --vis-steps 512 --sae-k 32 --out runs/mixed4e-55      # the Circuits recipe; wants a GPU

A second run with the same --out reuses every finished step; a killed run resumes. Other
settings compute beside the old results where they have their own name (--sae-k, --layers);
otherwise (--vis-steps, --k, --sae-steps, --data-seed, ...) the study stops before any work and
names the changed setting: --overwrite replaces the old results and what was made from them.
"""


def _add_settings(p: argparse.ArgumentParser, defaults: StudySettings) -> None:
    g = p.add_argument_group("study settings")
    helps = {
        "n_images": "procedural data: number of images", "data_seed": "procedural data: seed",
        "vis_size": "feature visualization size in px", "vis_steps": "optimisation steps per visualization",
        "seed": "seed for visualization and SAE training", "k": "dataset examples kept per unit",
        "batch_size": "images per forward pass when mining", "num_workers": "DataLoader workers",
        "sae_expansion": "SAE features per channel", "sae_k": "active features per sample (TopK)",
        "sae_steps": "SAE training steps (the held-out evaluation fits its SAEs with as many)",
        "sae_images": "images the SAE samples activations from (default: all)",
        "sae_per_image": "activation positions sampled per image for the SAE",
        "n_split": "channels to split when --channels is not given (the most polysemantic)",
        "split_top": "features listed per split", "feature_vis": "features per split to visualize",
    }
    for f in fields(StudySettings):
        default = getattr(defaults, f.name)
        kind = int if f.type in ("int", "int | None") else float
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=default,
                       help=f"{helps.get(f.name, f.name)} (default: %(default)s)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="the whole job: visualize, mine, fit an SAE, split polysemantic channels",
        description="Run the full study for one model and dataset into one run directory: feature "
        "visualizations of every channel, dataset examples with statistics, an SAE on the layer, "
        "splits of the most polysemantic channels (or --channels) into SAE features, and their "
        "visualizations and examples. With labelled data it measures each unit's concept count and "
        "top-k purity, for channels and for SAE features.",
        epilog=STUDY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.set_defaults(model="demo")
    p.add_argument("--data", default="procedural", help="a folder of images (class subfolders give labels) "
                   "or 'procedural' (default: %(default)s)")
    p.add_argument("--layers", default=None, help="comma-separated layers to visualize and mine "
                   "(default: the model's default layer, e.g. mixed4e)")
    p.add_argument("--sae-layer", default=None, help="layer for the SAE (default: the last of --layers)")
    p.add_argument("--channels", default=None, help="channels to split, e.g. 55 or 55,56,60-70 "
                   "(default: the most polysemantic)")
    p.add_argument("--vis-channels", default=None, help="visualize only these channels, e.g. 55,60-70 "
                   "(default: every channel of every layer)")
    add_run_args(p)
    _add_settings(p, StudySettings())
    p.set_defaults(func=run_study)

    d = sub.add_parser(
        "demo", help="the study on the bundled demo model and procedural data, then the viewer",
        description="Run `circuitsviz study --model demo --data procedural` and serve the viewer. "
        "Takes a few minutes the first time on a laptop CPU, seconds after that.",
        epilog="example: circuitsviz demo --no-serve   # everything but the viewer",
    )
    d.add_argument("--out", default="runs/demo", help="run directory (default: %(default)s)")
    d.add_argument("--no-serve", dest="serve", action="store_false", help="do not start the viewer")
    d.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                   help="skip the held-out evidence (SAE seeds and k sweep against k-means and random baselines, "
                   "FV concept recovery): the run and the viewer come up in about a quarter of the time")
    d.add_argument("--port", type=int, default=8501, help="viewer port (default: %(default)s)")
    d.add_argument("--host", default="127.0.0.1", help="viewer address (default: %(default)s)")
    d.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    d.set_defaults(func=run_demo)


def _settings(args: argparse.Namespace) -> StudySettings:
    values = {f.name: getattr(args, f.name) for f in fields(StudySettings)}
    check_settings(values, flags=True)  # the same ranges as StudySettings, named as the user typed them
    return StudySettings(**values)


def run_study(args: argparse.Namespace) -> int:
    layers = split_list(args.layers) or None
    channels = parse_channels(args.channels) if args.channels else None
    vis_channels = parse_channels(args.vis_channels) if args.vis_channels else None
    from ..data import as_dataset

    settings = _settings(args)
    # The model and data are opened here, so a bad --data is named as the flag the user typed.
    model = model_from_args(args)
    data = as_dataset(args.data, model, n=settings.n_images, seed=settings.data_seed, param="--data ")
    report = study(model, data, out=args.out, layers=layers, channels=channels, vis_channels=vis_channels,
                   sae_layer=args.sae_layer, settings=settings, overwrite=args.overwrite)
    print(report.summary())
    print_browse(args.out, print_evidence(args.out))
    return 0


def print_evidence(out: str) -> str:
    """Name each split's concepts and the clearest split; return the viewer page that shows it."""
    from ..store import open_run
    from ..viewer import clearest_split, split_summary

    with open_run(out) as run:
        summary, best = split_summary(run), clearest_split(run)
    if summary:
        print("\nconcepts of each split channel and of its top features:\n" + summary)
    if best is None:
        return ""
    print(f"\nclearest split: {best.channel_id} (the split channel with the most of its concepts each taken "
          "by a one-concept feature)")
    return f"compare?unit={best.channel_id}"


def print_browse(out: str, page: str) -> None:
    print(f"\nbrowse it:  circuitsviz serve {out}" + (f"   then open http://127.0.0.1:8501/{page}" if page else ""))


def run_demo(args: argparse.Namespace) -> int:
    report = study("demo", "procedural", out=args.out, device=resolve_device(args.device),
                   evaluate=args.evaluate)
    print(report.summary())
    page = print_evidence(args.out)
    if not args.serve:
        print_browse(args.out, page)
        return 0
    from .serve import serve

    return serve(args.out, port=args.port, host=args.host, url_path=page)
