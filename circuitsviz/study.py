"""The study pipeline: the whole job for one model and one dataset, into one run directory.

1. visualize every channel of the chosen layers;
2. mine dataset examples and statistics (with polysemanticity scores where labels exist);
3. fit an SAE on the SAE layer;
4. split the most polysemantic channels (or the ones named) into SAE features;
5. visualize and mine those features;
6. where labels exist, measure polysemanticity of channels against features (the ground truth).

Each step records itself as done in the run, so a second call reuses finished parts, and a killed
study resumes with the same call (mining and SAE fitting also checkpoint inside their step).

>>> report = study("demo", "procedural", out="runs/demo")        # doctest: +SKIP
>>> print(report.summary())                                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import as_dataset
from .errors import check_list, check_path
from .models import VisionModel, load_model
from .units import Unit


@dataclass
class StudySettings:
    """Knobs of a study. The defaults suit the bundled demo model on a 2-core CPU."""

    n_images: int = 2000          # procedural data only: how many images to generate
    data_seed: int = 1            # procedural data only (the demo model trained on other seeds)
    vis_size: int = 64
    vis_steps: int = 128
    seed: int = 0
    k: int = 32                   # top-k dataset examples per unit
    batch_size: int = 64
    num_workers: int = 0
    sae_expansion: int = 8
    sae_k: int = 1
    sae_steps: int | None = None
    sae_images: int | None = None  # images the SAE samples from (default: all of the data)
    sae_per_image: int = 16       # activation positions sampled per image for the SAE
    n_split: int = 3              # channels to split when none are named: the most polysemantic
    split_top: int = 12           # features listed per split
    feature_vis: int = 8          # features per split channel to visualize


@dataclass
class Scores:
    """Polysemanticity of one group of units (channels, or SAE features that fire)."""

    ids: list[str]
    concept_count: list[int]
    purity: list[float]

    @property
    def mean_concepts(self) -> float:
        return float(np.mean(self.concept_count)) if self.ids else float("nan")

    @property
    def mean_purity(self) -> float:
        return float(np.nanmean(self.purity)) if np.isfinite(self.purity).any() else float("nan")

    @property
    def monosemantic(self) -> float:
        return float(np.mean(np.asarray(self.concept_count) == 1)) if self.ids else float("nan")


@dataclass
class SplitSummary:
    channel: str
    concept_count: int
    purity: float
    explained: float                      # share of the channel's activation the listed features write
    features: list[dict] = field(default_factory=list)  # unit_id, share, concept_count, purity


@dataclass
class StudyReport:
    out: str
    layer: str
    sae: str | None
    channels: Scores | None = None
    features: Scores | None = None
    splits: list[SplitSummary] = field(default_factory=list)
    dead_channels: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"study of {self.layer} -> {self.out} ({self.seconds:.0f} s)"]
        if self.channels is None:
            lines.append("  no labels in the data: polysemanticity scores need labelled data")
            return "\n".join(lines)
        c, f = self.channels, self.features
        lines.append(f"  channels: {len(c.ids)}, dead {len(self.dead_channels)}; mean concept count "
                     f"{c.mean_concepts:.2f}, mean top-k purity {c.mean_purity:.2f}, monosemantic {c.monosemantic:.0%}")
        if f is not None:
            ratio = f.mean_concepts / c.mean_concepts if c.mean_concepts else float("nan")
            lines.append(f"  SAE features that fire: {len(f.ids)}; mean concept count {f.mean_concepts:.2f} "
                         f"({ratio:.2f}x the channels'), mean top-k purity {f.mean_purity:.2f} "
                         f"({f.mean_purity - c.mean_purity:+.2f}), monosemantic {f.monosemantic:.0%}")
        for s in self.splits:
            lines.append(f"  split {s.channel}: concept count {s.concept_count}, purity {s.purity:.2f}; "
                         f"its top features explain {s.explained:.0%} of its activation")
            for feat in s.features:
                lines.append(f"    {feat['unit_id']:<24} share {feat['share']:6.1%}  concepts {feat['concept_count']}"
                             f"  purity {feat['purity']:.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _log(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def _sae_name(settings: StudySettings, kind: str = "topk") -> str:
    return f"{kind}{settings.sae_expansion}x_k{settings.sae_k}"


def validate(model: VisionModel, layers: list[str], channels: list[int] | None, sae_layer: str) -> None:
    """Fail before any work on layers or channels the model does not have."""
    for layer in layers + [sae_layer]:
        model.layer(layer)
    for c in channels or []:
        model.check_channel(sae_layer, c)


def study(
    model: str | VisionModel = "demo",
    data="procedural",
    *,
    out: str | Path,
    layers: list[str] | None = None,
    channels: list[int] | None = None,
    vis_channels: list[int] | None = None,
    sae_layer: str | None = None,
    settings: StudySettings | None = None,
    pretrained: bool = True,
    weights: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> StudyReport:
    """Visualize, mine, fit an SAE, split polysemantic channels and measure it, into ``out``.

    ``channels``: the channels of ``sae_layer`` to split (default: the ``n_split`` most
    polysemantic). ``vis_channels``: restrict channel visualizations to these (default: every
    channel of every layer; on InceptionV1's mixed4e that is 832 renders, a GPU job).
    """
    from .store import open_run

    check_path("out", out)
    for name, value, item in (("layers", layers, str), ("channels", channels, int), ("vis_channels", vis_channels, int)):
        check_list(name, value, item, optional=True)
    t0 = time.time()
    settings = settings or StudySettings()
    if isinstance(model, str):
        model = load_model(model, pretrained=pretrained, weights=weights, device=device, progress=progress)
    layers = list(layers or [model.default_layer or model.layer_names[-1]])
    sae_layer = sae_layer or layers[-1]
    validate(model, layers, channels, sae_layer)
    for layer in layers:
        for c in vis_channels or []:
            model.check_channel(layer, c)
    dataset = as_dataset(data, model, n=settings.n_images, seed=settings.data_seed)

    out = Path(out)
    run = open_run(out, create=True)
    run.set_info(model=model.name, weights_sha256=model.weights_sha256, input_size=model.input_size,
                 settings={"layers": layers, "sae_layer": sae_layer, "channels": channels, **asdict(settings)})
    run.set_data_source(dataset.spec(), classes=getattr(dataset, "classes", None))
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)

    for layer in layers:
        _visualize_channels(model, run, layer, settings, progress, vis_channels)
    _mine_channels(model, run, dataset, layers, settings, work, progress)
    sae = _fit_sae(model, run, dataset, sae_layer, settings, work, progress)
    chosen = channels if channels else _most_polysemantic(run, model, sae_layer, settings.n_split)
    splits = [_split(model, run, dataset, sae, c, settings) for c in chosen]
    _mine_features(model, run, dataset, sae, settings, work, progress)
    _visualize_features(model, run, sae, splits, settings, progress)

    report = measure(run, sae_layer, sae.name, chosen)
    report.out, report.seconds = str(out), time.time() - t0
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


# ---------------------------------------------------------------------------------- steps
def _visualize_channels(model, run, layer: str, s: StudySettings, progress: bool,
                        only: list[int] | None = None) -> None:
    from .optvis import visualize

    ids = [Unit(layer, c).id for c in (only if only is not None else range(model.channels(layer)))]
    todo = [u for u in ids if not run.is_done("vis", u)]
    if not todo:
        _log(f"visualizations of {layer}: done already")
        return
    _log(f"visualizing {len(todo)} channels of {layer} ({s.vis_steps} steps, {s.vis_size} px)")
    run.add_units([{"id": u, "layer": layer, "index": Unit.parse(u).index, "kind": "channel"} for u in ids])
    results = visualize(model, todo, size=s.vis_size, steps=s.vis_steps, seed=s.seed, progress=progress)
    with run.batch():
        for uid, r in zip(todo, results):
            run.put_visualization(uid, r.image, kind="positive", objective=r.objective, settings=r.settings)
            run.mark_done("vis", uid)


def _mine_channels(model, run, dataset, layers, s: StudySettings, work: Path, progress: bool) -> None:
    from .mining import mine, write_to_run

    key = ",".join(layers)
    if run.is_done("mine", key):
        _log(f"dataset examples of {key}: done already")
        return
    _log(f"mining {len(dataset)} images for {key} (top {s.k})")
    result = mine(model, dataset, layers, k=s.k, batch_size=s.batch_size, num_workers=s.num_workers,
                  checkpoint=work / f"mine-{_slug(key)}.ckpt", progress=progress)
    if result.skipped:
        _log(f"skipped {len(result.skipped)} unreadable images (listed in the run's report)")
    write_to_run(result, run, dataset, model=model, actmaps=True)
    run.mark_done("mine", key)


def _fit_sae(model, run, dataset, layer: str, s: StudySettings, work: Path, progress: bool):
    from .sae import Sampler, fit_sae, load_sae

    name = _sae_name(s)
    path = work / "sae" / name
    if run.is_done("sae", name):
        _log(f"SAE {name} on {layer}: done already")
        return load_sae(path, model=model, layer=layer, device=model.device)
    _log(f"fitting SAE {name} on {layer} ({s.sae_expansion}x expansion, k={s.sae_k})")
    sae = fit_sae(model, dataset, layer, expansion=s.sae_expansion, k=s.sae_k, steps=s.sae_steps,
                  n_images=s.sae_images or len(dataset), seed=s.seed,
                  sampler=Sampler("per_image", per_image=s.sae_per_image), cache_root=work / "cache",
                  out=path, name=name, progress=progress)
    metrics = sae.metrics.to_dict() if hasattr(sae.metrics, "to_dict") else dict(sae.metrics)
    run.put_sae(name, layer, config=sae.config.to_dict(), metrics=metrics, path=str(path))
    run.mark_done("sae", name)
    _log("SAE held-out metrics: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, float)))
    return sae


def _most_polysemantic(run, model, layer: str, n: int) -> list[int]:
    stats = run.layer_stats(layer)
    scored = []
    for uid, st in stats.items():
        unit = Unit.parse(uid)
        if unit.sae is not None:
            continue
        cc = (st.scores or {}).get("concept_count")
        key = (cc if cc is not None else 0, st.max or 0.0)
        scored.append((key, unit.index))
    scored.sort(key=lambda t: (-t[0][0], -t[0][1], t[1]))
    return [c for _, c in scored[:n]]


def _split(model, run, dataset, sae, channel: int, s: StudySettings) -> list[str]:
    """Split ``channel`` into SAE features; return the ranked feature unit ids."""
    from .sae import split_channel

    key = f"{sae.layer}:{channel}"
    if run.is_done("split", key):
        _log(f"split of {key}: done already")
        return [f.unit_id for f in run.split(sae.layer, channel, sae.name).features]
    result = split_channel(sae, channel, data=dataset, model=model, top=s.split_top)
    with run.batch():
        run.add_units([{"id": f.unit_id, "layer": sae.layer, "index": f.feature, "kind": "feature", "sae": sae.name}
                       for f in result.features])
        run.put_split(sae.layer, channel, sae=sae.name, features=result.to_store_rows())
    run.mark_done("split", key)
    _log(result.table())
    return [f.unit_id for f in result.features]


def _mine_features(model, run, dataset, sae, s: StudySettings, work: Path, progress: bool) -> None:
    from .mining import mine, write_to_run

    key = f"{sae.layer}/{sae.name}"
    if run.is_done("mine", key):
        _log(f"dataset examples of {key}: done already")
        return
    _log(f"mining {sae.n_latents} features of {key}")
    result = mine(model, dataset, [sae.layer], k=s.k, batch_size=s.batch_size, num_workers=s.num_workers,
                  transform=sae, checkpoint=work / f"mine-{_slug(key)}.ckpt", progress=progress)
    with run.batch():
        run.add_units([{"id": Unit(sae.layer, f, sae=sae.name).id, "layer": sae.layer, "index": f,
                        "kind": "feature", "sae": sae.name} for f in range(sae.n_latents)])
        for f in range(sae.n_latents):
            w = sae.decoder_direction(f).cpu()
            top = torch.argsort(w.abs(), descending=True)[:8]
            run.put_feature(Unit(sae.layer, f, sae=sae.name).id, sae=sae.name,
                            decoder_top=[(int(c), float(w[c])) for c in top])
    write_to_run(result, run, dataset, sae=sae.name, model=model, actmaps=True, transform=sae)
    run.mark_done("mine", key)


def _visualize_features(model, run, sae, splits, s: StudySettings, progress: bool) -> None:
    from .optvis import direction, visualize

    wanted = []
    for ranked in splits:
        for uid in ranked[: s.feature_vis]:
            if uid not in wanted and not run.is_done("vis", uid):
                wanted.append(uid)
    if not wanted:
        return
    _log(f"visualizing {len(wanted)} SAE features along their decoder directions")
    objectives = [direction(sae.layer, sae.decoder_direction(Unit.parse(u).index)) for u in wanted]
    results = visualize(model, objectives, size=s.vis_size, steps=s.vis_steps, seed=s.seed, progress=progress)
    with run.batch():
        for uid, r in zip(wanted, results):
            run.put_visualization(uid, r.image, kind="positive", objective=r.objective, settings=r.settings)
            run.mark_done("vis", uid)


# ---------------------------------------------------------------------------------- measurement
def _scores(stats: dict) -> Scores:
    ids, cc, pur = [], [], []
    for uid, st in sorted(stats.items(), key=lambda t: Unit.parse(t[0]).index):
        sc = st.scores or {}
        if "concept_count" not in sc:
            continue
        ids.append(uid)
        cc.append(int(sc["concept_count"]))
        purity = sc.get("purity")
        pur.append(float("nan") if purity is None else float(purity))  # None: never fires in its top-k
    return Scores(ids, cc, pur)


def measure(run, layer: str, sae: str | None, split_channels: list[int]) -> StudyReport:
    """Concept count and top-k purity of the layer's channels and of the SAE features that fire."""
    report = StudyReport(out=str(run.path), layer=layer, sae=sae)
    ch_stats = {u: st for u, st in run.layer_stats(layer).items() if Unit.parse(u).sae is None}
    report.dead_channels = [u for u, st in ch_stats.items() if (st.frac_positive or 0.0) < 0.01]
    channels = _scores(ch_stats)
    if not channels.ids:
        return report
    report.channels = channels
    if sae is None:
        return report
    feat_stats = {f.id: run.stats(f.id) for f in run.units(layer=layer, kind="feature", sae=sae)}
    alive = {u: st for u, st in feat_stats.items() if st is not None and (st.max or 0.0) > 0}
    report.features = _scores(alive)
    by_id = dict(zip(report.features.ids, zip(report.features.concept_count, report.features.purity)))
    ch_by_index = {Unit.parse(u).index: (cc, p) for u, cc, p in zip(channels.ids, channels.concept_count, channels.purity)}
    for c in split_channels:
        sp = run.split(layer, c, sae)
        if sp is None:
            continue
        cc, pur = ch_by_index.get(c, (0, float("nan")))
        feats = [dict(unit_id=f.unit_id, share=f.share, concept_count=by_id.get(f.unit_id, (0, 0.0))[0],
                      purity=by_id.get(f.unit_id, (0, 0.0))[1]) for f in sp.features]
        report.splits.append(SplitSummary(Unit(layer, c).id, cc, pur, sum(f["share"] for f in feats), feats))
    return report


def _slug(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]
