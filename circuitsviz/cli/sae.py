"""``circuitsviz fit-sae`` and ``circuitsviz split``: thin wrappers over :func:`fit_sae` and :func:`split_channel`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import BadInputError, check_int
from .common import add_model_args, add_run_args, model_from_args

FIT_EPILOG = """\
examples:
  circuitsviz fit-sae --model inceptionv1 --data ~/imagenet/val --layer mixed4e --expansion 8 --k 32 --out runs/cat
  circuitsviz fit-sae --model demo --data procedural --layer mixed3b --k 2 --out runs/demo
  circuitsviz fit-sae --data ~/imagenet/val --layer mixed4e --sampler channel --channel 55 --out runs/cat

Each spatial position of the layer is one sample. Samples are cached under OUT/activations/<hash>
(reused by identical requests); the SAE, its checkpoint and training curve go to
OUT/saes/LAYER/NAME. Interrupted? Run the same command again: it resumes from the last
checkpoint. A second fit of the same layer into the same run waits for the first; the same
settings then reuse its SAE, other settings under the same name stop unless --overwrite.
"""

SPLIT_EPILOG = """\
example:
  circuitsviz split --run runs/cat --channel mixed4e:55 --top 8
  circuitsviz split --run runs/demo --layer mixed3b --channel 1 --sae topk8x_k1

