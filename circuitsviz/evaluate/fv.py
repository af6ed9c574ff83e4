"""FV concept recovery: does a unit's feature visualization show the concept it detects on held-out data?

For every unit that is monosemantic on the evaluation images (concept count 1, scored), render
its visualization and ask the independent judge (:mod:`circuitsviz.demo.judge`) what it shows.
Recovery is the fraction the judge labels as the unit's concept; chance is about 1 / 13. Each
row also says whether the rendered image makes the unit itself fire (for an SAE feature: a
nonzero code after its TopK somewhere in the image).

>>> ev = evaluate_split("demo", seeds=(0, 1, 2))                                   # doctest: +SKIP
>>> rec = fv_recovery(model, feature_targets(ev, mode="encoder"), steps=512)         # doctest: +SKIP
>>> rec.recovery, rec.fires                                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadInputError
from .protocol import Evaluation


@dataclass
class Target:
    """One unit to render: its id, objective, the concept it should show, and how to tell it fires."""

    unit: str
    objective: object
    concept: int
    fires: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)  # images -> (N,) bool


@dataclass
class Recovery:
    """Judge labels of the rendered visualizations of one kind of unit."""

    kind: str
    settings: dict
    rows: list[dict]                 # unit, concept, judged, confidence, hit, fires

    @property
    def recovery(self) -> float:
        return float(np.mean([r["hit"] for r in self.rows])) if self.rows else float("nan")

    @property
    def fires(self) -> float:
        v = [r["fires"] for r in self.rows if r["fires"] is not None]
        return float(np.mean(v)) if v else float("nan")

    def line(self) -> str:
        fires = "" if not np.isfinite(self.fires) else f"; the render makes the unit fire in {self.fires:.0%}"
        return (f"FV concept recovery, {self.kind}: {sum(r['hit'] for r in self.rows)}/{len(self.rows)} = "
                f"{self.recovery:.0%} (chance ~1/13){fires}")

    def to_dict(self) -> dict:
        from .protocol import _json_safe

        return _json_safe({"kind": self.kind, "settings": self.settings, "recovery": self.recovery,
                           "fires": self.fires, "rows": self.rows})


def feature_targets(ev: Evaluation, *, k: int | None = None, seed: int | None = None, mode: str = "encoder",
                    at=None, max_units: int | None = None) -> list[Target]:
    """The evaluation-monosemantic SAE features of one fitted SAE (default: smallest k, first seed)."""
    from ..optvis.sae_objectives import sae_feature

    k = k if k is not None else ev.ks[0]
    runs = ev.runs_of("sae", k)
    run = runs[0] if seed is None else next((r for r in runs if r.seed == seed), None)
    if run is None:
        raise BadInputError(f"no SAE with k={k}, seed={seed} in this evaluation; seeds: {[r.seed for r in runs]}")
    sae = ev.fitted.get(("sae", run.k, run.seed))
    if sae is None:
        raise BadInputError("this evaluation holds no fitted SAEs (loaded from JSON?); rerun evaluate_split")
    layer = ev.layer

    def fires_of(f: int):
        def fires(acts: torch.Tensor) -> torch.Tensor:
            return sae.encode(acts)[:, f].flatten(1).amax(1) > 0
        return fires

    units = run.monosemantic_units()[:max_units]
    return [Target(f"{layer}/{sae.name}:{f}", sae_feature(sae, f, mode=mode, at=at), run.concept[f], fires_of(f))
            for f in units]


def channel_targets(ev: Evaluation) -> list[Target]:
    """The evaluation-monosemantic channels (scored, concept count 1)."""
    from ..optvis import channel

    layer = ev.layer

    def fires_of(c: int):
        return lambda acts: acts[:, c].flatten(1).amax(1) > 0

    return [Target(f"{layer}:{c}", channel(layer, c), ev.channels.concept[c], fires_of(c))
            for c in ev.channels.monosemantic_units()]


def class_targets(model, layer: str = "softmax2_pre_activation_matmul") -> list[Target]:
    """One class-logit objective per class of ``model`` (the easy case: the judge's own labels)."""
    if not model.labels:
        raise BadInputError(f"model {model.name!r} has no class labels")
    return [Target(f"{layer}:{c}", _class_logit(layer, c), c, None) for c in range(len(model.labels))]


def _class_logit(layer: str, c: int):
    try:
        from ..optvis import class_logit  # the library's own, where this version has it
        return class_logit(layer, c)
    except ImportError:
        from ..optvis import objective
        return objective(lambda acts: acts[layer][:, c], layers=[layer], name=f"class_logit({layer}:{c})")


def fv_recovery(model, targets: Sequence[Target], *, judge=None, kind: str = "units", size: int | None = None,
                steps: int = 512, seed: int = 0, transforms="standard", progress: bool = False,
                fire_layer: str | None = None, judge_crop: float | None = None, images_per_unit: int = 1,
                **visualize_kw) -> Recovery:
    """Render every target, label the renders with ``judge`` (default: the shipped one), score them.

    ``fire_layer``: the layer whose activations the targets' ``fires`` read (the evaluation's layer).
    ``judge_crop``: the judge sees only the centre ``judge_crop`` of each render's side (resized to
    its input), e.g. 0.75; ``None`` shows it the whole render. Whether a render fires its unit is
    always read on the whole render. ``images_per_unit``: renders per unit (image seeds differ);
    the unit's label is the judge's mean probability over them, and ``fires`` the share that fire.
    """
    from ..demo.judge import load_judge
    from ..errors import check_float, check_int
    from ..models import VisionModel
    from ..optvis import visualize

    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, Target) for t in targets):
        raise BadInputError(f"targets must be a list of Target (see feature_targets), got {targets!r:.80}")
    if judge is not None and not isinstance(judge, VisionModel):
        raise BadInputError(f"judge must be a model (load_judge()), got {judge!r:.80}")
    check_int("size", size, 8, 4096, optional=True)
    check_int("steps", steps, 1, 10**6)
    check_int("seed", seed, 0, 2**63 - 1)
    check_float("judge_crop", judge_crop, 0, 1, lo_open=True, optional=True)
    check_int("images_per_unit", images_per_unit, 1, 64)
    if fire_layer is not None:
        if not isinstance(fire_layer, str):
            raise BadInputError(f"fire_layer must be a layer name, got {fire_layer!r:.80}")
        model.layer(fire_layer)
    if not targets:
        return Recovery(kind, {}, [])
    judge = judge or load_judge(device=model.device)
    size = size or model.input_size
    n = images_per_unit
    results = visualize(model, [t.objective for t in targets], size=size, steps=steps, seed=seed,
                        transforms=transforms, progress=progress, images_per_unit=n, **visualize_kw)
    images = torch.stack([torch.from_numpy(r.image.copy()).permute(2, 0, 1) for r in results]).float() / 255
    probs = judge_probabilities(judge, judge_view(images, judge.input_size, judge_crop))
    conf, labels = probs.reshape(len(targets), n, -1).mean(1).max(1)   # results come unit by unit
    fired: list = [None] * len(targets)
    if fire_layer is not None:
        with torch.no_grad():
            acts = model.activations(images.to(model.device), fire_layer)[fire_layer]

        def fires(i: int, t: Target):  # one render: did it fire; several: the share that did
            if t.fires is None:
                return None
            f = t.fires(acts[i * n:(i + 1) * n])
            return bool(f[0]) if n == 1 else float(f.float().mean())

        fired = [fires(i, t) for i, t in enumerate(targets)]
    rows = [{"unit": t.unit, "concept": t.concept, "judged": int(labels[i]), "confidence": float(conf[i]),
             "hit": bool(int(labels[i]) == t.concept), "fires": fired[i]} for i, t in enumerate(targets)]
    tf = transforms.settings() if hasattr(transforms, "settings") else transforms
    settings = {"steps": steps, "size": size, "seed": seed, "transforms": tf, "judge_crop": judge_crop,
                "images_per_unit": n,
                **{k: v for k, v in visualize_kw.items() if isinstance(v, (int, float, str, bool))}}
    return Recovery(kind, settings, rows)


