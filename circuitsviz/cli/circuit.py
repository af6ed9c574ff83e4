"""``circuitsviz circuit``: a thin wrapper over :func:`circuitsviz.circuits.circuit` (and, given
``--data``, :func:`attribute` and :func:`faithfulness`)."""

from __future__ import annotations

import argparse

from ..errors import BadInputError
from .common import add_model_args, model_from_args

EPILOG = """\
examples:
  circuitsviz circuit --model inceptionv1 --unit mixed4c:447 --source mixed4b --top 10
  circuitsviz circuit --model inceptionv1 --unit mixed4c:447 --target mixed4d
  circuitsviz circuit --model demo --unit mixed3b:4 --source mixed3a --data procedural --faithfulness
  circuitsviz circuit --model demo --unit mixed3b/topk8x_k1:35 --source mixed3a --run runs/demo

Weights are direct where one conv connects the layers and expanded otherwise: the Jacobian of
the path with ReLUs as identity and max pools as average pools (Voss et al., Visualizing Weights).
With --data, each source's contribution on those images is printed too (activation x gradient or
integrated gradients), and --faithfulness compares ablating the top --n attributed sources with
ablating --n random ones.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("circuit", help="a unit's strongest inputs (or outputs): weights, attribution, ablation",
                       description="Print the units of an earlier (--source) or later (--target) layer with the "
                       "largest positive and negative weights to a unit, each with its kernel size and branch.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--unit", required=True, help="unit id: mixed4c:447, or an SAE feature mixed3b/NAME:35")
    ends = p.add_mutually_exclusive_group(required=True)
    ends.add_argument("--source", help="earlier layer whose units feed the unit (LAYER or LAYER/SAE_NAME)")
    ends.add_argument("--target", help="later layer whose units the unit feeds (LAYER or LAYER/SAE_NAME)")
    p.add_argument("--top", type=int, default=10, help="connections listed per sign (default: %(default)s)")
    p.add_argument("--sae", action="append", default=[], metavar="DIR",
                   help="a saved SAE (directory) that feature ids name; repeat for several")
    p.add_argument("--run", help="a run whose index knows the SAEs that feature ids name (instead of --sae)")
    p.add_argument("--input-size", type=int, help="image size the weights are computed at (default: chosen)")
    p.add_argument("--overwrite", action="store_true",
                   help="--run: replace a circuit the run holds with other settings (the circuit and --faithfulness "
                   "are written to --run)")
    d = p.add_argument_group("attribution (needs --data and --source)")
    d.add_argument("--data", help="image folder or 'procedural'")
    d.add_argument("--images", type=int, default=200, help="images to use (default: %(default)s)")
    d.add_argument("--method", choices=["act_x_grad", "integrated_gradients"], default="act_x_grad")
    d.add_argument("--faithfulness", action="store_true", help="also ablate the top --n sources vs random ones")
    d.add_argument("--n", type=int, default=5, help="sources ablated for --faithfulness (default: %(default)s)")
    d.add_argument("--mode", choices=["zero", "mean"], default="zero", help="ablation (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..circuits import attribute, circuit, faithfulness
    from ..data import as_dataset
    from ..sae import load_sae

    if args.data and not args.source:
        raise BadInputError("--data attributes to a --source layer; give --source")
    model = model_from_args(args)
    if args.data:  # read once, before any work, with errors that name the flag
        args.data = as_dataset(args.data, model, param="--data ")
    saes = [load_sae(path, model=model, device=model.device) for path in args.sae]
    if args.run:  # feature ids (unit, LAYER/SAE source or target) find their SAE through the run's index
        from ..units import Unit, resolve_sae

        named = {args.unit.partition(":")[0]} | {x for x in (args.source, args.target) if x}
        for layer, _, name in sorted(n.partition("/") for n in named if "/" in n):
            saes.append(resolve_sae(Unit(layer, 0, sae=name), run=args.run, model=model))
    result = circuit(model, args.unit, source=args.source, target=args.target, top=args.top, sae=saes,
                     input_size=args.input_size)
    print(result.table())
    if result.truncated:
        print("note: some kernels reached the edge of the map they were computed on; pass a larger --input-size")
    if args.data:
        att = attribute(model, args.unit, source=args.source, data=args.data, method=args.method, sae=saes,
                        limit=args.images)
        print()
        print(att.table(args.top))
        if args.faithfulness:
            f = faithfulness(model, args.unit, source=args.source, data=args.data, n=args.n, method=args.method,
                             mode=args.mode, sae=saes, limit=args.images)
            print()
            print(f.summary())
    if args.run:
        _publish(args, model, result, f if args.data and args.faithfulness else None)
    return 0


def _publish(args: argparse.Namespace, model, result, f) -> None:
    """Write the circuit (and its faithfulness) to ``--run`` through the publishing API."""
    from ..store import open_run

    with open_run(args.run, create=True) as run:
        n = run.add_circuit(result, model=model, input_size=args.input_size, overwrite=args.overwrite)
        if f is not None:
            spec = args.data.spec()
            run.add_faithfulness(f, data={**spec, "limit": args.images})
    print(f"wrote {n} connections{' and the faithfulness' if f is not None else ''} of {result.unit} to {args.run}")
