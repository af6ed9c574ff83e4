"""The study pipeline: the whole job for one model and one dataset, into one run directory.

1. visualize every channel of the chosen layers;
2. mine dataset examples and statistics (with polysemanticity scores where labels exist);
3. fit an SAE on the SAE layer;
4. split the most polysemantic channels (or the ones named) into SAE features;
5. visualize and mine those features;
   then their circuits: weights from the layer before and the faithfulness of the top sources;
6. where labels exist, measure polysemanticity of channels against features (the ground truth).

Every step is keyed by the settings it depends on (see :mod:`circuitsviz.store.steps`): a second
call with the same settings reuses finished parts, and a killed study resumes with the same call
(mining and SAE fitting also checkpoint inside their step). A call with other settings computes
beside the old results where they have their own name (another SAE, another layer), and is
otherwise refused before any work with a one-line error naming the changed setting; pass
``overwrite=True`` (``--overwrite``) to replace the old results and everything made from them.

The pipeline is :data:`STEPS`, a list of small functions of a :class:`StudyContext`. Each runs
twice: first to check its settings against the run (``ctx.checking``: no work is done), then to work.

>>> report = study("demo", "procedural", out="runs/demo")        # doctest: +SKIP
>>> print(report.summary())                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .data import as_dataset
from .errors import BadInputError, check_int, check_list, check_path
from .models import VisionModel, load_model
from .units import Unit, sae_name


# Each setting's valid range: the range of the function that takes it (render size and steps, mine's
# k and batch, fit_sae's expansion and steps, the procedural data's n), so a study refuses at
# construction what its steps would refuse later, after minutes of work. ``None`` in sae_steps and
# sae_images means "from the data". sae_k's upper bound depends on the model: checked by validate().
SETTING_RANGES: dict[str, tuple[int, int]] = dict(
    n_images=(1, 10_000_000), data_seed=(0, 2**63 - 1), vis_size=(16, 4096), vis_steps=(1, 1_000_000),
    seed=(0, 2**63 - 1), k=(1, 1 << 20), batch_size=(1, 1 << 16), num_workers=(0, 256), sae_expansion=(1, 1024),
    sae_k=(1, 1 << 24), sae_steps=(1, 10**9), sae_images=(1, 10_000_000), sae_per_image=(1, 1 << 16),
    n_split=(0, 1 << 16), split_top=(1, 1 << 20), feature_vis=(0, 1 << 20),
)
OPTIONAL_SETTINGS = ("sae_steps", "sae_images")


def check_settings(values: dict, flags: bool = False) -> None:
    """Every setting in ``values`` an integer in its range (one line naming the first that is not:
    ``k``, or ``--k`` with ``flags``, for the command line)."""
    for name, value in values.items():
        lo, hi = SETTING_RANGES[name]
        label = "--" + name.replace("_", "-") if flags else name
        check_int(label, value, lo, hi, optional=name in OPTIONAL_SETTINGS)


@dataclass
class StudySettings:
    """Knobs of a study. The defaults suit the bundled demo model on a 2-core CPU.

    Every field is checked when the settings are made (:data:`SETTING_RANGES`), so a bad value
    fails at once, not when the study reaches the step that uses it.
    """

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
    sae_steps: int | None = 2000  # the held-out evaluation's too: 500 (fit_sae's default here) misses a target
    sae_images: int | None = None  # images the SAE samples from (default: all of the data)
    sae_per_image: int = 16       # activation positions sampled per image for the SAE
    n_split: int = 3              # channels to split when none are named: the most polysemantic
    split_top: int = 12           # features listed per split
    feature_vis: int = 8          # features per split channel to visualize

    def __post_init__(self) -> None:
        check_settings(self.values())

    def values(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
    evidence: dict | None = None          # held-out table, sparsity sweep, FV recovery (circuitsviz.evaluate)

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
        if self.evidence is not None:
            from .evaluate import Evidence

            lines.append(Evidence.from_dict(self.evidence).summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _log(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def validate(model: VisionModel, layers: list[str], channels: list[int] | None, sae_layer: str,
             settings: StudySettings | None = None, vis_channels: list[int] | None = None) -> None:
    """Fail before any work on layers or channels the model does not have, or settings out of range."""
    for layer in layers + [sae_layer]:
        model.layer(layer)
    for c in channels or []:
        model.check_channel(sae_layer, c)
    for layer in layers:
        for c in vis_channels or []:
            model.check_channel(layer, c)
    s = settings or StudySettings()
    if not isinstance(s, StudySettings):
        raise BadInputError(f"settings must be a StudySettings, got {s!r:.80}")
    check_settings(s.values())  # again: a field may have been changed since it was made
    latents = s.sae_expansion * model.channels(sae_layer)
    if s.sae_k > latents:
        raise BadInputError(f"--sae-k {s.sae_k} is more than the SAE's {latents} features "
                            f"({s.sae_expansion} x {model.channels(sae_layer)} channels of {sae_layer}); "
                            f"valid: 1..{latents}")


def _check_data(dataset, s: StudySettings, latents: int) -> None:
    """The data can be read and holds enough samples for the SAE: checked before any work."""
    if len(dataset) == 0:
        raise BadInputError("the data holds no images")
    for i in range(min(len(dataset), 8)):
        try:
            dataset[i]
            break
        except (OSError, ValueError):  # one bad file is skipped by mining; eight in a row is bad data
            continue
    else:
        raise BadInputError(f"none of the first images of {dataset.spec() if hasattr(dataset, 'spec') else 'the data'} "
                            "can be read")
    samples = int((s.sae_images or len(dataset)) * s.sae_per_image * 0.95)
    if samples < latents:
        raise BadInputError(f"about {samples} activation samples for an SAE with {latents} features; it needs more "
                            "samples than features: raise --sae-images/--sae-per-image or lower --sae-expansion")


@dataclass
class StudyContext:
    """What the steps share: the inputs, the run, the settings, and what earlier steps made."""

    model: VisionModel
    dataset: object
    run: object
    layers: list[str]
    sae_layer: str
    channels: list[int] | None
    vis_channels: list[int] | None
    settings: StudySettings
    progress: bool = True
    overwrite: bool = False
    checking: bool = True         # the first pass: check settings against the run, do no work
    computed: bool = False        # some step did work in this call
    sae: object = None            # the fitted SAE, once its step ran
    split_channels: list[int] = field(default_factory=list)
    split_features: list[list[str]] = field(default_factory=list)

    @property
    def sae_name(self) -> str:
        return sae_name("topk", self.settings.sae_expansion, self.settings.sae_k)

    @property
    def sae_slot(self) -> str:
        return f"{self.sae_layer}/{self.sae_name}"

    def vis_settings(self, **extra) -> dict:
        """The visualization step's settings; ``extra``: a kind's own (``diversity``, ...)."""
        from .store.steps import planned_vis_key

        return planned_vis_key(size=self.settings.vis_size, steps=self.settings.vis_steps, seed=self.settings.seed,
                               **{k: v for k, v in extra.items() if k != "negative"})

    def sae_settings(self) -> dict:
        from .sae import Sampler
        from .store.steps import sae_key

        s = self.settings
        return sae_key(kind="topk", expansion=s.sae_expansion, k=s.sae_k, steps=s.sae_steps, seed=s.seed,
                       sampler=Sampler("per_image", per_image=s.sae_per_image),
                       n_images=s.sae_images or len(self.dataset))

    def state(self, step: str, key: str, settings: dict, what: str) -> str:
        """``"same"`` (finished with these settings), ``"new"`` (not yet, or begun with them) or
        ``"changed"`` (other settings, and ``overwrite``); other settings without it raise."""
        rec = self.run.step(step, key)
        if rec is None:
            return "new"
        if self.run.check_step(step, key, settings, overwrite=self.overwrite, what=what):
            return "same"
        return "changed" if rec.settings != settings else "new"

    def todo(self, step: str, key: str, settings: dict, what: str) -> bool:
        """Whether ``step`` for ``key`` needs work now (never while checking); logs a reuse."""
        state = self.state(step, key, settings, what)
        if self.checking:
            return False
        if state == "same":
            _log(f"{what}: done already")
            return False
        self.computed = True
        return True


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
    overwrite: bool = False,
    evaluate: bool = False,
) -> StudyReport:
    """Visualize, mine, fit an SAE, split polysemantic channels and measure it, into ``out``.

    ``channels``: the channels of ``sae_layer`` to split (default: the ``n_split`` most
    polysemantic). ``vis_channels``: restrict channel visualizations to these (default: every
    channel of every layer; on InceptionV1's mixed4e that is 832 renders, a GPU job).
    ``overwrite``: replace results the run holds for other settings (else they are refused).
    ``evaluate``: also run the held-out evaluation (:func:`circuitsviz.evaluate.evidence`: SAE seeds
    and sparsity sweep against k-means and random baselines on other images, FV concept recovery);
    ``circuitsviz demo`` turns it on. It is saved in ``out/evidence.json`` and in ``report.json``.
    """
    from .store import open_run

    check_path("out", out)
    for name, value, item in (("layers", layers, str), ("channels", channels, int), ("vis_channels", vis_channels, int)):
        check_list(name, value, item, optional=True)
    t0 = time.time()
    settings = settings or StudySettings()
    if isinstance(model, str):
        model = load_model(model, pretrained=pretrained, weights=weights, device=device, progress=progress)
    layers = list(dict.fromkeys(layers or [model.default_layer or model.layer_names[-1]]))
    sae_layer = sae_layer or layers[-1]
    validate(model, layers, channels, sae_layer, settings, vis_channels)
    dataset = as_dataset(data, model, n=settings.n_images, seed=settings.data_seed)
    _check_data(dataset, settings, settings.sae_expansion * model.channels(sae_layer))

    out = Path(out)
    run = open_run(out, create=True)
    ctx = StudyContext(model, dataset, run, layers, sae_layer, channels, vis_channels, settings, progress, overwrite)
    run.check_inputs(model, dataset, overwrite=overwrite)
    for step in STEPS:  # every step checks its settings against the run before any work
        step(ctx)
    ctx.checking = False
    run.add_model(model, overwrite=overwrite)
    run.add_data(dataset, overwrite=overwrite)
    run.set_settings("study", {"layers": layers, "sae_layer": sae_layer, "channels": channels,
                               "vis_channels": vis_channels, **asdict(settings)})
    for step in STEPS:
        step(ctx)

    report = measure(run, sae_layer, ctx.sae_name, ctx.split_channels)
    if evaluate and getattr(dataset, "classes", None):
        from .evaluate import evidence

        ks = sorted({1, 2, 4, settings.sae_k})
        report.evidence = evidence(model, data, out=out, expansion=settings.sae_expansion, ks=ks,
                                   n_images=settings.n_images, data_seed=settings.data_seed,
                                   per_image=settings.sae_per_image, top=settings.k, sae_steps=settings.sae_steps,
                                   progress=progress,
                                   log=_log).to_dict()
    report.out = str(out)
    report.seconds = _seconds(out / "report.json", time.time() - t0, ctx.computed)
    from .store.blobs import atomic_write

    atomic_write(out / "report.json", json.dumps(report.to_dict(), indent=2).encode())
    return report


def _seconds(path: Path, elapsed: float, computed: bool) -> float:
    """The compute time of everything in the run: a re-run adds its own, a re-run that reuses all adds none."""
    before = json.loads(path.read_text()).get("seconds", 0.0) if path.exists() else 0.0
    return before + elapsed if computed or not before else before


# ---------------------------------------------------------------------------------- steps
def visualize_channels(ctx: StudyContext) -> None:
    """Feature visualizations of the channels of every layer."""
    from .store.publish import vis_slot

    for layer in ctx.layers:
        ids = [Unit(layer, c).id for c in (ctx.vis_channels if ctx.vis_channels is not None
                                            else range(ctx.model.channels(layer)))]
        _visualize(ctx, vis_slot(Unit(layer, 0), "positive"), f"visualizations of {layer}", ids)


def _visualize(ctx: StudyContext, slot: str, what: str, ids: list[str], **extra) -> None:
    """Render ``ids`` at the study's settings; ``extra``: the kind's own (``negative=True``, ``diversity=w``)."""
    s = ctx.settings
    ctx.state("vis", slot, ctx.vis_settings(**extra), what)  # other settings: refused now, before any work
    if ctx.checking or not ids:
        return
    n = ctx.run.visualize(ctx.model, ids, size=s.vis_size, steps=s.vis_steps, seed=s.seed, progress=ctx.progress,
                          overwrite=ctx.overwrite, **extra)
    if n:
        ctx.computed = True
        _log(f"{what}: rendered {n} images ({s.vis_steps} steps, {s.vis_size} px)")
    else:
        _log(f"{what}: done already")


def mine_channels(ctx: StudyContext) -> None:
    """Dataset examples and statistics of every channel: one pass over the data for the layers to do."""
    from .store.steps import planned_mining_key

    key = planned_mining_key(k=ctx.settings.k)
    todo = [layer for layer in ctx.layers if ctx.todo("mine", layer, key, f"dataset examples of {layer}")]
    if todo:
        _log(f"mining {len(ctx.dataset)} images for {', '.join(todo)} (top {ctx.settings.k})")
        _mine(ctx, todo)


def _mine(ctx: StudyContext, layers: list[str]) -> None:
    s = ctx.settings
    for result in ctx.run.mine(ctx.model, ctx.dataset, layers, k=s.k, batch_size=s.batch_size,
                               num_workers=s.num_workers, progress=ctx.progress, actmaps=True,
                               overwrite=ctx.overwrite):
        if result.skipped:
            _log(f"skipped {len(result.skipped)} unreadable images")


def fit(ctx: StudyContext) -> None:
    """An SAE on the SAE layer, named by :func:`~circuitsviz.units.sae_name`."""
    from .sae import Sampler, fit_sae

    s, layer, name = ctx.settings, ctx.sae_layer, ctx.sae_name
    key = ctx.sae_settings()
    if not ctx.todo("sae", ctx.sae_slot, key, f"SAE {ctx.sae_slot}"):
        if not ctx.checking:
            ctx.sae = ctx.run.load_sae(name, layer, model=ctx.model, device=ctx.model.device)
        return
    _log(f"fitting SAE {ctx.sae_slot} ({s.sae_expansion}x expansion, k={s.sae_k})")
    path = ctx.run.sae_dir(layer, name)
    with ctx.run.lock(f"sae:{layer}"):  # another study or fit-sae on this layer finishes first
        rec = ctx.run.step("sae", ctx.sae_slot)
        if rec is not None and rec.complete and rec.settings == key:  # ... and may have fit this very SAE
            ctx.sae = ctx.run.load_sae(name, layer, model=ctx.model, device=ctx.model.device)
            return
        if rec is None or rec.settings != key:  # files of a replaced SAE: its checkpoint must not resume
            shutil.rmtree(path, ignore_errors=True)
        ctx.run.begin_step("sae", ctx.sae_slot, key)
        sae = fit_sae(ctx.model, ctx.dataset, layer, expansion=s.sae_expansion, k=s.sae_k, steps=s.sae_steps,
                      n_images=s.sae_images or len(ctx.dataset), seed=s.seed,
                      sampler=Sampler("per_image", per_image=s.sae_per_image), cache_root=ctx.run.activations_dir,
                      out=path, name=name, progress=ctx.progress)
        ctx.run.add_sae(sae, path=path, settings=key, overwrite=ctx.overwrite)
    ctx.sae = sae
    _log("SAE held-out metrics: " + ", ".join(f"{k} {v:.3g}" for k, v in sae.metrics.items() if isinstance(v, float)))


def split(ctx: StudyContext) -> None:
    """Split the named channels, or the most polysemantic, into the SAE's features."""
    from .sae import split_channel

    if ctx.checking:
        return  # a split is a view of the SAE and the data (both checked): other settings recompute it
    s = ctx.settings
    ctx.split_channels = ctx.channels or _most_polysemantic(ctx.run, ctx.sae_layer, s.n_split)
    for c in ctx.split_channels:
        rec = ctx.run.step("split", f"{ctx.sae_slot}:{c}")
        old = ctx.run.split(ctx.sae_layer, c, ctx.sae_name)
        # a split stored before runs kept its totals (store schema < 5) is split again, to record them
        if rec is not None and rec.complete and rec.settings == {"top": s.split_top} and old is not None \
                and old.explained is not None:
            _log(f"split of {ctx.sae_layer}:{c}: done already")
        else:
            ctx.computed = True
            result = split_channel(ctx.sae, c, data=ctx.dataset, model=ctx.model, top=s.split_top)
            ctx.run.add_split(result, settings={"top": s.split_top})
            _log(result.table())
        found = ctx.run.split(ctx.sae_layer, c, ctx.sae_name)
        ctx.split_features.append([f.unit_id for f in found.features] if found else [])


def mine_features(ctx: StudyContext) -> None:
    """Dataset examples and statistics of every SAE feature."""
    from .store.steps import planned_mining_key

    key = planned_mining_key(k=ctx.settings.k, sae_settings=ctx.sae_settings())
    if ctx.todo("mine", ctx.sae_slot, key, f"dataset examples of {ctx.sae_slot}"):
        _log(f"mining {ctx.sae.n_latents} features of {ctx.sae_slot}")
        _mine(ctx, [ctx.sae_slot])


def visualize_features(ctx: StudyContext) -> None:
    """Feature visualizations of the top features of each split, along their decoder directions."""
    from .store.publish import vis_slot

    wanted = list(dict.fromkeys(u for ranked in ctx.split_features for u in ranked[: ctx.settings.feature_vis]))
    _visualize(ctx, vis_slot(Unit(ctx.sae_layer, 0, sae=ctx.sae_name), "positive"),
               f"visualizations of {ctx.sae_slot}", wanted)


# The unit page's other views of a split channel, beside its positive render: what minimises it,
# several different images that excite it (Lucid's diversity objective at a weight from its
# examples, FACTS.md), and the one neuron at the centre of its feature map.
SPLIT_CHANNEL_VIS = {"negative": dict(negative=True), "diversity": dict(diversity=100.0), "neuron": {}}


def visualize_split_channels(ctx: StudyContext) -> None:
    """Negative, diversity and centre-neuron renders of each split channel."""
    from .store.publish import vis_slot

    layer = ctx.sae_layer
    centre = None if ctx.checking else _centre(ctx.model, layer, ctx.settings.vis_size)
    for kind, extra in SPLIT_CHANNEL_VIS.items():
        ids = [Unit(layer, c, pos=centre if kind == "neuron" else None).id for c in ctx.split_channels]
        _visualize(ctx, vis_slot(Unit(layer, 0), kind),
                   f"{kind} visualizations of the split channels of {layer}", ids, **extra)


def _centre(model, layer: str, size: int) -> tuple[int, int]:
    """The centre of ``layer``'s feature map for a ``size`` px image (where a render is scored),
    as ``circuitsviz visualize --neuron`` picks it at the model's own size."""
    shape = model.layer_shapes([layer], input_size=size)[layer]
    return shape[1] // 2, shape[2] // 2


def prerender_examples(ctx: StudyContext) -> None:
    """Draw the example crops of the split channels and their features now, into the user's render
    cache, so the viewer's first look at the compare, unit and feature pages draws nothing."""
    from .store.render import prerender

    if ctx.checking:
        return
    ids = [Unit(ctx.sae_layer, c).id for c in ctx.split_channels]
    ids += [u for ranked in ctx.split_features for u in ranked if u not in ids]
    t0 = time.time()
    n = prerender(ctx.run, ids)
    _log(f"example views of {len(ids)} split units ready ({n} views, {time.time() - t0:.1f} s)")


def circuits(ctx: StudyContext) -> None:
    """Circuits (weights from the layer before) and faithfulness of each split channel and its top features."""
    from .circuits.study import circuits_step

    circuits_step(ctx)


# The pipeline, in order. A step is a function of the context; add one to extend the study.
STEPS: list[Callable[[StudyContext], None]] = [
    visualize_channels, mine_channels, fit, split, mine_features, visualize_features, visualize_split_channels,
    prerender_examples, circuits,
]


def _most_polysemantic(run, layer: str, n: int) -> list[int]:
    scored = []
    for uid, st in run.layer_stats(layer).items():
        unit = Unit.parse(uid)
        if unit.sae is not None:
            continue
        cc = (st.scores or {}).get("concept_count")
        scored.append(((cc if cc is not None else 0, st.max or 0.0), unit.index))
    scored.sort(key=lambda t: (-t[0][0], -t[0][1], t[1]))
    return [c for _, c in scored[:n]]


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