@torch.no_grad()
def judge_probabilities(judge, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The judge's softmax over its labels for each of ``images`` (N x 3 x size x size in [0, 1])."""
    return torch.cat([judge(images[i:i + batch_size].to(judge.device)).softmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def judge_view(images: torch.Tensor, size: int, crop: float | None = None) -> torch.Tensor:
    """What the judge sees of ``images`` (N x 3 x H x W): the centre ``crop`` of each side, resized to ``size``."""
    if crop is not None and crop < 1:
        h, w = images.shape[-2:]
        ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
        top, left = (h - ch) // 2, (w - cw) // 2
        images = images[..., top:top + ch, left:left + cw]
    if images.shape[-2:] != (size, size):
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


def scaled_transforms(size: int = 64, reference: int = 224):
    """Lucid's standard transforms with pad and jitters scaled from ``reference`` px to ``size`` px."""
    from ..optvis import StandardTransforms

    base = StandardTransforms()
    r = size / reference
    return StandardTransforms(pad=max(1, round(base.pad * r)), jitter=max(1, round(base.jitter * r)),
                              jitter_after=max(1, round(base.jitter_after * r)))


def wide_transforms():
    """Wider robustness than Lucid's (pad 16, jitter 16 then 8, scale 0.7-1.3, rotation ±60°).

    The procedural concepts appear at any rotation and at scales varying about 2x, so renders
    that must survive such changes drift from textures toward whole shapes (measured in the
    evidence notes; Lucid's defaults, and those scaled down to 64 px, recover fewer concepts).
    """
    from ..optvis import StandardTransforms

    return StandardTransforms(pad=16, jitter=16, scales=tuple(round(0.7 + 0.05 * i, 2) for i in range(13)),
                              angles=tuple(range(-60, 61, 5)), jitter_after=8)


__all__ = ["Target", "Recovery", "feature_targets", "channel_targets", "class_targets", "fv_recovery",
           "judge_probabilities", "judge_view", "scaled_transforms", "wide_transforms"]
