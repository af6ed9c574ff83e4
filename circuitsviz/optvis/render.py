"""``visualize``: render the images that units want to see, many units per optimisation.

Each unit becomes a *group* of images (one image; several with ``diversity``). Groups are packed
into batches; a batch is one parameterization, one Adam optimiser and one truncated forward per
step, and each group is scored by its own objective on its own images only. Every image is
seeded from ``(seed, unit, index)`` alone, so batching changes speed, not pictures.

Reproducibility: on the CPU the same seed and settings give bit-identical images. On CUDA,
``grid_sample``'s backward (the transforms) and some cuDNN kernels accumulate with atomic adds,
so images can differ in the last bits between runs; this has not been measured yet.

Speed on a CPU: call :func:`circuitsviz.retain_freed_memory` once per process (the
``circuitsviz`` command does) so the activations freed every step are reused rather than
page-faulted in again; it is a process-wide malloc setting, so the library leaves it to you.

>>> model = load_model("inceptionv1", pretrained=False)                       # doctest: +SKIP
>>> [r] = visualize(model, "mixed4e:55", steps=64)                           # doctest: +SKIP
>>> r.pil().save("mixed4e_55.png")                                           # doctest: +SKIP
>>> results = visualize(model, "mixed3b:*", size=128, steps=512)             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadInputError, check_float, check_int
from ..units import Unit, parse_channels
from . import lucent_compat
from .objectives import Objective, channel, diversity as diversity_objective, neuron, stack
from .param import PARAMETERIZATIONS, ImageParam
from .transforms import StandardTransforms, output_size, resize_for_model

# Lucid redirects ReLU gradients while its global step is <= 16: steps 0..16, i.e. the first 17
# (redirected_relu_grad.py: ``tf.greater(global_step, 16)`` switches to the plain gradient).
REDIRECT_STEPS = 17
DIVERSITY_IMAGES = 4  # images per unit when a diversity weight is given (Lucid's examples use 4)
CPU_BATCH = 8


@dataclass
class VisResult:
    """One rendered image: ``image`` is uint8 ``H x W x 3``; ``objective`` is the value of the
    objective being maximised (without the diversity term) on the final, untransformed image."""

    unit: str
    image: np.ndarray = field(repr=False)
    objective: float
    settings: dict = field(repr=False)
    kind: str = "positive"  # positive | negative | diversity | neuron
    index: int = 0

    def pil(self):
        from PIL import Image

        return Image.fromarray(self.image)

    def __repr__(self) -> str:
        h, w = self.image.shape[:2]
        return (f"VisResult(unit={self.unit!r}, kind={self.kind!r}, index={self.index}, "
                f"objective={self.objective:.4g}, image={h}x{w})")


@dataclass
class _Group:
    """The images of one unit: how many, what scores them, and what to call them."""

    key: str
    objective: Objective      # what the optimiser maximises on this group's images
    score: Objective          # what is reported (objective without the diversity term)
    n: int
    kind: str


def visualize(
    model,
    units,
    *,
    size: int | None = None,
    steps: int = 512,
    batch_size: int | None = None,
    seed: int = 0,
    param: str | Callable = "fft",
    transforms: str | StandardTransforms | None = "standard",
    lr: float = 0.05,
    negative: bool = False,
    diversity: float = 0.0,
    progress: bool = True,
    images_per_unit: int | None = None,
    redirect_steps: int = REDIRECT_STEPS,
    upsample: bool = False,
    sae=None,
    run=None,
) -> list[VisResult]:
    """Render one image per unit (``images_per_unit`` with ``diversity``) with Lucid's defaults.

    ``units``: a unit id (``"mixed4e:55"``, ``"mixed4e:55@7,7"``), a whole layer
    (``"mixed4e:*"``), an :class:`Objective`, a lucent objective, or a list of these.
    ``negative=True`` minimises instead. ``diversity=w`` renders ``images_per_unit`` (default 4)
    images per unit and adds ``w * diversity(layer)`` within each unit's images.
    ``size`` is the side of the rendered image, by default the model's natural input size
    (224 px for InceptionV1, 64 px for the demo model); the standard transforms pad it by 12 px.
    ``param`` is ``"fft"``, ``"pixel"`` or a lucent ``param_f`` (then each unit is optimised on
    its own, with as many images as ``param_f`` makes, e.g. ``batch=4``, at the size it makes;
    ``diversity`` then acts across those images). ``transforms=None`` turns robustness off.
    ``upsample=True`` resizes images smaller than the model's natural size up to it before the
    forward pass, as lucent does; Lucid feeds the image at its own size, which is the default.
    SAE features are units too: ``"mixed3b/topk8x_k1:17"`` renders along the feature's decoder
    direction, with the SAE given as ``sae=`` (a fitted SAE or its directory) or found in ``run=``.
    """
    lucent_param = lucent_compat.is_lucent_param(param)
    if lucent_param:  # it decides the size and the images per unit
        images_per_unit, size = lucent_compat.param_shape(param, size)
    size = model.input_size if size is None else size
    _check_visualize_args(size=size, steps=steps, seed=seed, diversity=diversity, images_per_unit=images_per_unit,
                          redirect_steps=redirect_steps)
    _check_positive(size=size, steps=steps, lr=lr)
    if batch_size is not None:
        _check_positive(batch_size=batch_size)
    if diversity < 0 or not math.isfinite(diversity):
        raise BadInputError(f"diversity must be a finite weight >= 0, got {diversity!r}")
    tfm = _transforms(transforms)
    if not lucent_param and param not in PARAMETERIZATIONS:
        raise BadInputError(f"unknown param {param!r}; valid: {', '.join(PARAMETERIZATIONS)}, or a lucent param_f")
    per_unit = images_per_unit or (DIVERSITY_IMAGES if diversity > 0 else 1)
    _check_positive(images_per_unit=per_unit)

    out = output_size(tfm, size, model.input_size if upsample else 0)
    final = max(size, model.input_size) if upsample else size  # where final images are scored
    groups = [_group(key, obj, negative, diversity, per_unit)
              for key, obj in _objectives(model, units, sae=sae, run=run)]
    if not groups:
        raise BadInputError("no units to visualize")
    for g in groups:
        _check_objective(model, g.objective, out)

    settings = _settings(model, size=size, steps=steps, seed=seed, param=param if not lucent_param else "lucent",
                         transforms=tfm, lr=lr, negative=negative, diversity=diversity,
                         images_per_unit=per_unit, redirect_steps=redirect_steps, upsample=upsample,
                         output_size=out)
    if lucent_param:
        batches = [[g] for g in groups]
    else:
        bs = batch_size or _auto_batch_size(model, groups, out)
        batches = _pack(groups, bs)
        settings["batch_size"] = bs

    bar = _Progress(len(groups), steps, sum(g.n for g in groups)) if progress else None
    results: list[VisResult] = []
    try:
        with model.frozen():  # gradients flow to the image only
            for batch in batches:
                if lucent_param:  # its batch size is whatever param_f makes
                    image_param = lucent_compat.from_lucent_param(param)
                    batch = [_resize_group(batch[0], image_param)]
                gens = [torch.Generator().manual_seed(_image_seed(seed, g.key, i)) for g in batch for i in range(g.n)]
                if not lucent_param:
                    image_param = PARAMETERIZATIONS[param](len(gens), size, gens, device=model.device)
                plan = tfm.plan(steps, gens) if tfm is not None else None
                if bar is not None:
                    bar.start_batch(len(batch), len(gens))
                images, scores = _optimise(model, batch, image_param, plan, tfm, steps=steps, lr=lr,
                                           out=out, final=final, redirect_steps=redirect_steps, bar=bar)
                results += _results(batch, images, scores, settings, seed)
    finally:
        if bar is not None:
            bar.close()
    return results


# ----------------------------------------------------------------------------- optimisation
def _optimise(model, groups: list[_Group], image_param: ImageParam, plan, tfm, *, steps: int, lr: float,
              out: int, final: int, redirect_steps: int, bar) -> tuple[torch.Tensor, torch.Tensor]:
    """Run Adam on one batch; return the final images and each image's score."""
    objective = stack([(g.objective, g.n) for g in groups])
    layers = _layers_of_groups(model, [g.objective for g in groups], out)
    opt = torch.optim.Adam(image_param.params, lr=lr)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        img = image_param()
        x = tfm(img, plan[step], out) if tfm is not None else resize_for_model(img, out)
        with model.redirected_relu(step < redirect_steps):
            acts = model.activations(x, layers, grad=True, check=False, channels=objective.channels)
            loss = -objective(acts).sum()  # the sum, not the mean: each image's gradient is its own
            loss.backward()
        opt.step()
        if bar is not None:
            bar.step(step + 1)
    with torch.no_grad():
        img = image_param().detach()
        score = stack([(g.score, g.n) for g in groups])
        acts = model.activations(resize_for_model(img, final),
                                 _layers_of_groups(model, [g.score for g in groups], final), check=False,
                                 channels=score.channels)
        scores = score(acts)
    return img, scores


