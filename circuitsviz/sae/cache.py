"""Activation samples for SAE training: a sampler, an on-disk shard cache and a shuffling reader.

Every spatial position ``(image, y, x)`` of a layer's feature map is one sample of ``C`` channels.
:func:`build_cache` runs the model over a dataset, keeps the positions a :class:`Sampler`
chooses, and writes them to memory-mapped ``.npy`` shards in a directory named by the hash of
the whole config, so the same request reuses the same files. :class:`SampleSource` streams them
back in shuffled batches without holding the whole cache in RAM. The format is in ``CACHE.md``.

>>> cache = build_cache(model, dataset, "mixed4e", Sampler("per_image", per_image=16), root="runs/x/activations")  # doctest: +SKIP
>>> next(cache.batches(4096, seed=0)).shape                                                           # doctest: +SKIP
torch.Size([4096, 832])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInputError, check_int
from ..hashing import config_hash
from ..progress import progress_bar, progress_note
from ..store.blobs import atomic_write

FORMAT_VERSION = 1
SAMPLER_KINDS = ("all", "uniform", "per_image", "channel")


class NonFiniteActivationError(BadInputError):
    """NaN or Inf in activations; the message names the first offending position."""


# ---------------------------------------------------------------------------- sampler
@dataclass(frozen=True)
class Sampler:
    """Which positions of each image's feature map become samples.

    - ``all``: every position;
    - ``uniform``: each position independently with probability ``rate``;
    - ``per_image``: up to ``per_image`` distinct positions per image, uniformly;
    - ``channel``: up to ``per_image`` per image, drawn in proportion to ``channel``'s activation
      there (plus ``mix`` of uniform weight so quiet positions still appear), for a cheap
      SAE focused on one channel.
    """

    kind: str = "per_image"
    per_image: int = 16
    rate: float = 1.0
    channel: int | None = None
    mix: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise BadInputError(f"unknown sampler {self.kind!r}; valid: {', '.join(SAMPLER_KINDS)}")
        if self.kind == "channel" and self.channel is None:
            raise BadInputError("the 'channel' sampler needs channel=<index>")
        if self.per_image < 1 or not 0 < self.rate <= 1:
            raise BadInputError(f"need per_image >= 1 and 0 < rate <= 1, got {self.per_image}, {self.rate}")

    def choose(self, acts: torch.Tensor, rng: np.random.Generator) -> list[np.ndarray]:
        """For each image of ``acts`` (B, C, H, W), the flat positions (y * W + x) to keep."""
        b, _, h, w = acts.shape
        hw = h * w
        out = []
        for i in range(b):
            if self.kind == "all":
                pos = np.arange(hw)
            elif self.kind == "uniform":
                pos = np.flatnonzero(rng.random(hw) < self.rate)
            elif self.kind == "per_image":
                pos = np.sort(rng.choice(hw, size=min(self.per_image, hw), replace=False))
            else:
                a = acts[i, self.channel].reshape(-1).clamp_min(0).double().cpu().numpy()
                p = (1 - self.mix) * a / a.sum() + self.mix / hw if a.sum() > 0 else np.full(hw, 1 / hw)
                size = min(self.per_image, int((p > 0).sum()))  # mix=0 may leave fewer candidates
                pos = np.sort(rng.choice(hw, size=size, replace=False, p=p / p.sum()))
            out.append(pos)
        return out


def check_finite(acts: torch.Tensor, where=lambda i: str(i)) -> None:
    """Raise :class:`NonFiniteActivationError` naming the first NaN/Inf (image, channel, y, x)."""
    bad = ~torch.isfinite(acts)
    if bool(bad.any()):
        loc = [int(v) for v in bad.nonzero()[0]]
        value = float(acts[tuple(loc)])
        if acts.dim() == 4:
            i, c, y, x = loc
            at = f"image {where(i)}, channel {c}, position y={y}, x={x}"
        else:
            at = f"sample {where(loc[0])}, channel {loc[1]}"
        raise NonFiniteActivationError(
            f"activation {value} at {at} ({int(bad.sum())} non-finite values in this batch); "
            "refusing to train on it. Check the image and the model's weights."
        )


# ---------------------------------------------------------------------------- reader
@dataclass
class Shard:
    acts: np.ndarray | torch.Tensor  # (n, C), may be a memmap
    pos: np.ndarray | None           # (n, 3) int32: image index, y, x


class SampleSource:
    """Shards of samples, split into train rows and held-out rows, read as shuffled batches.

    The last ``heldout`` fraction of each shard's rows is held out. Shards hold images in order,
    so held-out rows mostly come from images the SAE never trained on.
    """

    def __init__(self, shards: list[Shard], *, heldout: float = 0.05, meta: dict | None = None) -> None:
        shards = [s for s in shards if len(s.acts)]
        if not shards:
            raise BadInputError("no activation samples: the data gave an empty sample set")
        self.shards = shards
        self.d_in = int(shards[0].acts.shape[1])
        self.heldout = heldout
        self.meta = meta or {}
        self._cut = [len(s.acts) - int(len(s.acts) * heldout) for s in shards]

    @classmethod
    def from_tensor(cls, samples: torch.Tensor, *, heldout: float = 0.05, positions: np.ndarray | None = None) -> "SampleSource":
        """In-memory samples ``(N, C)``; checked for NaN/Inf first."""
        if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
            raise BadInputError(f"samples must be an (N, C) tensor, got {getattr(samples, 'shape', type(samples).__name__)}")
        check_finite(samples)
        return cls([Shard(samples, positions)], heldout=heldout, meta={"data_hash": tensor_hash(samples)})

    @property
    def n_train(self) -> int:
        return sum(self._cut)

    @property
    def n_heldout(self) -> int:
        return sum(len(s.acts) for s in self.shards) - self.n_train

    def _rows(self, i: int, split: str) -> torch.Tensor:
        s, cut = self.shards[i], self._cut[i]
        a = s.acts[:cut] if split == "train" else s.acts[cut:]
        return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a, dtype=np.float32))

    def heldout_batches(self, batch_size: int = 4096) -> Iterator[torch.Tensor]:
        for i in range(len(self.shards)):
            rows = self._rows(i, "heldout")
            for j in range(0, len(rows), batch_size):
                yield rows[j:j + batch_size].float()

    def first(self, n: int) -> torch.Tensor:
        """Up to ``n`` train samples spread over the shards (for init statistics)."""
        per = max(1, n // len(self.shards))
        rows = [self._rows(i, "train")[:per] for i in range(len(self.shards))]
        return torch.cat(rows)[:n].float()

    def _groups(self, order: list[int], buffer: int, batch_size: int) -> list[list[int]]:
        groups, cur, rows = [], [], 0
        for i in order:
            cur.append(i)
            rows += self._cut[i]
            if rows >= buffer:
                groups.append(cur)
                cur, rows = [], 0
        if cur:
            if rows < batch_size and groups:
                groups[-1].extend(cur)  # too small to give a batch alone
            else:
                groups.append(cur)
        return groups

    def batches(self, batch_size: int, *, seed: int = 0, start_step: int = 0,
                buffer: int = 131072) -> Iterator[torch.Tensor]:
        """Endless shuffled train batches. ``start_step`` resumes exactly where step ``start_step`` began.

        Shuffling: each epoch permutes the shards, gathers them into groups of at least ``buffer``
        rows (the shuffle buffer), and permutes the rows inside each group. A group's batch count
        depends only on row counts, so resuming skips whole groups without reading them.
        """
        check_int("batch_size", batch_size, 1)  # a count < 1 would loop forever below
        if self.n_train < batch_size:
            raise BadInputError(f"only {self.n_train} training samples, fewer than one batch of {batch_size}")
        step, epoch = 0, 0
        while True:
            rng = np.random.default_rng([seed, epoch])
            for group in self._groups(list(rng.permutation(len(self.shards))), buffer, batch_size):
                n = sum(self._cut[i] for i in group)
                count = n // batch_size
                perm_seed = rng.integers(2**63)
                if step + count <= start_step:
                    step += count
                    continue
                rows = torch.cat([self._rows(i, "train") for i in group])
                perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation(n))
                for j in range(count):
                    if step >= start_step:
                        yield rows[perm[j * batch_size:(j + 1) * batch_size]].float()
                    step += 1
            epoch += 1


# ---------------------------------------------------------------------------- writer
def tensor_hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _data_spec(dataset) -> dict:
    if hasattr(dataset, "spec"):
        return dataset.spec()
    # No spec: identify by type, length and the content of a few images (documented in CACHE.md).
    h = hashlib.sha256()
    for i in range(min(len(dataset), 8)):
        h.update(dataset[i][0].numpy().tobytes())
    return {"kind": type(dataset).__name__, "n": len(dataset), "content_sha256": h.hexdigest()[:16]}


def cache_config(model, dataset, layer: str, sampler: Sampler, *, seed: int, dtype: str,
                 images_per_shard: int) -> dict:
    return {
        "format": FORMAT_VERSION, "model": model.name, "weights_sha256": model.weights_sha256,
        "layer": layer, "data": _data_spec(dataset), "n_images": len(dataset),
        "sampler": asdict(sampler), "seed": seed, "dtype": dtype, "images_per_shard": images_per_shard,
    }


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


def build_cache(model, dataset, layer: str, sampler: Sampler = Sampler(), *, root: str | Path,
                seed: int = 0, dtype: str = "float16", images_per_shard: int = 512,
                batch_size: int = 32, heldout: float = 0.05, progress: bool = True) -> SampleSource:
    """Sample ``layer`` over ``dataset`` into ``root/<config hash>/`` (reused when it exists).

    An interrupted build resumes at the first shard that is not finished.
    """
    from ..data import iterate_batches

    if dtype not in ("float16", "float32"):
        raise BadInputError(f"cache dtype must be float16 or float32, got {dtype!r}")
    model.layer(layer)  # unknown layer -> UnknownNameError listing the valid ones
    if len(dataset) == 0:
        raise BadInputError("the dataset is empty; nothing to sample activations from")
    config = cache_config(model, dataset, layer, sampler, seed=seed, dtype=dtype, images_per_shard=images_per_shard)
    directory = Path(root).expanduser() / config_hash(config)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot create the activation cache folder {str(directory)!r}: {e.strerror or e}") from None
    meta_path = directory / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"config": config, "shards": [], "skipped": []}
    progress_note(f"activation cache: {directory}" + (" (reused)" if meta.get("complete") else ""), enabled=progress)
    n_shards = -(-len(dataset) // images_per_shard)
    done = {s["index"] for s in meta["shards"]}
    bar = progress_bar(n_shards, desc=f"caching {layer}", unit="shard", initial=len(done), enabled=progress)
    for si in range(n_shards):
        if si in done:
            continue
        lo, hi = si * images_per_shard, min(len(dataset), (si + 1) * images_per_shard)
        rng = np.random.default_rng([seed, si])
        acts_rows, pos_rows = [], []
        for batch in iterate_batches(dataset, range(lo, hi), batch_size=batch_size):
            meta["skipped"] += [[i, image_id, reason] for i, image_id, reason in batch.skipped]
            if len(batch.indices) == 0:
                continue
            acts = model.activations(batch.images, layer)[layer].float()
            check_finite(acts, where=lambda i, ix=batch.indices: _image_name(dataset, int(ix[i])))
            if dtype == "float16" and float(acts.abs().max()) > 6e4:
                raise BadInputError(f"activations of {layer} exceed float16's range (max {float(acts.abs().max()):.3g}); use dtype='float32'")
            _, c, h, w = acts.shape
            flat = acts.permute(0, 2, 3, 1).reshape(acts.shape[0], h * w, c).cpu()
            for b, pos in enumerate(sampler.choose(acts, rng)):
                acts_rows.append(flat[b, torch.from_numpy(pos)])
                img = np.full(len(pos), int(batch.indices[b]), dtype=np.int32)
                pos_rows.append(np.stack([img, pos // w, pos % w], 1).astype(np.int32))
            meta.update(d_in=c, height=h, width=w)
        _write_shard(directory, si, acts_rows, pos_rows, dtype, meta.get("d_in", 0))
        meta["shards"].append({"index": si, "images": [lo, hi], "rows": sum(len(p) for p in pos_rows)})
        meta["shards"].sort(key=lambda s: s["index"])
        _write_json(meta_path, meta)
        bar.update(1)
    bar.close()
    meta["complete"] = True
    meta["n_samples"] = sum(s["rows"] for s in meta["shards"])
    _write_json(meta_path, meta)
    return open_cache(directory, heldout=heldout)


def _image_name(dataset, i: int) -> str:
    return f"{i} ({dataset.image_id(i)})" if hasattr(dataset, "image_id") else str(i)


def _write_shard(directory: Path, si: int, acts_rows, pos_rows, dtype: str, c: int) -> None:
    acts = torch.cat(acts_rows).numpy() if acts_rows else np.zeros((0, c), dtype=np.float32)
    pos = np.concatenate(pos_rows) if pos_rows else np.zeros((0, 3), dtype=np.int32)
    for name, arr, dt in (("acts", acts, dtype), ("pos", pos, "int32")):
        tmp = directory / f"{name}_{si:05d}.tmp.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dt, shape=arr.shape)
        out[:] = arr
        out.flush()
        del out
        os.replace(tmp, directory / f"{name}_{si:05d}.npy")


def open_cache(directory: str | Path, *, heldout: float = 0.05) -> SampleSource:
    """Open a finished cache directory as a :class:`SampleSource` (shards memory-mapped)."""
    directory = Path(directory)
    meta_path = directory / "metadata.json"
    if not meta_path.exists():
        raise BadInputError(f"{directory} is not an activation cache (no metadata.json)")
    meta = json.loads(meta_path.read_text())
    if not meta.get("complete"):
        raise BadInputError(f"activation cache {directory} is incomplete; run the same fit again to finish it")
    shards = [
        Shard(np.load(directory / f"acts_{s['index']:05d}.npy", mmap_mode="r"),
              np.load(directory / f"pos_{s['index']:05d}.npy", mmap_mode="r"))
        for s in meta["shards"] if s["rows"]
    ]
    meta["data_hash"] = directory.name
    meta["directory"] = str(directory)
    return SampleSource(shards, heldout=heldout, meta=meta)


