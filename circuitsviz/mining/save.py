"""Saving mining results: one ``.npz`` file (arrays + a JSON header), and writing into a run.

File layout: every array is stored as ``<layer>/<field>`` (e.g. ``mixed4e/top_index``), plus
``label_count`` and ``__meta__``, a JSON string with the scalars (config, hash, shard, counts,
skipped files, classes, each layer's shape and receptive field). One file is written to a
temporary name and moved into place with ``os.replace``, so a checkpoint is never half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..units import Unit
from .receptive import ReceptiveField
from .result import LayerResult, MiningResult

_ARRAYS = [f.name for f in dataclasses.fields(LayerResult) if f.name not in ("name", "height", "width", "rf")]


def save_result(result: MiningResult, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"label_count": result.label_count}
    layers = {}
    for name, r in result.layers.items():
        layers[name] = {"height": r.height, "width": r.width,
                        "rf": dataclasses.asdict(r.rf) if r.rf is not None else None}
        arrays.update({f"{name}/{f}": getattr(r, f) for f in _ARRAYS if getattr(r, f) is not None})
    meta = {
        "format": "circuitsviz-mining/1", "config": result.config, "config_hash": result.config_hash,
        "n_images": result.n_images, "shard": list(result.shard) if result.shard else None,
        "done": result.done, "total": result.total, "skipped": [list(s) for s in result.skipped],
        "classes": result.classes, "layers": layers,
    }
    arrays["__meta__"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_result(path: str | Path) -> MiningResult:
    if not Path(path).is_file():
        raise BadInputError(f"no mining result at {str(path)!r}")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        layers = {}
        for name, info in meta["layers"].items():
            rf = info["rf"]
            rf = ReceptiveField(**{k: tuple(v) for k, v in rf.items()}) if rf else None
            arrays = {f: z[f"{name}/{f}"] for f in _ARRAYS if f"{name}/{f}" in z.files}
            layers[name] = LayerResult(name=name, height=info["height"], width=info["width"], rf=rf, **arrays)
        label_count = z["label_count"]
    return MiningResult(
        layers=layers, config=meta["config"], config_hash=meta["config_hash"], n_images=meta["n_images"],
        label_count=label_count, shard=tuple(meta["shard"]) if meta["shard"] else None, done=meta["done"],
        total=meta["total"], skipped=[tuple(s) for s in meta["skipped"]], classes=meta["classes"],
    )


def _image_id(dataset, i: int) -> str:
    return dataset.image_id(i) if hasattr(dataset, "image_id") else str(i)


def write_to_run(result: MiningResult, run, dataset, *, sae: str | None = None, model=None,
                 quantile_groups: int = 10, actmaps: bool = False, transform=None) -> int:
    """Write examples, quantile examples and statistics of every unit into a store run.

    ``dataset`` maps indices back to image ids. Label counts are those of each unit's top-k.
    With ``sae`` the units are that SAE's features
    (``layer/sae:i``) and the layer row is left as it is. ``model`` (optional) supplies branch
    ranges. Returns the number of units written. ``actmaps=True`` (needs ``model``; ``transform``
    as given to :func:`mine`) also stores each top-k example's activation map, for the viewer's
    heatmap overlay: one more forward pass over the unique top-k images.

    >>> run = open_run("runs/demo", create=True)                    # doctest: +SKIP
    >>> write_to_run(mine(model, ds, ["mixed4e"]), run, ds, model=model)   # doctest: +SKIP
    """
    if not result.complete:
        raise ValueError(f"result covers {result.done} of {result.total} images; finish or merge it first")
    written = 0
    for name, r in result.layers.items():
        maps = top_k_maps(model, dataset, r, transform) if actmaps and model is not None else None
        with run.batch() if hasattr(run, "batch") else contextlib.nullcontext():  # one transaction per layer
            written += _write_layer(result, r, run, dataset, sae, model, quantile_groups, maps)
    return written


def top_k_maps(model, dataset, r: LayerResult, transform=None, batch_size: int = 32) -> np.ndarray:
    """Activation maps ``(U, k, H, W)`` (float16) of every unit on each of its top-k images.

    Memory is that of the result itself times H*W; each unique image is run once.
    """
    import torch

    from ..data import iterate_batches

    maps = np.zeros((*r.top_index.shape, r.height, r.width), dtype=np.float16)
    wanted = np.unique(r.top_index[r.top_index >= 0])
    tfm = transform.get(r.name) if isinstance(transform, dict) else transform
    for batch in iterate_batches(dataset, wanted.tolist(), batch_size=batch_size):
        with torch.inference_mode():
            acts = model.activations(batch.images.to(model.device), r.name)[r.name]
            if tfm is not None:
                acts = tfm(acts)
        acts = acts.float().cpu().numpy()
        where = {int(i): j for j, i in enumerate(batch.indices.tolist())}
        hit = np.isin(r.top_index, list(where))
        us, ks = np.nonzero(hit)
        rows = np.array([where[int(i)] for i in r.top_index[us, ks]], dtype=np.int64)
        maps[us, ks] = acts[rows, us]
    return maps


def _write_layer(result: MiningResult, r: LayerResult, run, dataset, sae, model, quantile_groups: int,
                 maps: np.ndarray | None = None) -> int:
    name = r.name
    if sae is None:
        branches = [(b.name, b.start, b.stop) for b in model.layer(name).branches] if model is not None else []
        run.put_layer(name, r.units, r.height, r.width, branches=branches, rf=_store_rf(r.rf))
    ids = [Unit(name, u, sae=sae).id for u in range(r.units)]
    run.add_units([{"id": uid, "layer": name, "index": u, "kind": "feature" if sae else "channel"}
                   for u, uid in enumerate(ids)])
    stats = result.stats(name)
    ys, xs = r.top_yx()
    classes = result.classes
    for u, uid in enumerate(ids):
        rows = _rows(dataset, r.top_value[u], r.top_index[u], ys[u], xs[u], r.top_label[u])
        if maps is not None:
            for row in rows:
                row["actmap"] = maps[u, row["rank"]]
        run.put_examples(uid, rows, kind="max")
        if r.mean_value is not None:
            run.put_examples(uid, _rows(dataset, r.mean_value[u], r.mean_index[u], r.mean_pos[u] // r.width,
                                        r.mean_pos[u] % r.width, r.mean_label[u]), kind="mean")
        run.put_quantile_examples(uid, [
            dict(bin=g, image_id=_image_id(dataset, i), value=v, y=p // r.width, x=p % r.width,
                 label=dataset.label(i) if hasattr(dataset, "label") else -1)
            for g, i, v, p in result.quantile_examples(name, u, quantile_groups)
        ])
        top = r.top_label[u][(r.top_label[u] >= 0) & (r.top_index[u] >= 0)]
        labels = {(classes[lab] if classes and lab < len(classes) else str(lab)): int(n)
                  for lab, n in enumerate(np.bincount(top)) if n}
        run.put_stats(
            uid, mean=float(stats["mean"][u]), max=float(stats["max"][u]),
            frac_positive=float(stats["frac_positive"][u]), hist_counts=r.hist_counts[u].tolist(),
            hist_edges=r.hist_edges[u].tolist(),
            scores={**{key: _plain(stats[key][u]) for key in ("purity", "entropy", "concept_count")},
                    "concept_means": _concept_means(r.label_sum[u], result.label_count, classes)},
            label_counts=labels,
        )
    return r.units


def _concept_means(label_sum: np.ndarray, label_count: np.ndarray, classes) -> dict[str, float]:
    """Mean image-level activation per label (what the concept count is computed from), for the viewer."""
    return {(classes[lab] if classes and lab < len(classes) else str(lab)): float(label_sum[lab] / n)
            for lab, n in enumerate(label_count[:len(label_sum)]) if n}


def _store_rf(rf) -> tuple[float, float, float] | None:
    """The store's convention: position ``p``'s field is ``size`` pixels centred on ``offset + p * stride``."""
    if rf is None:
        return None
    size, stride, start = rf.as_tuple()
    return size, stride, start + size / 2


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and v != v else v


def _rows(dataset, values, index, ys, xs, labels) -> list[dict]:
    return [dict(rank=rank, image_id=_image_id(dataset, int(i)), value=float(v), y=int(y), x=int(x), label=int(lab))
            for rank, (v, i, y, x, lab) in enumerate(zip(values, index, ys, xs, labels)) if i >= 0]