def _results(groups: list[_Group], images: torch.Tensor, scores: torch.Tensor, settings: dict,
             seed: int) -> list[VisResult]:
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out, i = [], 0
    for g in groups:
        for k in range(g.n):
            s = dict(settings, unit=g.key, index=k, image_seed=_image_seed(seed, g.key, k))
            out.append(VisResult(g.key, np.ascontiguousarray(arr[i]), float(scores[i]), s, g.kind, k))
            i += 1
    return out


def _layers_of(model, objective: Objective, out: int, n: int) -> list[str]:
    """The layers an objective reads; for unknown ones, a probe call on zero activations."""
    if objective.layers is not None:
        return list(objective.layers)
    seen: dict[str, torch.Tensor] = {}

    class Probe(dict):
        def __getitem__(self, name: str) -> torch.Tensor:
            if name not in seen:
                shape = model.layer_shapes([name], out)[name]
                seen[name] = torch.zeros((n, *shape), device=model.device)
            return seen[name]

        def values(self):  # lets objectives find the batch size
            return [torch.zeros(n, 1, 1, 1)] if not seen else list(seen.values())

    objective(Probe())
    if not seen:
        raise BadInputError(f"objective {objective.name!r} reads no layer")
    return list(seen)


def _layers_of_groups(model, objectives: Sequence[Objective], out: int) -> list[str]:
    return list(dict.fromkeys(l for o in objectives for l in _layers_of(model, o, out, 1)))


