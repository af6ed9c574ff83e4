"""Circuits of split channels: the faithfulness of each split channel's and each of its top
features' top-``n`` attributed sources, the figure the study reports for its splits.

    python -m circuitsviz.circuits.splits --model demo --sae-layer mixed3b --source mixed3a

Without ``--sae`` it fits the study's SAE (TopK, 8x, k=1, on 2000 procedural images of seed 1,
as ``circuitsviz study`` does) in a temporary folder. Each unit is measured on its own top
``--examples`` images of the held-out set (the demo's own held-out seed, 10000): attribution
ranks sources on the even ones of those and ablation measures the drops on the odd ones.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass

import torch

from .ablation import Faithfulness, faithfulness


@dataclass
class SplitCircuit:
    channel: str                     # "mixed3b:4"
    features: list[str]              # its top features by share
    results: list[Faithfulness]      # the channel's, then each feature's

    def rows(self) -> list[str]:
        return [f"{r.unit:<24} {r.top_drop:>9.4g} [{r.top_interval[0]:.3g}, {r.top_interval[1]:.3g}]"
                f" {r.random_drop:>9.4g} [{r.random_interval[0]:.3g}, {r.random_interval[1]:.3g}]"
                f" {r.ratio:>7.2f}x {'yes' if r.ratio >= 2 and r.disjoint else 'no':>4}  {r.baseline:.3g}"
                for r in self.results]


def split_circuits(model, sae, channels, *, source: str, data, n: int = 5, features: int = 3, draws: int = 50,
                   examples: int | None = 64, split_data=None, mode: str = "zero", seed: int = 0) -> list[SplitCircuit]:
    """For each channel of ``sae.layer``: its split (top ``features`` by share, over
    ``split_data``, by default the layer's activations on ``data``, an image tensor) and the
    faithfulness of the channel's and each feature's top-``n`` sources in ``source``, each
    measured on its own ``examples`` most activating images of ``data``."""
    from ..sae import split_channel

    if split_data is None:  # split over the layer's activations on the same images
        split_data = torch.cat([model.activations(b, [sae.layer])[sae.layer] for b in data.split(64)])
    out = []
    for c in channels:
        split = split_channel(sae, c, data=split_data, top=features)
        ids = [f.unit_id for f in split.features]
        results = [faithfulness(model, u, source=source, data=data, n=n, draws=draws, sae=sae, mode=mode, seed=seed,
                                examples=examples)
                   for u in [f"{sae.layer}:{c}"] + ids]
        out.append(SplitCircuit(f"{sae.layer}:{c}", ids, results))
    return out


def table(circuits: list[SplitCircuit], n: int) -> str:
    head = (f"{'unit':<24} {'top-' + str(n) + ' drop':>9} [95%]        {'random':>9} [95%]        "
            f"{'ratio':>7} {'pass':>4}  mean act")
    lines = [head] + [row for sc in circuits for row in sc.rows()]
    results = [r for sc in circuits for r in sc.results]
    passed = sum(r.ratio >= 2 and r.disjoint for r in results)
    lines.append(f"{passed} of {len(results)} units pass (top-{n} drop >= 2x random and 95% intervals disjoint; "
                 "ratio inf: random ablations raised the unit on average)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..data import as_dataset
    from ..models import load_model
    from ..sae import Sampler, fit_sae, load_sae

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sae-layer", default="mixed3b")
    ap.add_argument("--source", default="mixed3a")
    ap.add_argument("--sae", help="a saved SAE directory (default: fit the study's)")
    ap.add_argument("--save", help="where to save the SAE it fits, to reuse with --sae")
    ap.add_argument("--sae-seed", type=int, default=0, help="seed of the SAE it fits (default: %(default)s)")
    ap.add_argument("--channels", help="channels to split, e.g. 1,6,0 (default: all)")
    ap.add_argument("--images", type=int, default=400, help="held-out images (default: %(default)s)")
    ap.add_argument("--heldout-seed", type=int, default=10000)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--features", type=int, default=3)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--mode", choices=["zero", "mean"], default="zero")
    ap.add_argument("--examples", type=int, default=64, help="each unit's top images used (default: %(default)s)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(args.model)
    if args.sae:
        sae = load_sae(args.sae, model=model, layer=args.sae_layer)
    else:
        train = as_dataset("procedural", model, n=2000, seed=1)
        sae = fit_sae(model, train, args.sae_layer, expansion=8, k=1, n_images=len(train), seed=args.sae_seed,
                      sampler=Sampler("per_image", per_image=16), cache_root=tempfile.mkdtemp(),
                      name="topk8x_k1", progress=False)
        print("SAE:", {k: round(v, 4) for k, v in dict(sae.metrics).items() if isinstance(v, float)})
        if args.save:
            from ..sae import save_sae

            save_sae(sae, args.save)
    heldout = as_dataset("procedural", model, n=args.images, seed=args.heldout_seed)
    images = torch.stack([heldout[i][0] for i in range(len(heldout))])
    chans = [int(c) for c in args.channels.split(",")] if args.channels else range(model.channels(args.sae_layer))
    circuits = split_circuits(model, sae, chans, source=args.source, data=images, n=args.n, features=args.features,
                              draws=args.draws, mode=args.mode, examples=args.examples)
    print(table(circuits, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
