"""Steps keyed by their settings: what decides whether a run's stored result can be reused.

Every result a run holds was made by one *step* (``vis``, ``mine``, ``sae``, ``split``) for one
*key* (a layer, an SAE ``layer/name``, ...) with some *settings*. The run records the settings
beside the result. A later call with the same settings reuses it; a call with other settings
either writes beside it (a new key: another SAE name, another layer) or is refused before any
work with :class:`SettingsChangedError`, which names the changed setting and the flag that
overwrites. The run-wide inputs (model weights, data source) are checked the same way, once.

>>> settings_diff({"steps": 8, "size": 64}, {"steps": 64, "size": 64})
['steps=8 (now 64)']
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInputError
from ..hashing import config_hash

OVERWRITE_HINT = "pass --overwrite (overwrite=True in Python) to recompute it, or write to another run"

# The visualize() settings that decide the pixels (batch size, device and versions do not).
VIS_KEYS = ("size", "steps", "seed", "param", "transforms", "lr", "diversity", "images_per_unit",
            "redirect_steps", "upsample")
# The mine() settings that decide a layer's result (batch size and sharding do not; the
# weights and data are the run's, checked once for the whole run).
MINING_KEYS = ("k", "mean_top_k", "hist_bins", "hist_range", "calibration", "per_bin")


class SettingsChangedError(BadInputError):
    """A step already in the run was computed with other settings than this call asks for."""


def _plain(o):
    if hasattr(o, "tolist"):  # numpy arrays and scalars, torch tensors
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"cannot store {type(o).__name__} as JSON")


def to_json(value) -> str:
    """The one JSON form of settings: sorted keys, numpy/tuples/paths/dataclasses made plain."""
    return json.dumps(value, default=_plain, sort_keys=True)


def canonical(settings: dict) -> dict:
    """``settings`` as they read back from JSON (tuples become lists, ...), so they compare equal."""
    return json.loads(to_json(settings))


def settings_diff(old: dict | None, new: dict) -> list[str]:
    """``name=old (now new)`` for each setting that differs; empty when they agree."""
    if old is None:
        return ["settings not recorded (a run from an older circuitsviz)"]
    old, new = canonical(old), canonical(new)
    return [f"{k}={old.get(k, 'unset')!r} (now {new.get(k, 'unset')!r})"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def changed_error(what: str, where: str, diff: list[str]) -> SettingsChangedError:
    more = f" and {len(diff) - 2} more" if len(diff) > 2 else ""
    return SettingsChangedError(
        f"{what} in {where}: recorded with {', '.join(diff[:2])}{more}; {OVERWRITE_HINT}"
    )


def vis_key(settings: dict) -> dict:
    """The settings of a visualization that decide its pixels, from ``VisResult.settings``."""
    return {k: settings.get(k) for k in VIS_KEYS}


def planned_vis_key(model=None, *, size: int, steps: int, seed: int = 0, param: str = "fft",
                    transforms="standard", lr: float = 0.05, diversity: float = 0.0,
                    images_per_unit: int | None = None, redirect_steps: int | None = None,
                    upsample: bool = False) -> dict:
    """What :func:`vis_key` of ``visualize(model, ..., **these)``'s results will be, before rendering,
    so that a changed setting is refused before any work."""
    from ..optvis import render

    tfm = render._transforms(transforms)
    per_unit = images_per_unit or (render.DIVERSITY_IMAGES if diversity > 0 else 1)
    return canonical(dict(size=size, steps=steps, seed=seed, param=param, lr=lr, diversity=diversity,
                          transforms=tfm.settings() if tfm is not None else None, images_per_unit=per_unit,
                          redirect_steps=render.REDIRECT_STEPS if redirect_steps is None else redirect_steps,
                          upsample=upsample))


def mining_key(config: dict, sae_settings: dict | None = None) -> dict:
    """The settings of one layer's mining, from ``MiningResult.config`` (and the SAE's, for features)."""
    key = {k: config.get(k) for k in MINING_KEYS}
    if sae_settings is not None:
        key["sae"] = config_hash(canonical(sae_settings))
    return canonical(key)


def planned_mining_key(*, k: int = 32, mean_top_k: bool = False, hist_bins: int = 64, hist_range=None,
                       calibration: int = 64, per_bin: int = 4, sae_settings: dict | None = None) -> dict:
    """:func:`mining_key` of ``mine(..., **these)``, before mining."""
    return mining_key(dict(k=k, mean_top_k=mean_top_k, hist_bins=hist_bins,
                           hist_range=list(hist_range) if hist_range else None, calibration=calibration,
                           per_bin=per_bin), sae_settings)


def sae_key(*, kind: str = "topk", expansion: int = 8, k: int | None = 32, l1_coef: float | None = None,
            steps: int | None = None, batch_size: int = 4096, lr: float | None = None, seed: int = 0,
            sampler=None, n_images: int | None = None, dtype: str = "float16", resample: bool = True) -> dict:
    """The settings an SAE is asked to be fit with (``None``: fit_sae's default, resolved from the data)."""
    # resample (TopK only) is keyed so that an SAE fit before dead features were resampled is refit
    return canonical(dict(kind=kind, expansion=expansion, k=k if kind == "topk" else None,
                          l1_coef=l1_coef if kind == "relu" else None, steps=steps, batch_size=batch_size,
                          lr=lr, seed=seed, sampler=sampler, n_images=n_images, dtype=dtype,
                          resample=resample if kind == "topk" else None))


def sae_key_of(sae) -> dict:
    """:func:`sae_key` of an SAE fit in Python without one (from what ``fit_sae`` recorded)."""
    fit = dict(sae.config.extra.get("fit") or {})
    return canonical(dict(fit, expansion=sae.n_latents // max(sae.d_in, 1)))
