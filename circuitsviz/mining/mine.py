"""``mine``: stream a dataset once; keep every unit's top-k images, positions and statistics.

Memory is O(units x k) plus one batch. Only the deepest requested layer is computed, and every
requested layer is captured in that one truncated forward. All bookkeeping stays on the model's
device and is vectorised over units and images.

Shards (``shard=(i, n)``) are **contiguous** slices of the dataset's index order made of whole
batches: with ``B = ceil(N / batch_size)`` batches, shard ``i`` takes batches
``[i * B // n, (i + 1) * B // n)``. Each shard therefore runs exactly the batches a single run
would (convolution results can differ in the last bit with the batch's make-up), and
:func:`circuitsviz.mining.merge` combines the shards into exactly a single run's result.

Checkpoints: with ``checkpoint=PATH`` the state is written atomically (temp file, then
``os.replace``) every ``checkpoint_every`` images and at the end. Calling ``mine`` again with the
same arguments continues from it; batches restart on the same boundaries, so the result equals
an uninterrupted run's. A checkpoint made with a different configuration is refused with an
error (pass ``restart=True`` to start afresh).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import as_dataset, iterate_batches
from ..errors import BadInputError, check_float, check_int
from ..hashing import config_hash as hash_config
from ..progress import progress_bar
from .receptive import receptive_fields
from .result import LayerResult, MiningResult
from .stats import bin_of, histogram_edges, update_bin_examples
from .topk import new_top_k, update_top_k

Transform = Callable[[torch.Tensor], torch.Tensor]


class _Pairs(torch.utils.data.Dataset):
    """Any dataset as ``(image, label)`` pairs (label -1 when it returns bare images)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if isinstance(item, (tuple, list)):
            return item[0], int(item[1]) if len(item) > 1 else -1
        return item, -1

    def image_id(self, i: int) -> str:
        return self.dataset.image_id(i) if hasattr(self.dataset, "image_id") else str(i)


