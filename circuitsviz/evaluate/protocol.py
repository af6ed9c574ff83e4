"""The held-out evaluation protocol: fit on training images, score on evaluation images, beside baselines.

1. Training samples: ``per_image`` random positions of the layer per training image (one fixed
   draw, shared by every dictionary below).
2. Dictionaries fitted on those samples, ``F = expansion * C`` latents each, for every ``k`` of
   the sweep and every seed: the TopK SAE; k-means with ``F`` centroids (one per seed; ``k`` does
   not apply); a random TopK dictionary (random unit directions, encoder = decoder transpose,
   the SAE's own input scaling and centring) with the same ``F`` and ``k``.
3. Scoring on a disjoint evaluation set: each unit's image-level activation (its maximum over
   space), then mining's label scores (:func:`circuitsviz.mining.stats.polysemanticity`): concept
   count and top-``top`` purity. A unit is *scored* only when it fires on at least ``min_fires``
   evaluation images (default ``top``, so its top-k holds only images it fires on); rarer units
   are counted as rare (or silent, firing on none), never averaged in.
4. Figures per dictionary: mean concept count and monosemantic fraction (concept count 1) and
   mean purity of the scored units, purity gain over the channels, and on all evaluation
   positions FVU, L0 and the dead fraction (latents that fire nowhere). Each is reported as
   the mean over seeds with a 95% t interval.

>>> ev = evaluate_split("demo", "procedural", ks=(1, 2, 4), seeds=(0, 1, 2))   # doctest: +SKIP
>>> print(ev.table())                                                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from ..data import as_dataset, iterate_batches
from ..errors import BadInputError, check_float, check_int, check_list
from ..mining.stats import polysemanticity
from ..mining.topk import new_top_k, update_top_k
from ..sae.metrics import MetricsAccumulator
from .intervals import Interval, format_interval, mean_interval
from .kmeans import KMeans, kmeans

FIGURES = ("concept_count", "monosemantic", "purity", "purity_gain", "fvu", "l0", "dead_fraction", "scored", "rare")
METHODS = ("sae", "kmeans", "random")
SALT = "circuitsviz-eval-split"


# ----------------------------------------------------------------------------- results
@dataclass
class UnitScores:
    """Held-out scores of one set of units (the channels, or one fitted dictionary's latents)."""

    method: str                  # "channels", "sae", "kmeans" or "random"
    k: int | None                # TopK k (None: channels and k-means)
    seed: int | None
    min_fires: int
    fires: list[int]             # evaluation images each unit fires on
    concept_count: list[int]
    purity: list[float]          # top-k purity (NaN for a unit that never fires)
    concept: list[int]           # each unit's best concept (highest mean image-level activation)
    fvu: float = float("nan")    # NaN for the channels (they are the layer)
    l0: float = float("nan")
    dead_fraction: float = float("nan")

    @property
    def scored(self) -> np.ndarray:
        return np.asarray(self.fires) >= self.min_fires

    @property
    def n_rare(self) -> int:
        f = np.asarray(self.fires)
        return int(((f > 0) & (f < self.min_fires)).sum())

    @property
    def n_silent(self) -> int:
        return int((np.asarray(self.fires) == 0).sum())

    def _mean(self, values) -> float:
        v = np.asarray(values, dtype=np.float64)[self.scored]
        return float(np.nanmean(v)) if len(v) and np.isfinite(v).any() else float("nan")

    @property
    def mean_concepts(self) -> float:
        return self._mean(self.concept_count)

    @property
    def monosemantic(self) -> float:
        return self._mean(np.asarray(self.concept_count) == 1)

    @property
    def mean_purity(self) -> float:
        return self._mean(self.purity)

    def monosemantic_units(self) -> list[int]:
        """Scored units with concept count 1 (the units FV concept recovery asks about)."""
        return [u for u in range(len(self.fires)) if self.scored[u] and self.concept_count[u] == 1]

    def figures(self, channel_purity: float) -> dict[str, float]:
        return {"concept_count": self.mean_concepts, "monosemantic": self.monosemantic,
                "purity": self.mean_purity, "purity_gain": self.mean_purity - channel_purity,
                "fvu": self.fvu, "l0": self.l0, "dead_fraction": self.dead_fraction,
                "scored": float(self.scored.sum()), "rare": float(self.n_rare)}


@dataclass
class Evaluation:
    """Channels and every fitted dictionary, scored on the same evaluation images."""

    layer: str
    n_latents: int
    n_train_images: int
    n_eval_images: int
    n_train_samples: int
    min_fires: int
    train_data: dict
    eval_data: dict
    channels: UnitScores
    runs: list[UnitScores]
    seconds: float = 0.0
    fitted: dict = field(default_factory=dict, repr=False)   # (method, k, seed) -> dictionary; not saved

    @property
    def ks(self) -> list[int]:
        return sorted({r.k for r in self.runs if r.method == "sae"})

    def groups(self) -> list[tuple[str, int | None]]:
        """(method, k) rows in table order: the SAE per k, then k-means, then the random dictionary per k."""
        seen = list(dict.fromkeys((r.method, r.k) for r in self.runs))
        return sorted(seen, key=lambda g: (METHODS.index(g[0]), g[1] or 0))

    def runs_of(self, method: str, k: int | None = None) -> list[UnitScores]:
        return [r for r in self.runs if r.method == method and (k is None or r.k == k)]

    def figures(self, method: str, k: int | None = None, level: float = 0.95) -> dict[str, Interval]:
        """Every figure of ``(method, k)`` as a mean over its seeds with a ``level`` t interval."""
        runs = self.runs_of(method, k)
        if not runs:
            raise BadInputError(f"no runs of {method!r} with k={k}; have: {self.groups()}")
        per = [r.figures(self.channels.mean_purity) for r in runs]
        return {f: mean_interval([p[f] for p in per], level) for f in FIGURES}

    def targets(self, k: int | None = None) -> dict[str, bool]:
        """The demo issue's targets for the SAE at ``k`` (default: the smallest), as means over seeds."""
        k = k if k is not None else self.ks[0]
        s, r = self.figures("sae", k), self.figures("random", k) if self.runs_of("random", k) else None
        ch = self.channels
        out = {
            "concept count <= 0.5x the channels'": s["concept_count"].mean <= 0.5 * ch.mean_concepts,
            ">= 60% monosemantic": s["monosemantic"].mean >= 0.6,
            "purity gain interval > 0.05": s["purity_gain"].low > 0.05,
        }
        if r is not None:  # one line per figure, so a miss names the figure that missed
            out.update({f"beats the random dictionary on {f}": _better(f, s[f].mean, r[f].mean) for f in _BETTER})
        return out

    def table(self) -> str:
        ch = self.channels
        head = (f"held-out evaluation of {self.layer}: fitted on {self.n_train_images} images "
                f"({self.n_train_samples} samples), scored on {self.n_eval_images} other images; "
                f"a unit is scored when it fires on >= {self.min_fires} of them; mean ± 95% t interval over seeds")
        cols = ["units", "k", "seeds", "scored", "rare", "concepts", "mono", "purity", "gain", "FVU", "L0", "dead"]
        rows = [["channels", "-", "-", f"{int(ch.scored.sum())}/{len(ch.fires)}", str(ch.n_rare),
                 f"{ch.mean_concepts:.2f}", f"{ch.monosemantic:.0%}", f"{ch.mean_purity:.3f}", "-", "-", "-",
                 f"{ch.n_silent / len(ch.fires):.0%}"]]
        for method, k in self.groups():
            f = self.figures(method, k)
            n = len(self.runs_of(method, k))
            rows.append([{"sae": "SAE features", "kmeans": "k-means", "random": "random TopK"}[method],
                         "-" if k is None else str(k), str(n), f"{f['scored'].mean:.1f}/{self.n_latents}",
                         f"{f['rare'].mean:.1f}", format_interval(f["concept_count"], 2),
                         format_interval(f["monosemantic"], percent=True), format_interval(f["purity"]),
                         format_interval(f["purity_gain"]), format_interval(f["fvu"]),
                         format_interval(f["l0"], 2), format_interval(f["dead_fraction"], percent=True)])
        widths = [max(len(r[i]) for r in [cols] + rows) for i in range(len(cols))]
        fmt = lambda r: "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
        lines = [head, fmt(cols)] + [fmt(r) for r in rows]
        for name, ok in self.targets().items():
            lines.append(f"  target {'met' if ok else 'MISSED'}: {name}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able: settings, per-run scores and every (method, k) figure with its interval."""
        d = {k: v for k, v in asdict(self).items() if k != "fitted"}
        d["summary"] = {f"{m}" + (f"_k{k}" if k is not None else ""): {n: asdict(iv) for n, iv in self.figures(m, k).items()}
                        for m, k in self.groups()}
        d["channel_figures"] = {"concept_count": self.channels.mean_concepts, "monosemantic": self.channels.monosemantic,
                                "purity": self.channels.mean_purity, "scored": int(self.channels.scored.sum()),
                                "rare": self.channels.n_rare}
        d["targets"] = self.targets()
        return _json_safe(d)

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        """Back from :meth:`to_dict` (``evidence.json``), without the fitted dictionaries: its
        ``figures``, ``targets`` and ``table`` give what the study printed."""
        keep = {f.name for f in fields(UnitScores)}
        scores = lambda u: UnitScores(**{k: v for k, v in u.items() if k in keep})  # noqa: E731
        args = {f.name: d[f.name] for f in fields(cls) if f.init and f.name in d}
        args.update(channels=scores(d["channels"]), runs=[scores(r) for r in d["runs"]])
        return cls(**args)


# lower is better for these, higher for the others
_LOWER = {"concept_count", "fvu", "dead_fraction"}
_BETTER = ("concept_count", "monosemantic", "purity_gain", "fvu", "dead_fraction")


def _better(fig: str, a: float, b: float) -> bool:
    if fig == "dead_fraction" and a == b == 0:
        return True  # none dead is the floor: matching it there is the best either can do
    return a < b if fig in _LOWER else a > b


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ----------------------------------------------------------------------------- data
def hash_split(dataset, eval_fraction: float = 0.2, salt: str = SALT) -> tuple[list[int], list[int]]:
    """Deterministic (train, eval) indices: an image is held out when the hash of its id says so.

    Depends only on each image's id, so adding images never moves an old one across the split.

    >>> from circuitsviz.data.procedural import ConceptDataset
    >>> train, held = hash_split(ConceptDataset(n=1000), 0.2)
    >>> len(train) + len(held), 150 < len(held) < 250
    (1000, True)
    """
    if not 0 < eval_fraction < 1:
        raise BadInputError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    train, held = [], []
    for i in range(len(dataset)):
        h = int.from_bytes(hashlib.sha256(f"{salt}:{dataset.image_id(i)}".encode()).digest()[:8], "big")
        (held if h / 2**64 < eval_fraction else train).append(i)
    if not train or not held:
        raise BadInputError(f"the hash split of {len(dataset)} images left one side empty; use more images")
    return train, held


@torch.no_grad()
def training_samples(model, dataset, indices: Sequence[int], layer: str, per_image: int, seed: int = 0,
                     batch_size: int = 64) -> torch.Tensor:
    """``per_image`` positions of ``layer`` per image, drawn without replacement from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for batch in iterate_batches(dataset, indices, batch_size=batch_size):
        a = model.activations(batch.images.to(model.device), layer)[layer]
        n, c, h, w = a.shape
        flat = a.flatten(2).transpose(1, 2).cpu()                      # N x HW x C
        m = min(per_image, h * w)
        pos = torch.rand(n, h * w, generator=gen).argsort(1)[:, :m]
        out.append(flat.gather(1, pos[:, :, None].expand(-1, -1, c)).reshape(-1, c))
    return torch.cat(out).float()


# ----------------------------------------------------------------------------- dictionaries
def random_topk(samples: torch.Tensor, n_latents: int, k: int, seed: int, layer: str | None = None):
    """A TopK dictionary with random unit directions (encoder = decoder transpose), never trained.

    It gets the SAE's data-dependent set-up only: input scale and the geometric-median centre.
    """
    from ..sae.model import TopKSAE
    from ..sae.train import _init_from_data

    sae = TopKSAE(samples.shape[1], n_latents, k, layer=layer, name=f"random{n_latents}_k{k}_s{seed}")
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    _init_from_data(sae, samples[:16384])
    return sae.eval()


def _code(dictionary, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(code z, reconstruction x_hat) of raw samples ``x`` (N, C) for an SAE or k-means."""
    if isinstance(dictionary, KMeans):
        return dictionary.encode(x), dictionary.reconstruct(x)
    z = dictionary.encode(x)
    return z, dictionary.decode(z)


def fit_dictionaries(samples: torch.Tensor, layer: str, *, expansion: int, ks: Sequence[int], seeds: Sequence[int],
                     baselines: Sequence[str] = ("kmeans", "random"), sae_steps: int | None = None,
                     device=None, progress: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Every dictionary of the protocol, keyed ``(method, k, seed)``."""
    from ..sae import fit_sae

    n_latents = expansion * samples.shape[1]
    out: dict = {}
    for k in ks:
        for seed in seeds:
            if log:
                log(f"fitting SAE {expansion}x k={k} seed {seed} on {len(samples)} samples")
            out[("sae", k, seed)] = fit_sae(None, samples, layer, expansion=expansion, k=k, seed=seed, steps=sae_steps,
                                            device=device, progress=progress).eval()
            if "random" in baselines:
                out[("random", k, seed)] = random_topk(samples, n_latents, k, seed, layer).to(device or "cpu")
    if "kmeans" in baselines:
        for seed in seeds:
            out[("kmeans", None, seed)] = kmeans(samples.to(device or "cpu"), n_latents, seed=seed)
    return out


# ----------------------------------------------------------------------------- scoring
class _Scorer:
    """Streams evaluation batches into one unit set's top-k, label sums, firing counts and FVU."""

    def __init__(self, units: int, top: int, n_labels: int, device) -> None:
        self.top = new_top_k(units, top, device, fields=1)
        self.label_sum = torch.zeros(units, n_labels, dtype=torch.float64, device=device)
        self.fires = torch.zeros(units, dtype=torch.long, device=device)
        self.acc = MetricsAccumulator(units)

    def update(self, maps: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
               x: torch.Tensor | None = None, x_hat: torch.Tensor | None = None, z: torch.Tensor | None = None) -> None:
        peak = maps.flatten(2).amax(2).T.contiguous()                    # U x N
        lab = labels.to(peak.device)
        self.top = update_top_k(*self.top, peak, indices.to(peak.device), [lab.expand(peak.shape[0], -1)])
        known = lab >= 0
        self.label_sum.index_add_(1, lab[known], peak[:, known].double())
        self.fires += (peak > 0).sum(1)
        if x is not None:
            self.acc.update(x, x_hat, z)

    def result(self, method: str, k, seed, label_count: np.ndarray, min_fires: int, with_metrics: bool) -> UnitScores:
        values, _, (labels,) = self.top
        s = polysemanticity(labels.cpu().numpy(), self.label_sum.cpu().numpy(), label_count,
                            top_values=values.cpu().numpy())
        means = self.label_sum.cpu().numpy() / np.maximum(label_count, 1)
        scores = UnitScores(method, k, seed, min_fires, self.fires.cpu().tolist(), s["concept_count"].tolist(),
                            s["purity"].tolist(), means.argmax(1).tolist())
        if with_metrics:
            m = self.acc.result()
            scores.fvu, scores.l0, scores.dead_fraction = m.fvu, m.l0, m.dead_fraction
        return scores


@torch.no_grad()
def score_on(model, dataset, indices: Sequence[int], layer: str, dictionaries: dict, *, top: int = 32,
             min_fires: int | None = None, batch_size: int = 64) -> tuple[UnitScores, list[UnitScores]]:
    """Score the channels of ``layer`` and every dictionary on the same labelled images."""
    classes = getattr(dataset, "classes", None)
    if not classes:
        raise BadInputError("held-out polysemanticity needs labelled evaluation data (class folders or 'procedural')")
    n_labels = len(classes)
    min_fires = top if min_fires is None else int(min_fires)
    device = model.device
    width = model.channels(layer)
    channels = _Scorer(width, top, n_labels, device)
    scorers = {key: _Scorer(d.n_latents, top, n_labels, device) for key, d in dictionaries.items()}
    label_count = np.zeros(n_labels, dtype=np.int64)
    for batch in iterate_batches(dataset, indices, batch_size=batch_size):
        a = model.activations(batch.images.to(device), layer)[layer]
        n, c, h, w = a.shape
        lab = batch.labels
        label_count += np.bincount(lab[lab >= 0].numpy(), minlength=n_labels)
        channels.update(a, lab, batch.indices)
        x = a.permute(0, 2, 3, 1).reshape(-1, c)
        for key, d in dictionaries.items():
            z, x_hat = _code(d, x)
            maps = z.reshape(n, h, w, -1).permute(0, 3, 1, 2)
            scorers[key].update(maps, lab, batch.indices, x, x_hat, z)
    ch = channels.result("channels", None, None, label_count, min_fires, with_metrics=False)
    ch.dead_fraction = ch.n_silent / width
    runs = [s.result(key[0], key[1], key[2], label_count, min_fires, True) for key, s in scorers.items()]
    return ch, runs


# ----------------------------------------------------------------------------- entry point
def _check_arguments(a: dict) -> None:
    """Every argument of :func:`evaluate_split` a user types, checked before any work."""
    check_list("ks", a["ks"], int)
    check_list("seeds", a["seeds"], int)
    check_list("baselines", a["baselines"], str)
    if not a["ks"] or any(k < 1 for k in a["ks"]):
        raise BadInputError(f"ks must be a non-empty list of integers >= 1, got {a['ks']!r}")
    if not a["seeds"] or any(not 0 <= s < 2**63 for s in a["seeds"]):
        raise BadInputError(f"seeds must be a non-empty list of integers >= 0, got {a['seeds']!r}")
    check_float("eval_fraction", a["eval_fraction"], 0, 1, lo_open=True)
    check_int("expansion", a["expansion"], 1, 1024)
    for name in ("n_images", "eval_images"):
        check_int(name, a[name], 1, 10**8)
    for name in ("data_seed", "eval_seed"):
        check_int(name, a[name], 0, 2**63 - 1)
    check_int("per_image", a["per_image"], 1, 10**6)
    check_int("top", a["top"], 1, 10**6)
    check_int("min_fires", a["min_fires"], 1, 10**9, optional=True)
    check_int("sae_steps", a["sae_steps"], 1, 10**9, optional=True)
    check_int("batch_size", a["batch_size"], 1, 1 << 16)
    if a["layer"] is not None and not isinstance(a["layer"], str):
        raise BadInputError(f"layer must be a layer name, got {a['layer']!r:.80}")
    if a["log"] is not None and not callable(a["log"]):
        raise BadInputError(f"log must be a function of one message, got {a['log']!r:.80}")
    for name in ("data", "eval_data"):
        d = a[name]
        if d is None and name == "eval_data":
            continue
        if not isinstance(d, (str, os.PathLike)) and not all(hasattr(d, m) for m in ("__getitem__", "__len__", "image_id")):
            raise BadInputError(f"{name} must be a folder, 'procedural' or a dataset with image_id(i), got {d!r:.80}")


def evaluate_split(
    model="demo",
    data="procedural",
    *,
    layer: str | None = None,
    eval_data=None,
    eval_fraction: float = 0.2,
    expansion: int = 8,
    ks: Sequence[int] = (1,),
    seeds: Sequence[int] = (0, 1, 2),
    baselines: Sequence[str] = ("kmeans", "random"),
    n_images: int = 2000,
    eval_images: int = 2000,
    data_seed: int = 1,
    eval_seed: int = 2,
    per_image: int = 16,
    top: int = 32,
    min_fires: int | None = None,
    sae_steps: int | None = None,
    batch_size: int = 64,
    device=None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """Fit SAEs (every ``k`` x every seed) and baselines on training images; score all on held-out ones.

    Evaluation images: ``eval_data`` when given; for ``data="procedural"``, ``eval_images``
    images of another seed (``eval_seed``); for a folder, a deterministic hash split of its images
    (``eval_fraction`` held out; see :func:`hash_split`). ``baselines``: any of ``"kmeans"``,
    ``"random"``. Returns an :class:`Evaluation`; ``print(ev.table())`` shows it.

    >>> ev = evaluate_split("demo", ks=(1, 2), seeds=(0, 1, 2))                   # doctest: +SKIP
    >>> ev.figures("sae", 1)["monosemantic"].mean                                # doctest: +SKIP
    """
    from ..models import VisionModel, load_model

    t0 = time.time()
    _check_arguments(locals())
    bad = set(baselines) - {"kmeans", "random"}
    if bad:
        raise BadInputError(f"unknown baseline {sorted(bad)[0]!r}; valid: kmeans, random")
    if not isinstance(model, VisionModel):
        model = load_model(model, device=device, progress=progress)
    layer = layer or getattr(model, "default_layer", None) or model.layer_names[-1]
    model.layer(layer)
    procedural = isinstance(data, str) and data == "procedural"
    if procedural and eval_data is None and eval_seed == data_seed:
        raise BadInputError(f"eval_seed {eval_seed} equals data_seed: the evaluation images would be the training images")
    train_ds = as_dataset(data, model, n=n_images, seed=data_seed)
    if eval_data is not None:
        eval_ds = as_dataset(eval_data, model, n=eval_images, seed=eval_seed)
        train_idx, eval_idx = list(range(len(train_ds))), list(range(len(eval_ds)))
    elif procedural:
        eval_ds = as_dataset("procedural", model, n=eval_images, seed=eval_seed)
        train_idx, eval_idx = list(range(len(train_ds))), list(range(len(eval_ds)))
    else:
        eval_ds = train_ds
        train_idx, eval_idx = hash_split(train_ds, eval_fraction)

    say = log or (lambda _m: None)
    say(f"sampling {per_image} positions of {layer} from each of {len(train_idx)} training images")
    samples = training_samples(model, train_ds, train_idx, layer, per_image, seed=0, batch_size=batch_size)
    fitted = fit_dictionaries(samples, layer, expansion=expansion, ks=[int(k) for k in ks], seeds=list(seeds),
                              baselines=baselines, sae_steps=sae_steps, device=model.device, progress=progress, log=log)
    say(f"scoring channels and {len(fitted)} dictionaries on {len(eval_idx)} evaluation images")
    channels, runs = score_on(model, eval_ds, eval_idx, layer, fitted, top=top, min_fires=min_fires,
                              batch_size=batch_size)
    return Evaluation(layer=layer, n_latents=expansion * samples.shape[1], n_train_images=len(train_idx),
                      n_eval_images=len(eval_idx), n_train_samples=len(samples), min_fires=channels.min_fires,
                      train_data=train_ds.spec(), eval_data=eval_ds.spec(), channels=channels, runs=runs,
                      seconds=time.time() - t0, fitted=fitted)
