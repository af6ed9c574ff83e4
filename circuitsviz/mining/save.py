"""Saving mining results: one ``.npz`` file (arrays + a JSON header), and writing into a run.

File layout: every array is stored as ``<layer>/<field>`` (e.g. ``mixed4e/top_index``), plus
``label_count`` and ``__meta__``, a JSON string with the scalars (config, hash, shard, counts,
skipped files, classes, each layer's shape and receptive field). One file is written to a
unique temporary name and moved into place (``atomic_write``), so a checkpoint is never half-written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..store.blobs import atomic_write
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
    atomic_write(path, buf.getvalue())


def load_result(path: str | Path) -> MiningResult:
    if not Path(path).is_file():
        raise BadInputError(f"no mining result at {str(path)!r}")
    try:
        return _read_result(path)
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, OSError, EOFError) as e:
        raise BadInputError(f"{str(path)!r} is not a readable mining result or checkpoint ({type(e).__name__}: "
                            f"{str(e)[:120]}); it is damaged or another kind of file: delete it to start over") from None


def _read_result(path: str | Path) -> MiningResult:
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


def write_to_run(result: MiningResult, run, dataset, *, sae=None, model=None,
                 quantile_groups: int = 10, actmaps: bool = False, transform=None) -> int:
    """``run.add_mining(result, dataset, ...)``: kept for scripts written before the publishing API.

    >>> run = open_run("runs/demo", create=True)                    # doctest: +SKIP
    >>> write_to_run(mine(model, ds, ["mixed4e"]), run, ds, model=model)   # doctest: +SKIP
    """
    return run.add_mining(result, dataset, model=model, sae=transform if transform is not None else sae,
                          actmaps=actmaps, quantile_groups=quantile_groups)


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
            layer = r.name.partition("/")[0]  # a feature layer (LAYER/SAE) reads its SAE's layer
            acts = model.activations(batch.images.to(model.device), layer)[layer]
            if tfm is not None:
                acts = tfm(acts)
        acts = acts.float().cpu().numpy()
        where = {int(i): j for j, i in enumerate(batch.indices.tolist())}
        hit = np.isin(r.top_index, list(where))
        us, ks = np.nonzero(hit)
        rows = np.array([where[int(i)] for i in r.top_index[us, ks]], dtype=np.int64)
        maps[us, ks] = acts[rows, us]
    return maps
