"""The study's circuit step: circuits of its split channels and their top features, into the run.

For each split channel of the SAE layer and its top ``features`` features (by share), it stores
the unit's inputs from the layer before (``circuit(...)``, weights, ``top`` per sign) and the
faithfulness of its top-``n`` attributed sources against ``n`` random ones (``draws`` draws),
measured on the unit's ``examples`` most activating of ``images`` held-out images (procedural
data: seed :data:`HELDOUT_SEED`, which neither the demo model nor the study's SAE saw; folder
data: the study's own images, where the split into ranking and measuring halves is the only
holding out). It prints the figure table of :func:`circuitsviz.circuits.splits.table`.

The defaults keep the step small: 6.5 s on the demo (3 channels, 8 distinct units, 2-core CPU);
:data:`CIRCUITS` is the key its results are stored under.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

HELDOUT_SEED = 10000


@dataclass(frozen=True)
class CircuitSettings:
    top: int = 8            # connections stored per sign
    n: int = 5              # sources ablated
    draws: int = 20         # random draws of n sources
    images: int = 200       # held-out images
    examples: int = 48      # each unit's top images among them (half rank, half measure)
    features: int = 2       # top features per split channel


CIRCUITS = CircuitSettings()


def source_layer(model, layer: str) -> str | None:
    """The layer before ``layer`` among the model's outer layers (not a branch or ``_pre_relu`` of another)."""
    names = model.layer_names
    outer = [n for n in names[:names.index(layer)] if not any(n != o and n.startswith(o + "_") for o in names)]
    return outer[-1] if outer else None


def heldout_images(model, dataset, n: int):
    """``n`` images the study's SAE did not see (see the module doc), as one tensor."""
    from ..data import as_dataset
    from .readout import load_images

    spec = dataset.spec() if hasattr(dataset, "spec") else {}
    if spec.get("kind") == "procedural":
        dataset = as_dataset("procedural", model, n=n, seed=HELDOUT_SEED)
    return dataset, load_images(dataset, model, limit=n)


def circuits_step(ctx, settings: CircuitSettings = CIRCUITS) -> None:
    """A study step (see :mod:`circuitsviz.study`): circuits and faithfulness of the split channels."""
    from .ablation import faithfulness
    from .circuit import circuit
    from .splits import SplitCircuit, table

    source = source_layer(ctx.model, ctx.sae_layer)
    key = {**asdict(settings), "source": source, "sae": ctx.sae_settings()}
    if source is None or not ctx.todo("circuits", ctx.sae_slot, key, f"circuits of {ctx.sae_slot}"):
        return
    data, images = heldout_images(ctx.model, ctx.dataset, settings.images)
    spec = {**(data.spec() if hasattr(data, "spec") else {}), "limit": len(images)}
    t0, rows, done = time.time(), [], {}
    for c, ranked in zip(ctx.split_channels, ctx.split_features):
        channel, feats = f"{ctx.sae_layer}:{c}", ranked[:settings.features]
        for u in [channel, *feats]:
            if u in done:  # a feature shared by two channels is measured once
                continue
            ctx.run.add_circuit(circuit(ctx.model, u, source=source, top=settings.top, sae=ctx.sae),
                                model=ctx.model, overwrite=ctx.overwrite)
            f = faithfulness(ctx.model, u, source=source, data=images, n=settings.n, draws=settings.draws,
                             sae=ctx.sae, examples=settings.examples)
            ctx.run.add_faithfulness(f, data=spec, examples=settings.examples)
            done[u] = f
        rows.append(SplitCircuit(channel, feats, [done[u] for u in [channel, *feats]]))
    ctx.run.mark_done("circuits", ctx.sae_slot, key)
    print(f"circuits of the split channels of {ctx.sae_layer} and their top {settings.features} features, "
          f"sources in {source}; faithfulness on the top {settings.examples} of {len(images)} held-out images, "
          f"{settings.draws} random draws ({time.time() - t0:.1f} s):")
    print(table(rows, settings.n))
