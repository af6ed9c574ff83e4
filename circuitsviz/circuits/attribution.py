"""``attribute``: how much each unit of a source layer contributes to a unit, image by image.

Two methods, both over the source layer's units (channels, or an SAE's features):

- ``act_x_grad``: activation times gradient, ``a_s * d target / d a_s``, summed over positions;
- ``integrated_gradients``: ``(a_s - b_s) * mean_alpha d target / d a_s`` at ``b + alpha (a - b)``
  for ``steps`` midpoints alpha in (0, 1), with the baseline ``b`` zero or the data's mean. Its
  contributions sum to ``target(a) - target(b)`` up to the quadrature error (completeness).

The target is a channel's spatial mean (``reduce="max"``: its max), a neuron
(``"mixed4c:447@7,7"``), or an SAE feature's (given ``sae=``).

>>> att = attribute(model, "mixed4c:447", source="mixed4b", data=images)   # doctest: +SKIP
>>> att.top(5)                                                             # doctest: +SKIP
['mixed4b:373', 'mixed4b:237', ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import BadInputError, check_int
from .readout import Readout, SourceSide, batches, load_images

METHODS = ("act_x_grad", "integrated_gradients")
BASELINES = ("zero", "mean")


@dataclass
class Attribution:
    """Contributions of every source unit to ``unit``: per image, and where in the map."""

    unit: str
    source: str                  # the source layer (and SAE)
    method: str
    units: list[str]             # source unit ids; columns of ``per_image``
    per_image: torch.Tensor      # (N, U)
    maps: torch.Tensor = field(repr=False)   # (N, U, H, W): where on the source map each contributes
    target: torch.Tensor = field(repr=False, default=None)  # (N,) the unit's value on each image

    @property
    def mean(self) -> torch.Tensor:
        """(U,) the mean contribution over images."""
        return self.per_image.mean(0)

    def top(self, n: int = 10) -> list[str]:
        """The ``n`` source units with the largest mean contribution."""
        return [self.units[i] for i in torch.argsort(self.mean, descending=True)[:n].tolist()]

    def table(self, n: int = 10) -> str:
        mean = self.mean
        lines = [f"{self.unit} <- {self.source} ({self.method}, {len(self.per_image)} images; "
                 f"mean target {float(self.target.mean()):.4g})",
                 f"{'rank':>4}  {'unit':<28} {'mean':>10} {'share':>8}"]
        total = float(mean.sum()) or 1.0
        for r, i in enumerate(torch.argsort(mean, descending=True)[:n].tolist(), 1):
            lines.append(f"{r:>4}  {self.units[i]:<28} {float(mean[i]):>10.4g} {float(mean[i]) / total:>8.1%}")
        return "\n".join(lines)


def attribute(model, unit, *, source: str, data, method: str = "act_x_grad", sae=None, steps: int = 16,
              baseline: str = "zero", reduce: str = "mean", batch_size: int = 32,
              limit: int | None = None) -> Attribution:
    """Each unit of ``source`` (a layer, or ``"layer/sae_name"`` for an SAE's features)'s
    contribution to ``unit`` on the images of ``data`` (a tensor or a dataset; ``limit`` caps it)."""
    check_int("steps", steps, 1, 10_000)
    check_int("batch_size", batch_size, 1, 1 << 16), check_int("limit", limit, 1, optional=True)
    if method not in METHODS:
        raise BadInputError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")
    if baseline not in BASELINES:
        raise BadInputError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
    if not isinstance(steps, int) or steps < 1:
        raise BadInputError(f"steps must be a positive integer, got {steps!r}")
    readout = Readout.of(model, unit, sae, reduce)
    side = SourceSide.of(model, source, sae)
    images = load_images(data, model, limit)
    base = _mean_code(model, side, images, batch_size) if baseline == "mean" else None
    alphas = [1.0] if method == "act_x_grad" else [(k + 0.5) / steps for k in range(steps)]
    per_image, maps, targets = [], [], []
    with model.frozen():
        for batch in batches(images, batch_size):
            with torch.no_grad():
                code = side.code(model.activations(batch, [side.layer], check=False)[side.layer])
            b = torch.zeros_like(code) if base is None else base.to(code).expand_as(code)
            grad_sum = torch.zeros_like(code)
            for alpha in alphas:
                point = (b + alpha * (code - b)).detach().requires_grad_()
                hook = lambda acts, point=point: side.write(acts, point, code)  # noqa: E731
                value = readout.run(model, batch, hooks={side.layer: hook}, grad=True)
                if not value.requires_grad:
                    raise BadInputError(f"{readout.unit.id} does not depend on {side.spec}; the source must be an earlier layer")
                (g,) = torch.autograd.grad(value.sum(), point)
                grad_sum += g
            contrib = ((code - b) * grad_sum / len(alphas)).detach()
            maps.append(contrib.float().cpu())
            per_image.append(contrib.sum(dim=(2, 3)).double().cpu())
            with torch.no_grad():
                targets.append(readout.run(model, batch).double().cpu())
    return Attribution(readout.unit.id, side.spec, method, [side.unit_id(i) for i in range(side.size(model))],
                       torch.cat(per_image), torch.cat(maps), torch.cat(targets))


@torch.no_grad()
def _mean_code(model, side: SourceSide, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(1, U, 1, 1): each source unit's mean over images and positions."""
    total, n = None, 0
    for batch in batches(images, batch_size):
        code = side.code(model.activations(batch, [side.layer], check=False)[side.layer]).double()
        s = code.sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        n += code.shape[0] * code.shape[2] * code.shape[3]
    return (total / n).reshape(1, -1, 1, 1)
