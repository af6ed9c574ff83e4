"""``circuitsviz fit-sae`` and ``circuitsviz split``: thin wrappers over :func:`fit_sae` and :func:`split_channel`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BadInputError
from .common import add_model_args, model_from_args

FIT_EPILOG = """\
examples:
  circuitsviz fit-sae --model inceptionv1 --data ~/imagenet/val --layer mixed4e --expansion 8 --k 32 --out runs/cat
  circuitsviz fit-sae --model demo --data procedural --layer mixed4 --k 2 --out runs/demo
  circuitsviz fit-sae --data ~/imagenet/val --layer mixed4e --sampler channel --channel 55 --out runs/cat

Each spatial position of the layer is one sample. Samples are cached under OUT/activations/<hash>
(reused by identical requests); the SAE, its checkpoint and training curve go to OUT/saes/NAME.
Interrupted? Run the same command again: it resumes from the last checkpoint.
"""

SPLIT_EPILOG = """\
example:
  circuitsviz split --run runs/cat --layer mixed4e --channel 55 --top 8

Ranks the SAE's features by the share of the channel's activation they write (over the samples
fit-sae cached, or over --data images), prints them and records them in the run.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-sae", help="fit a sparse autoencoder on a layer's activations",
                       description="Fit a TopK (default) or ReLU+L1 sparse autoencoder on a conv layer, "
                       "treating every spatial position as one sample of its channels.",
                       epilog=FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, help="image folder, 'procedural', or an activation-cache directory")
    p.add_argument("--layer", help="layer to fit (default: the model's default layer)")
    p.add_argument("--out", required=True, help="run directory (runs/NAME)")
    p.add_argument("--name", help="SAE name, used in unit ids layer/NAME:17 (default: topk<k>x<expansion>)")
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
    q.add_argument("--run", required=True, help="run directory written by fit-sae")
    q.add_argument("--layer", required=True)
    q.add_argument("--channel", type=int, required=True)
    q.add_argument("--sae", help="SAE name (default: the run's only SAE on --layer)")
    q.add_argument("--top", type=int, default=8)
    q.add_argument("--data", help="images to split over (default: the samples fit-sae cached)")
    q.add_argument("--max-samples", type=int, help="use at most this many samples")
    add_model_args(q)
    q.set_defaults(func=run_split)


def run_fit(args: argparse.Namespace) -> int:
    from ..sae import Sampler, fit_sae

    model = model_from_args(args)
    layer = args.layer or getattr(model, "default_layer", None)
    if not layer:
        raise BadInputError(f"give --layer; valid layers: {', '.join(model.layer_names)}")
    if args.sampler == "channel":
        if args.channel is None:
            raise BadInputError("--sampler channel needs --channel N")
        model.check_channel(layer, args.channel)
    out = Path(args.out)
    name = args.name or (f"topk{args.k}x{args.expansion}" if args.kind == "topk" else f"relux{args.expansion}")
    sae = fit_sae(
        model, args.data, layer, expansion=args.expansion, k=args.k, kind=args.kind, l1_coef=args.l1_coef,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        sampler=Sampler(args.sampler, per_image=args.per_image, rate=args.rate, channel=args.channel),
        n_images=args.images, cache_root=args.cache_dir or out / "activations", dtype=args.dtype,
        out=out / "saes" / name, name=name, progress=args.progress,
    )
    m = sae.metrics
    print(f"{layer}/{name}: {sae.n_latents} features, held-out FVU {m['fvu']:.4f}, L0 {m['l0']:.2f}, "
          f"dead {m['dead_fraction']:.1%}, dense {m['dense_fraction']:.1%}  -> {out / 'saes' / name}")
    store = _open_store(out)
    if store is not None:
        if store.info().model is None:  # a fresh run; never overwrite another step's settings
            store.set_info(model=model.name, weights_sha256=model.weights_sha256, input_size=model.input_size)
        store.put_sae(name, layer, config=sae.config.to_dict(), metrics=m, path=str(out / "saes" / name))
    return 0


def run_split(args: argparse.Namespace) -> int:
    from ..sae import load_sae, open_cache, split_channel

    run_dir = Path(args.run)
    sae_dir = _find_sae(run_dir, args.layer, args.sae)
    sae = load_sae(sae_dir, layer=args.layer)
    if args.data:
        model = model_from_args(args)
        sae = load_sae(sae_dir, model=model, layer=args.layer)
        data = args.data
    else:
        model, cache = None, sae.config.extra.get("cache")
        if not cache or not Path(cache).exists():
            raise BadInputError(f"the samples this SAE was fit on are gone ({cache}); pass --data IMAGES")
        data = open_cache(cache)
    result = split_channel(sae, args.channel, data=data, top=args.top, model=model, max_samples=args.max_samples)
    print(result.table())
    store = _open_store(run_dir)
    if store is None:
        path = sae_dir / f"split_{args.layer}_{args.channel}.json"
        path.write_text(json.dumps(result.to_dict(), indent=1))
        print(f"(no results store available; wrote {path})")
        return 0
    store.put_sae(sae.name, sae.layer, config=sae.config.to_dict(), metrics=sae.metrics, path=str(sae_dir))
    store.add_units([{"id": f.unit_id, "layer": sae.layer, "index": f.feature, "kind": "feature"}
                     for f in result.features])
    for f in result.features:
        store.put_feature(f.unit_id, sae=sae.name, decoder_top=top_decoder_weights(sae, f.feature),
                          freq=f.frequency, mean_act=f.mean_activation)
    store.put_split(sae.layer, args.channel, sae=sae.name, features=result.to_store_rows())
    print(f"recorded the split of {args.layer}:{args.channel} in {run_dir}")
    return 0


def top_decoder_weights(sae, feature: int, n: int = 8) -> list[tuple[int, float]]:
    """The ``n`` channels the feature writes most strongly into (raw activation units)."""
    d = sae.decoder_direction(feature)
    order = d.abs().argsort(descending=True)[:n]
    return [(int(c), float(d[c])) for c in order]


def _find_sae(run_dir: Path, layer: str, name: str | None) -> Path:
    saes = sorted(p.parent for p in (run_dir / "saes").glob("*/sae.json"))
    on_layer = [p for p in saes if json.loads((p / "sae.json").read_text())["config"].get("layer") == layer]
    if name is not None:
        match = [p for p in saes if p.name == name]
        if not match:
            from ..errors import UnknownNameError

            raise UnknownNameError("SAE", name, [p.name for p in saes])
        return match[0]
    if len(on_layer) == 1:
        return on_layer[0]
    if not on_layer:
        raise BadInputError(f"no SAE for layer {layer!r} in {run_dir}; run fit-sae first "
                            f"(SAEs there: {', '.join(p.name for p in saes) or 'none'})")
    raise BadInputError(f"several SAEs on {layer!r} in {run_dir}; choose one with --sae: "
                        f"{', '.join(p.name for p in on_layer)}")


def _open_store(run_dir: Path):
    try:
        from ..store import open_run
    except ImportError:
        return None
    return open_run(run_dir, create=True)
