"""The study's evidence: the held-out table, the sparsity sweep and FV concept recovery, saved once.

:func:`evidence` runs :func:`evaluate_split` (every ``k`` of the sweep, every seed, with the
baselines) and, for the demo model, :func:`fv_recovery` of the evaluation-monosemantic SAE
features (every seed, first ``k``: 4 renders per unit, the judge's mean probability over their
centre 3/4), channels and class logits. The result is written to
``out/evidence.json`` with the settings that made it; a later call with the same settings reads
it back instead of recomputing.

>>> ev = evidence(model, "procedural", out="runs/demo", ks=(1, 2, 4))      # doctest: +SKIP
>>> print(ev.summary())                                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .fv import channel_targets, class_targets, feature_targets, fv_recovery, wide_transforms
from .intervals import Interval, format_interval, mean_interval
from .protocol import evaluate_split

FILE = "evidence.json"
FEATURES = "SAE features"
FV_TRANSFORMS = {"standard": lambda: "standard", "wide": wide_transforms}


@dataclass
class Evidence:
    settings: dict
    evaluation: dict                    # Evaluation.to_dict()
    table: str
    recovery: list[dict] = field(default_factory=list)   # Recovery.to_dict() per kind

    def summary(self) -> str:
        lines = [self.table]
        for r in self.recovery:
            hits = sum(x["hit"] for x in r["rows"])
            fires = "" if r["fires"] is None else f"; the render makes the unit fire in {r['fires']:.0%}"
            rate = "n/a" if not r["rows"] else f"{r['recovery']:.0%}"
            lines.append(f"  FV concept recovery, {r['kind']}: {hits}/{len(r['rows'])} = {rate} (chance ~1/13){fires}")
        iv = self.feature_recovery()
        if iv is not None:
            lines.append(f"  FV concept recovery, {FEATURES} over {len(iv.values)} SAE seeds: "
                         f"{format_interval(iv, percent=True)} (target >= 50%)")
        return "\n".join(lines)

    def feature_recovery(self) -> Interval | None:
        """The SAE features' FV recovery as a mean over SAE seeds (``None`` with fewer than two)."""
        per_seed = [r["recovery"] for r in self.recovery if r["kind"].startswith(FEATURES + ", seed") and r["rows"]]
        return mean_interval(per_seed) if len(per_seed) > 1 else None

    def to_dict(self) -> dict:
        return {"settings": self.settings, "evaluation": self.evaluation, "table": self.table,
                "fv_recovery": self.recovery}

    @classmethod
    def from_dict(cls, d: dict) -> "Evidence":
        """Back from :meth:`to_dict` (what ``evidence.json`` and ``report.json`` hold)."""
        return cls(d["settings"], d["evaluation"], d["table"], d.get("fv_recovery", []))


def evidence(model, data="procedural", *, out: str | Path | None = None, expansion: int = 8, ks=(1, 2, 4),
             seeds=(0, 1, 2), n_images: int = 2000, data_seed: int = 1, eval_seed: int | None = None,
             per_image: int = 16, top: int = 32, sae_steps: int | None = 2000, fv_steps: int = 512,
             fv_mode: str = "encoder", fv_transforms: str = "wide", fv_size: int | None = None,
             fv_images: int = 4, fv_judge_crop: float | None = 0.75, progress: bool = False, log=None) -> Evidence:
    """Held-out evaluation (+ FV recovery on the demo model); cached in ``out/evidence.json``."""
    procedural = isinstance(data, str) and data == "procedural"
    eval_seed = eval_seed if eval_seed is not None else data_seed + 1
    with_fv = fv_steps > 0 and getattr(model, "name", None) == "demo" and procedural
    settings = {"data": data if isinstance(data, str) else str(getattr(data, "spec", lambda: data)()),
                "model_sha256": getattr(model, "weights_sha256", None), "expansion": expansion, "ks": list(ks),
                "seeds": list(seeds), "n_images": n_images, "data_seed": data_seed, "eval_seed": eval_seed,
                "per_image": per_image, "top": top, "sae_steps": sae_steps, "sae_resample": True,
                "fv": {"steps": fv_steps, "mode": fv_mode, "transforms": fv_transforms, "size": fv_size,
                       "images": fv_images, "judge_crop": fv_judge_crop} if with_fv else None}
    path = Path(out) / FILE if out is not None else None
    if path is not None and path.is_file():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            if log:
                log("held-out evaluation: done already")
            return Evidence.from_dict(old)
    ev = evaluate_split(model, data, expansion=expansion, ks=ks, seeds=seeds, n_images=n_images, eval_images=n_images,
                        data_seed=data_seed, eval_seed=eval_seed, per_image=per_image, top=top, sae_steps=sae_steps,
                        progress=progress, log=log)
    recovery = []
    if with_fv:
        tf = FV_TRANSFORMS[fv_transforms]()
        kinds = [(f"{FEATURES}, seed {seed}", feature_targets(ev, seed=seed, mode=fv_mode), ev.layer)
                 for seed in seeds]
        kinds += [("channels", channel_targets(ev), ev.layer),
                 ("class logits", class_targets(model), None)]
        for kind, targets, layer in kinds:
            if log:
                log(f"FV concept recovery of {len(targets)} {kind} ({fv_steps} steps)")
            recovery.append(fv_recovery(model, targets, kind=kind, steps=fv_steps, size=fv_size, transforms=tf,
                                        fire_layer=layer, judge_crop=fv_judge_crop, images_per_unit=fv_images,
                                        batch_size=64, progress=progress).to_dict())
    result = Evidence(settings, ev.to_dict(), ev.table(), recovery)
    if path is not None:
        from ..store.blobs import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(result.to_dict(), indent=2).encode())
    return result