def _check_objective(model, objective: Objective, out: int) -> None:
    objective.check(model)
    _layers_of(model, objective, out, 1)


# ----------------------------------------------------------------------------- units -> groups
def _objectives(model, units, sae=None, run=None) -> Iterable[tuple[str, Objective]]:
    """(key, objective) per unit: ids and whole layers are expanded, objectives pass through."""
    items = units if isinstance(units, (list, tuple)) else [units]
    for item in items:
        if isinstance(item, Objective):  # a single unit's objective is named (and seeded) by its id
            yield item.unit or item.name, item
        elif isinstance(item, Unit):
            yield item.id, _unit_objective(model, item, sae, run)
        elif isinstance(item, str):
            text = item.strip()
            if text.endswith(":*"):
                layer = text[:-2]
                for c in parse_channels("*", model.channels(layer)):
                    yield f"{layer}:{c}", channel(layer, c)
            else:
                unit = Unit.parse(text)
                yield unit.id, _unit_objective(model, unit, sae, run)
        elif lucent_compat.is_lucent_objective(item):
            obj = lucent_compat.from_lucent(item)
            yield obj.name, obj
        else:
            raise BadInputError(f"cannot visualize {item!r}: give a unit id such as 'mixed4e:55', "
                                "'mixed4e:*', an Objective, or a lucent objective")


def _unit_objective(model, unit: Unit, sae=None, run=None) -> Objective:
    if unit.sae is not None:
        from ..units import feature_objective

        return feature_objective(unit, sae=sae, run=run, model=model)
    model.layer(unit.layer)
    if unit.pos is not None:
        return neuron(unit.layer, unit.index, x=unit.pos[1], y=unit.pos[0])
    return channel(unit.layer, unit.index)


def _group(key: str, obj: Objective, negative: bool, weight: float, n: int) -> _Group:
    score = -obj if negative else obj
    kind = "negative" if negative else "positive"
    if isinstance(obj, Objective) and getattr(obj, "pos", None) is not None:
        kind = "neuron" if not negative else kind
    if weight > 0:
        if not obj.layers:
            raise BadInputError(f"diversity needs to know which layer {obj.name!r} reads; "
                                "give it layers=[...]")
        return _Group(key, score + weight * diversity_objective(obj.layers[-1]), score, n, "diversity")
    return _Group(key, score, score, n, kind)