Ranks the SAE's features by the share of the channel's activation they write (over the samples
the SAE was fit on, or over --data images), prints them and records them in the run. Any SAE
the run's index knows can split: one fit by fit-sae or by study.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-sae", help="fit a sparse autoencoder on a layer's activations",
                       description="Fit a TopK (default) or ReLU+L1 sparse autoencoder on a conv layer, "
                       "treating every spatial position as one sample of its channels.",
                       epilog=FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, help="image folder, 'procedural', or an activation-cache directory")
    p.add_argument("--layer", help="layer to fit (default: the model's default layer)")
    add_run_args(p)
    p.add_argument("--name", help="SAE name, used in unit ids layer/NAME:17 (default: topk<expansion>x_k<k>, "
                   "e.g. topk8x_k32; relu<expansion>x)")
    g = p.add_argument_group("SAE")
    g.add_argument("--kind", choices=["topk", "relu"], default="topk")
    g.add_argument("--expansion", type=int, default=8, help="features per channel (default: %(default)s)")
    g.add_argument("--k", type=int, default=32, help="active features per sample, TopK (default: %(default)s)")
    g.add_argument("--l1-coef", type=float, default=5.0, help="L1 weight, ReLU kind (default: %(default)s)")
    g.add_argument("--steps", type=int, help="optimiser steps (default: about 10 passes, 500-20000)")
    g.add_argument("--batch-size", type=int, default=4096)
    g.add_argument("--lr", type=float, help="Adam learning rate (default: 2e-4/sqrt(F/2^14), capped)")
    g.add_argument("--seed", type=int, default=0)
    s = p.add_argument_group("sampling")
    s.add_argument("--sampler", choices=["all", "uniform", "per_image", "channel"], default="per_image")
    s.add_argument("--per-image", type=int, default=16, help="positions per image (per_image, channel)")
    s.add_argument("--rate", type=float, default=1.0, help="keep probability per position (uniform)")
    s.add_argument("--channel", type=int, help="channel whose firing positions the 'channel' sampler favours")
    s.add_argument("--images", type=int, default=2000, help="images of the procedural set (default: %(default)s)")
    s.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="cache precision")
    s.add_argument("--cache-dir", help="where activation caches go (default: OUT/activations)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_fit)

    q = sub.add_parser("split", help="split a channel into the SAE features that write into it",
                       description="Rank an SAE's features by their share of one channel's activation.",
                       epilog=SPLIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--run", required=True, help="run directory holding the SAE (fit by fit-sae or study)")
    q.add_argument("--layer", help="layer of the channel (or give --channel as LAYER:CHANNEL)")
    q.add_argument("--channel", required=True, help="the channel: an index with --layer, or an id such as mixed4e:55")
    q.add_argument("--sae", help="SAE name (default: the run's only SAE on the layer)")
    q.add_argument("--top", type=int, default=8)
    q.add_argument("--data", help="images to split over (default: the samples the SAE was fit on)")
    q.add_argument("--max-samples", type=int, help="use at most this many samples")
    add_model_args(q)
    q.set_defaults(func=run_split)


def _check_fit_args(args: argparse.Namespace, model, layer: str) -> None:
    """Everything fit_sae would refuse late, refused before any work."""
    if args.sampler == "channel":
        if args.channel is None:
            raise BadInputError("--sampler channel needs --channel N")
        model.check_channel(layer, args.channel)
    for flag in ("expansion", "images", "per_image", "batch_size"):  # before the product below
        check_int("--" + flag.replace("_", "-"), getattr(args, flag), 1)
    latents = args.expansion * model.channels(layer)
    if args.kind == "topk" and not 1 <= args.k <= latents:
        raise BadInputError(f"--k {args.k} is out of range for {latents} features "
                            f"({args.expansion} x {model.channels(layer)} channels); valid: 1..{latents}")
    if args.steps is not None and args.steps < 1:
        raise BadInputError(f"--steps must be >= 1, got {args.steps}")


def run_fit(args: argparse.Namespace) -> int:
    from ..data import as_dataset
    from ..sae import Sampler, fit_sae
    from ..store import open_run
    from ..store.steps import sae_key
    from ..units import sae_name

    model = model_from_args(args)
    layer = args.layer or getattr(model, "default_layer", None)
    if not layer:
        raise BadInputError(f"give --layer; valid layers: {', '.join(model.layer_names)}")
    model.layer(layer)
    _check_fit_args(args, model, layer)
    is_cache = (Path(args.data) / "metadata.json").is_file()
    data = args.data if is_cache else as_dataset(args.data, model, n=args.images, param="--data ")
    name = args.name or sae_name(args.kind, args.expansion, args.k)
    sampler = Sampler(args.sampler, per_image=args.per_image, rate=args.rate, channel=args.channel)
    key = sae_key(kind=args.kind, expansion=args.expansion, k=args.k, l1_coef=args.l1_coef, steps=args.steps,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, sampler=sampler, n_images=args.images,
                  dtype=args.dtype)
    run = open_run(args.out, create=True)
    slot, path = f"{layer}/{name}", run.sae_dir(layer, name)
    run.check_inputs(model, None if is_cache else data, overwrite=args.overwrite)
    run.check_step("sae", slot, key, overwrite=args.overwrite, what=f"SAE {slot}")
    with run.lock(f"sae:{layer}"):  # a second fit on this layer waits here, then finds the first's SAE
        if run.check_step("sae", slot, key, overwrite=args.overwrite, what=f"SAE {slot}"):
            sae = run.load_sae(name, layer, model=model)
            print(f"{slot}: in the run already with these settings ({path})")
            return 0
        rec = run.step("sae", slot)
        if rec is None or rec.settings != key:  # files of a replaced SAE: its checkpoint must not resume
            shutil.rmtree(path, ignore_errors=True)
        run.add_model(model, overwrite=args.overwrite)
        if not is_cache:
            run.add_data(data, overwrite=args.overwrite)
        run.begin_step("sae", slot, key)
        sae = fit_sae(
            model, data, layer, expansion=args.expansion, k=args.k, kind=args.kind, l1_coef=args.l1_coef,
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, sampler=sampler,
            n_images=args.images, cache_root=args.cache_dir or run.activations_dir, dtype=args.dtype,
            out=path, name=name, progress=args.progress,
        )
        run.add_sae(sae, path=path, settings=key, overwrite=args.overwrite)
    m = sae.metrics
    print(f"{slot}: {sae.n_latents} features, held-out FVU {m['fvu']:.4f}, L0 {m['l0']:.2f}, "
          f"dead {m['dead_fraction']:.1%}, dense {m['dense_fraction']:.1%}  -> {path}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from ..sae import open_cache, split_channel
    from ..store import open_run
    from ..units import Unit

    if args.layer is None:
        unit = Unit.parse(args.channel)
        layer, channel = unit.layer, unit.index
    else:
        try:
            layer, channel = args.layer, int(args.channel)
        except ValueError:
            raise BadInputError(f"--channel {args.channel!r} must be an index with --layer, "
                                "or an id such as mixed4e:55 without it") from None
    if args.top < 1:
        raise BadInputError(f"--top must be >= 1, got {args.top}")
    run = open_run(args.run, writable=True)  # an existing run only, opened to record the split
    record = _find_sae(run, layer, args.sae)
    model = model_from_args(args) if args.data else None
    sae = run.load_sae(record.name, layer, model=model)
    if args.data:
        data = args.data
    else:
        cache = sae.config.extra.get("cache")
        if not cache or not Path(cache).exists():
            raise BadInputError(f"the samples SAE {layer}/{record.name} was fit on are gone ({cache}); "
                                "pass --data IMAGES")
        data = open_cache(cache)
    result = split_channel(sae, channel, data=data, top=args.top, model=model, max_samples=args.max_samples)
    print(result.table())
    run.add_split(result)
    print(f"recorded the split of {layer}:{channel} in {args.run}")
    return 0


def _find_sae(run, layer: str, name: str | None):
    """The SAE on ``layer`` the run's index knows: the one named, or the only one."""
    if name is not None:
        return run.sae(name, layer)
    on_layer = run.saes(layer)
    if len(on_layer) == 1:
        return on_layer[0]
    if not on_layer:
        others = ", ".join(f"{s.layer}/{s.name}" for s in run.saes()) or "none"
        raise BadInputError(f"no SAE on layer {layer!r} in {run.path}; fit one first with `circuitsviz fit-sae` "
                            f"(SAEs there: {others})")
    raise BadInputError(f"several SAEs on {layer!r} in {run.path}; choose one with --sae: "
                        f"{', '.join(s.name for s in on_layer)}")