def shard_indices(n: int, shard: tuple[int, int] | None, batch_size: int = 1) -> range:
    """The contiguous slice of ``range(n)``, in whole batches, that shard ``(i, count)`` mines.

    >>> shard_indices(10, (1, 2), batch_size=4)
    range(8, 10)
    """
    if shard is None:
        return range(n)
    i, count = shard
    if not (isinstance(i, int) and isinstance(count, int) and count >= 1 and 0 <= i < count):
        raise BadInputError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    batches = -(-n // batch_size)
    start, stop = i * batches // count * batch_size, (i + 1) * batches // count * batch_size
    return range(min(start, n), min(stop, n))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/8"`` -> ``(2, 8)``."""
    if not text:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise BadInputError(f"bad shard {text!r}; write it as i/n, e.g. 0/4 for the first of four") from None
    shard_indices(n, (i, n))
    return i, n


def _fingerprint(module: torch.nn.Module | None) -> str | None:
    """A hash of a module's parameters, so random-weight models and SAEs are told apart."""
    if module is None or not isinstance(module, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(memoryview(t.detach().cpu().contiguous().numpy()).cast("B"))  # same bytes, no copy
    return h.hexdigest()[:16]


def _transform_for(transform, layer: str) -> Transform | None:
    return transform.get(layer) if isinstance(transform, dict) else transform


def _describe(transform) -> object:
    if transform is None:
        return None
    if isinstance(transform, dict):
        return {k: _describe(v) for k, v in sorted(transform.items())}
    name = getattr(transform, "__qualname__", type(transform).__qualname__)
    return {"name": name, "params": _fingerprint(transform)}


class _LayerState:
    """Running state of one layer on the model's device."""

    def __init__(self, units: int, height: int, width: int, k: int, edges: torch.Tensor, per_bin: int,
                 mean_top_k: bool, device) -> None:
        self.height, self.width = height, width
        self.top = new_top_k(units, k, device)
        self.mean_top = new_top_k(units, k, device) if mean_top_k else None
        self.mean_sum = torch.zeros(units, dtype=torch.float64, device=device)
        self.max = torch.full((units,), float("-inf"), device=device)
        self.positive = torch.zeros(units, dtype=torch.long, device=device)
        self.edges = edges.to(device)
        bins = edges.shape[1] - 1
        self.hist = torch.zeros(units, bins, dtype=torch.long, device=device)
        self.bin_index = torch.full((units, bins, per_bin), -1, dtype=torch.long, device=device)
        self.bin_value = torch.zeros((units, bins, per_bin), device=device)
        self.bin_pos = torch.full((units, bins, per_bin), -1, dtype=torch.long, device=device)
        self.bin_fill = torch.zeros(units, bins, dtype=torch.long, device=device)
        self.label_sum = torch.zeros(units, 0, dtype=torch.float64, device=device)
        self.label_max = torch.zeros(units, 0, device=device)

    def update(self, acts: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor) -> None:
        flat = acts.flatten(2)                       # N x U x HW
        units, nbins = self.hist.shape
        peak, where = _map_max(acts)
        peak, where = peak.T.contiguous(), where.T.contiguous()  # U x N
        lab = labels.expand(units, -1)
        self.top = update_top_k(*self.top, peak, indices, [where, lab])
        spatial_mean = flat.mean(dim=2).T
        if self.mean_top is not None:
            self.mean_top = update_top_k(*self.mean_top, spatial_mean, indices, [where, lab])
        self.mean_sum += spatial_mean.double().sum(dim=1)
        self.max = torch.maximum(self.max, peak.amax(dim=1))
        # Summing bools promotes to int64, which is slow on CPU; small ints are exact up to HW.
        small = torch.int16 if flat.shape[2] < 2**15 else torch.int32
        self.positive += flat.gt(0).view(torch.uint8).sum(dim=2, dtype=small).sum(dim=0)
        bins = bin_of(peak, self.edges)
        self.hist += torch.bincount((bins + nbins * torch.arange(units, device=bins.device)[:, None]).reshape(-1),
                                    minlength=units * nbins).view(units, nbins)
        update_bin_examples(self.bin_index, self.bin_value, self.bin_pos, self.bin_fill, bins, peak, where, indices)
        known = labels >= 0
        if bool(known.any()):
            need = int(labels.max()) + 1
            if need > self.label_sum.shape[1]:
                grow = torch.zeros(units, need - self.label_sum.shape[1], dtype=torch.float64, device=peak.device)
                self.label_sum = torch.cat([self.label_sum, grow], dim=1)
                if self.label_max is not None:
                    self.label_max = torch.cat([self.label_max, torch.full_like(grow, -torch.inf, dtype=peak.dtype)], 1)
            self.label_sum.index_add_(1, labels[known], peak[:, known].double())
            if self.label_max is not None:  # the max per concept, shown beside the mean by the viewer
                known_labels = labels[known].expand(units, -1)
                self.label_max.scatter_reduce_(1, known_labels, peak[:, known], "amax")

    def to_result(self, name: str, rf) -> LayerResult:
        np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
        values, index, (pos, lab) = self.top
        extra = {}
        if self.mean_top is not None:
            mv, mi, (mp, ml) = self.mean_top
            extra = dict(mean_value=np_(mv), mean_index=np_(mi), mean_pos=np_(mp), mean_label=np_(ml))
        return LayerResult(
            name=name, height=self.height, width=self.width, rf=rf,
            top_value=np_(values), top_index=np_(index), top_pos=np_(pos), top_label=np_(lab),
            mean_sum=np_(self.mean_sum), max=np_(self.max), positive=np_(self.positive),
            hist_edges=np_(self.edges), hist_counts=np_(self.hist),
            bin_index=np_(self.bin_index), bin_value=np_(self.bin_value), bin_pos=np_(self.bin_pos),
            label_sum=np_(self.label_sum), label_max=None if self.label_max is None else np_(self.label_max), **extra,
        )

    @classmethod
    def from_result(cls, r: LayerResult, device) -> "_LayerState":
        t = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
        self = cls.__new__(cls)
        self.height, self.width = r.height, r.width
        self.top = (t(r.top_value), t(r.top_index), [t(r.top_pos), t(r.top_label)])
        self.mean_top = None if r.mean_value is None else (
            t(r.mean_value), t(r.mean_index), [t(r.mean_pos), t(r.mean_label)])
        self.mean_sum, self.max, self.positive = t(r.mean_sum), t(r.max), t(r.positive)
        self.edges, self.hist = t(r.hist_edges), t(r.hist_counts)
        self.bin_index, self.bin_value, self.bin_pos = t(r.bin_index), t(r.bin_value), t(r.bin_pos)
        self.bin_fill = (self.bin_index >= 0).sum(dim=2)
        self.label_sum = t(r.label_sum)
        # A checkpoint written before maxima were recorded resumes without them: the viewer then bounds them.
        self.label_max = None if r.label_max is None else t(r.label_max)
        return self


def _map_max(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The max of every map of ``acts`` (``N x U x H x W``) and its flat position ``h * W + w``
    (``N x U`` each): what ``acts.flatten(2).max(dim=2)`` gives, first maximum winning ties.

    Computed as a max pool over the whole map, whose CPU kernel runs along the channels of a
    channels-last batch: about 5x faster than ``max(dim=2)`` (which walks each map at a stride),
    and faster than the max alone (``amax``), so every map's position comes almost for free.
    A NaN makes the pool keep the last NaN, where ``max`` keeps the first: such batches take ``max``.
    """
    n, units, h, w = acts.shape
    peak, where = F.max_pool2d(acts, (h, w), return_indices=True)
    peak, where = peak.view(n, units), where.view(n, units)
    if bool(peak.isnan().any()):
        return acts.flatten(2).max(dim=2)
    return peak, where


def _layer_of(name: str) -> str:
    """The model layer whose activations a mined name reads: ``mixed3b/topk8x_k1`` -> ``mixed3b``."""
    return name.partition("/")[0]


def _with_features(model, layers: list[str], transform, sae, run):
    """``transform`` with the SAE of every feature layer (``LAYER/SAE``) resolved into it: a dict
    from the mined name to its transform. Unchanged when no feature layer is asked for."""
    from ..units import resolve_sae

    features = [n for n in layers if "/" in n]
    if not features:
        return transform
    if transform is not None:
        raise BadInputError(f"{features[0]!r} names SAE features, whose transform is the SAE; give transform= "
                            "only when mining plain layers")
    return {n: resolve_sae(n, sae=sae, run=run, model=model) for n in features}


def _unit_activations(model, images: torch.Tensor, layers: list[str], transform) -> dict[str, torch.Tensor]:
    acts = model.activations(images, list(dict.fromkeys(_layer_of(n) for n in layers)))
    out = {}
    for name in layers:
        a = acts[_layer_of(name)]
        fn = _transform_for(transform, name)
        if fn is not None:
            with torch.no_grad():
                a = fn(a)
        if a.dim() != 4:
            raise BadInputError(f"layer {name!r} gives shape {tuple(a.shape)}; mining needs N x units x H x W maps")
        out[name] = a.float()  # the running state is float32 whatever the model computes in (no copy when it is)
    return out


def _calibrate(model, dataset, layers, transform, count: int, batch_size: int):
    """Image-level maxima of the first ``count`` readable images of the *whole* dataset, per layer.

    Every shard sees the same images here, so every shard fixes the same histogram bins.
    """
    peaks: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    shapes: dict[str, tuple[int, int, int]] = {}
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mining pass reports unreadable files once
        for batch in iterate_batches(dataset, batch_size=min(batch_size, count)):
            if len(batch.indices) == 0:
                continue
            for name, a in _unit_activations(model, batch.images, layers, transform).items():
                shapes[name] = tuple(a.shape[1:])
                peaks[name].append(a.flatten(2).amax(dim=2).cpu())
            seen += len(batch.indices)
            if seen >= count:
                break
    if not shapes:
        raise BadInputError("no readable image in the dataset; nothing to mine")
    return {n: torch.cat(p)[:count] for n, p in peaks.items()}, shapes


def mine(
    model,
    data,
    layers: str | list[str],
    k: int = 32,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    transform: Transform | dict[str, Transform] | None = None,
    sae=None,
    run=None,
    shard: tuple[int, int] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 2048,
    restart: bool = False,
    progress: bool = True,
    mean_top_k: bool = False,
    hist_bins: int = 64,
    hist_range: tuple[float, float] | None = None,
    calibration: int = 64,
    per_bin: int = 4,
) -> MiningResult:
    """Find every unit's top-``k`` dataset examples and activation statistics in one pass.

    ``batch_size`` is part of the configuration: shards and resumed runs must use the same one
    for their results to match bit for bit. ``data``: a folder, ``"procedural"`` or a Dataset (see :func:`circuitsviz.data.as_dataset`).
    ``layers``: names; every channel of each becomes a unit. ``LAYER/SAE`` (``mixed3b/topk8x_k1``)
    mines the features of that SAE, found as ``sae=`` (the fitted SAE or its directory) or in
    ``run=`` (a run that holds it); its result is keyed by that name. ``transform`` maps a layer's
    activations ``(N, C, H, W)`` to unit activations ``(N, U, H, W)``, e.g. an SAE encoder at every
    position, so its units are features (a dict gives one per layer). ``mean_top_k`` also ranks
    images by spatial mean. Histograms use ``hist_bins`` fixed bins per unit (see
    :mod:`circuitsviz.mining.stats`); ``per_bin`` images per bin feed the quantile examples.

    >>> model = load_model("inceptionv1", pretrained=False)                       # doctest: +SKIP
    >>> result = mine(model, "~/imagenet/val", ["mixed3b", "mixed4e"], k=32)     # doctest: +SKIP
    >>> result.layers["mixed4e"].top_index[55]                                    # doctest: +SKIP
    """
    _check_mine_args(model, layers, checkpoint, shard, k=k, batch_size=batch_size, num_workers=num_workers,
                     checkpoint_every=checkpoint_every, hist_bins=hist_bins, hist_range=hist_range,
                     calibration=calibration, per_bin=per_bin)
    layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not layers:
        raise BadInputError("give at least one layer to mine")
    for name in layers:
        model.layer(_layer_of(name))  # unknown names raise with the valid ones
    transform = _with_features(model, layers, transform, sae, run)
    if k < 1 or hist_bins < 1 or per_bin < 1:
        raise BadInputError(f"k, hist_bins and per_bin must be >= 1 (got {k}, {hist_bins}, {per_bin})")
    dataset = _Pairs(as_dataset(data, model))
    inner = dataset.dataset
    config = {
        "model": model.name, "weights": model.weights_sha256 or _fingerprint(model), "input_size": model.input_size,
        "data": inner.spec() if hasattr(inner, "spec") else {"type": type(inner).__qualname__},
        "n": len(dataset), "layers": layers, "k": k, "batch_size": batch_size, "mean_top_k": mean_top_k, "hist_bins": hist_bins,
        "hist_range": list(hist_range) if hist_range else None, "calibration": calibration,
        "per_bin": per_bin, "transform": _describe(transform),
    }
    config_hash = hash_config(config)
    indices = shard_indices(len(dataset), shard, batch_size)
    device = model.device

    result = _resume(checkpoint, config_hash, shard, restart)
    if result is not None and result.complete:
        return result
    def new_states(shapes: dict, peaks: dict | None) -> dict[str, _LayerState]:
        return {n: _LayerState(shapes[n][0], shapes[n][1], shapes[n][2], k, histogram_edges(
            peaks[n] if peaks else torch.empty(0, shapes[n][0]), hist_bins, hist_range), per_bin, mean_top_k, device)
            for n in layers}

    if result is None:
        # Fixed bins need no calibration, and the first batch tells the layers' shapes: the states
        # are made then (or from a one-image probe if this slice has no readable image).
        states = {}
        if hist_range is None:
            peaks, shapes = _calibrate(model, dataset, layers, transform, max(calibration, 1), batch_size)
            states = new_states(shapes, peaks)
        fields = _fields(model, layers)
        label_count = torch.zeros(0, dtype=torch.long)
        done, n_images, skipped = 0, 0, []
    else:
        fields = {n: r.rf for n, r in result.layers.items()}
        states = {n: _LayerState.from_result(r, device) for n, r in result.layers.items()}
        label_count = torch.as_tensor(result.label_count)
        done, n_images, skipped = result.done, result.n_images, list(result.skipped)
        print(f"resuming from {checkpoint}: {done}/{len(indices)} images already mined")

    def snapshot() -> MiningResult:
        if not states:
            states.update(new_states(_calibrate(model, dataset, layers, transform, 1, batch_size)[1], None))
        return MiningResult(
            layers={n: s.to_result(n, fields[n]) for n, s in states.items()}, config=config,
            config_hash=config_hash, n_images=n_images, label_count=label_count.numpy().copy(), shard=shard,
            done=done, total=len(indices), skipped=list(skipped), classes=dataset.classes,
        )

    bar = progress_bar(len(indices), desc="mining", unit="img", initial=done, enabled=progress)
    last_saved = done
    try:
        for batch in iterate_batches(dataset, indices[done:], batch_size=batch_size, num_workers=num_workers):
            skipped += [(int(i), image_id, reason) for i, image_id, reason in batch.skipped]
            if len(batch.indices):
                acts = _unit_activations(model, batch.images, layers, transform)
                idx, lab = batch.indices.to(device), batch.labels.to(device)
                if not states:
                    states.update(new_states({n: tuple(a.shape[1:]) for n, a in acts.items()}, None))
                for name, a in acts.items():
                    states[name].update(a, idx, lab)
                # Held into the next batch's forward, these maps (~80 MB at 224 px) would keep the
                # allocator from reusing their memory there: that forward ran ~6% slower.
                acts = a = None
                known = batch.labels[batch.labels >= 0]
                if len(known):
                    need = int(known.max()) + 1
                    if need > len(label_count):
                        label_count = torch.cat([label_count, torch.zeros(need - len(label_count), dtype=torch.long)])
                    label_count += torch.bincount(known, minlength=len(label_count))
            step = len(batch.indices) + len(batch.skipped)
            done += step
            n_images += len(batch.indices)
            bar.update(step)
            if batch.skipped:
                bar.set_postfix(skipped=len(skipped))
            if checkpoint is not None and done - last_saved >= checkpoint_every:
                snapshot().save(checkpoint)
                last_saved = done
    finally:
        bar.close()
    result = snapshot()
    if checkpoint is not None:
        result.save(checkpoint)
    return result


def _check_mine_args(model, layers, checkpoint, shard, *, k, batch_size, num_workers, checkpoint_every, hist_bins,
                     hist_range, calibration, per_bin) -> None:
    if not callable(getattr(model, "activations", None)):
        raise BadInputError(f"model must be a VisionModel (load_model or wrap_model), got {type(model).__name__}")
    if not (isinstance(layers, str) or (isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers))):
        raise BadInputError(f"layers must be a layer name or a list of names, got {layers!r}")
    if shard is not None and not (isinstance(shard, (tuple, list)) and len(shard) == 2):
        raise BadInputError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if checkpoint is not None and (not isinstance(checkpoint, (str, Path)) or Path(checkpoint).is_dir()):
        raise BadInputError(f"checkpoint must be a file path, got {checkpoint!r}")
    check_int("k", k, 1, 1 << 20)
    check_int("batch_size", batch_size, 1, 1 << 16)
    check_int("num_workers", num_workers, 0, 256)
    check_int("checkpoint_every", checkpoint_every, 1)
    check_int("hist_bins", hist_bins, 1, 1 << 16)
    check_int("calibration", calibration, 0)
    check_int("per_bin", per_bin, 1, 1 << 10)
    if hist_range is not None:
        if not isinstance(hist_range, (tuple, list)) or len(hist_range) != 2:
            raise BadInputError(f"hist_range must be (low, high), got {hist_range!r}")
        lo, hi = (check_float("hist_range", v) for v in hist_range)
        if not lo < hi:
            raise BadInputError(f"hist_range must be ascending, low < high, got {hist_range!r}")


def _fields(model, layers: list[str]) -> dict:
    """Receptive fields where the graph can be traced; None (with a warning) where it cannot."""
    try:
        fields = receptive_fields(model, list(dict.fromkeys(_layer_of(n) for n in layers)))
        return {n: fields[_layer_of(n)] for n in layers}
    except BadInputError as e:
        warnings.warn(f"no receptive fields recorded: {e}", stacklevel=3)
        return {n: None for n in layers}


def _resume(checkpoint, config_hash: str, shard, restart: bool) -> MiningResult | None:
    if checkpoint is None or restart or not Path(checkpoint).exists():
        return None
    result = MiningResult.load(checkpoint)
    if result.config_hash != config_hash or result.shard != shard:
        raise BadInputError(
            f"checkpoint {checkpoint} was made with a different configuration (config {result.config_hash}, "
            f"shard {result.shard}; now {config_hash}, shard {shard}); delete it or pass restart=True "
            "(--restart) to start afresh"
        )
    return result