def _resize_group(group: _Group, image_param: ImageParam) -> _Group:
    n = image_param().shape[0]
    return _Group(group.key, group.objective, group.score, n, group.kind)


def _pack(groups: Sequence[_Group], batch_size: int) -> list[list[_Group]]:
    """Consecutive groups, at most ``batch_size`` images per batch (a bigger group gets its own)."""
    batches: list[list[_Group]] = [[]]
    used = 0
    for g in groups:
        if batches[-1] and used + g.n > batch_size:
            batches.append([])
            used = 0
        batches[-1].append(g)
        used += g.n
    return batches


# ----------------------------------------------------------------------------- small helpers
def _image_seed(seed: int, key: str, index: int) -> int:
    """A 63-bit seed for one image, from the user's seed, the unit and the image's index only."""
    digest = hashlib.sha256(f"{seed}|{key}|{index}".encode()).hexdigest()
    return int(digest[:15], 16)


def _transforms(transforms) -> StandardTransforms | None:
    if transforms is None or isinstance(transforms, StandardTransforms):
        return transforms
    if transforms == "standard":
        return StandardTransforms()
    raise BadInputError(f"unknown transforms {transforms!r}; valid: 'standard', None, or a StandardTransforms")


def _check_visualize_args(*, size, steps, seed, diversity, images_per_unit, redirect_steps) -> None:
    check_int("size", size, 1, 4096)  # bounds, so a typo fails at once instead of filling memory or never ending
    check_int("steps", steps, 1, 1_000_000)
    check_int("seed", seed, 0, 2**63 - 1)
    check_float("diversity", diversity, 0)
    check_int("images_per_unit", images_per_unit, 1, 1024, optional=True)
    check_int("redirect_steps", redirect_steps, 0)


def _check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise BadInputError(f"{name} must be a positive number, got {v!r}")


def _auto_batch_size(model, groups: Sequence[_Group], out: int) -> int:
    """CPU: a modest batch (throughput per image barely grows past ~8 on a few cores).
    CUDA: as many images as fit in half the free memory, measured with a 2-image probe step."""
    n = sum(g.n for g in groups)
    device = model.device
    if device.type != "cuda":
        return min(n, CPU_BATCH)
    layers = list(dict.fromkeys(l for g in groups for l in (g.objective.layers or ())))
    if not layers:
        return min(n, 32)
    free, _ = torch.cuda.mem_get_info(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.full((2, 3, out, out), 0.5, device=device, requires_grad=True)
    acts = model.activations(x, layers, grad=True, check=False)
    sum(a.sum() for a in acts.values()).backward()
    per_image = max((torch.cuda.max_memory_allocated(device) - base) / 2, 1)
    del x, acts
    return int(max(1, min(n, 512, free * 0.5 // per_image)))


def _settings(model, **kw) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def installed(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    tfm = kw.pop("transforms")
    return dict(
        kw, transforms=tfm.settings() if tfm is not None else None, model=model.name,
        weights_sha256=model.weights_sha256, input_size=model.input_size, device=str(model.device),
        versions={"circuitsviz": __version__, "torch": torch.__version__, "numpy": np.__version__,
                  "torchvision": installed("torchvision")},
    )


class _Progress:
    """One bar for the whole job: which units are being rendered, the step within their batch, and
    the time left for everything (the bar advances by images x steps, so batches of different
    sizes weigh what they cost)."""

    def __init__(self, units: int, steps: int, images: int) -> None:
        from tqdm.auto import tqdm

        self.units, self.steps, self.done = units, steps, 0
        self.batch_units = self.batch_images = 0
        self.bar = tqdm(total=images * steps, desc="visualize",
                        bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")

    def start_batch(self, units: int, images: int) -> None:
        self.done += self.batch_units
        self.batch_units, self.batch_images = units, images

    def step(self, step: int) -> None:
        first, last = self.done + 1, self.done + self.batch_units
        which = f"unit {first}" if first == last else f"units {first}-{last}"
        self.bar.set_description_str(f"visualize {which} of {self.units}, step {step}/{self.steps}", refresh=False)
        self.bar.update(self.batch_images)

    def close(self) -> None:
        self.bar.close()
