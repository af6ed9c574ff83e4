"""Bring existing lucent code: lucent objectives and lucent parameterizations.

A lucent objective is a callable that takes ``T`` (``T(layer_name) -> activations``) and
returns a scalar *loss to minimise*; a lucent parameterization is ``param_f() -> (params,
image_f)``. Both plug into :func:`circuitsviz.visualize`::

    from lucent.optvis import objectives, param
    visualize(model, objectives.channel("mixed4a", 476) - 1e2 * objectives.diversity("mixed4a"),
              param=lambda: param.image(128, batch=4))

Layer names are circuitsviz's (Lucid's names and module paths), which for InceptionV1 include
lucent's. Lucent's special names ``"input"`` and ``"labels"`` are not supported. Lucent's own
parameterizations draw from the global torch RNG, so they are not reproducible from ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import BadInputError
from .objectives import Acts, Objective, _batch_size
from .param import ImageParam

LucentObjective = Callable[[Callable[[str], torch.Tensor]], torch.Tensor]


def is_lucent_objective(obj) -> bool:
    """Anything callable that is not already one of ours is taken to be a lucent objective."""
    return callable(obj) and not isinstance(obj, (Objective, str, type))


def from_lucent(obj: LucentObjective, name: str | None = None) -> Objective:
    """Wrap a lucent objective: every image gets minus its loss (we maximise), so the batch mean
    is lucent's objective, as for circuitsviz's own objectives."""
    def fn(acts: Acts) -> torch.Tensor:
        def T(layer: str) -> torch.Tensor:
            if layer in ("input", "labels"):
                raise BadInputError(f"lucent's special layer {layer!r} is not supported by circuitsviz")
            return acts[layer]

        loss = obj(T)
        n = _batch_size(acts)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise BadInputError("a lucent objective must return a scalar loss tensor")
        return (-loss.reshape(())).expand(n)

    label = name or getattr(obj, "description", None) or getattr(obj, "name", None) or "lucent objective"
    return Objective(fn, None, str(label).replace("\n", " "))


def is_lucent_param(param) -> bool:
    return callable(param) and not isinstance(param, str)


def param_shape(param_f: Callable[[], tuple], size: int | None) -> tuple[int, int]:
    """``(batch, side)`` of the square images ``param_f`` makes (one trial call); ``size``, if
    given, must agree."""
    n, _, h, w = from_lucent_param(param_f)().shape
    if h != w:
        raise BadInputError(f"a lucent param_f must make square images to use the standard transforms, got {h}x{w}")
    if size is not None and size != w:
        raise BadInputError(f"size={size} but the lucent param_f makes {w} px images; leave size unset")
    return int(n), int(w)


def from_lucent_param(param_f: Callable[[], tuple]) -> ImageParam:
    """Call a lucent ``param_f`` once and wrap its ``(params, image_f)``."""
    params, image_f = param_f()
    params = list(params)
    if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise BadInputError("a lucent param_f must return (params, image_f) with trainable tensors")
    return ImageParam(params, image_f, "lucent")
