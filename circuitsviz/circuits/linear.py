"""The linearised network that expanded weights are the Jacobian of.

Following "Visualizing Weights" (Voss et al., Distill 2021), the path between two layers is
made linear by treating every ReLU as the identity and every max pool as an average pool over
the same windows (padding excluded from the average). What is left between the layers is
convolutions, average pools, concatenations and per-channel affine maps (batch norm in eval
mode): an affine map, whose Jacobian does not depend on where it is taken.

Only *modules* are replaced: a network that applies a non-linearity as a bare function
(``F.relu(x)`` in its ``forward``) keeps it, and its expanded weights are then the Jacobian at
a zero source map rather than those of a linear path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from ..models.blocks import ReLU as _BlockReLU

RELUS = (nn.ReLU, _BlockReLU)
MAX_POOLS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)


def _identity(x: torch.Tensor, *_flags, **_kwflags) -> torch.Tensor:
    return x  # the net may pass ReLU flags (``inplace=``): the identity ignores them


def _as_average(pool: nn.Module):
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        return lambda x: F.adaptive_avg_pool2d(x, pool.output_size)
    if pool.dilation not in (1, (1, 1)):
        raise BadInputError(f"cannot linearise a dilated max pool ({pool}); expanded weights need a plain one")
    return lambda x: F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                                  count_include_pad=False)


@contextlib.contextmanager
def linearised(net: nn.Module) -> Iterator[None]:
    """Within the block, ReLU modules of ``net`` pass their input through and max pools average.

    >>> with linearised(model.net):                              # doctest: +SKIP
    ...     acts = model.activations(images, "mixed4c")          # the linear path's response
    """
    patched = []
    try:
        for m in net.modules():
            if isinstance(m, RELUS):
                m.forward = _identity
            elif isinstance(m, MAX_POOLS):
                m.forward = _as_average(m)
            else:
                continue
            patched.append(m)
        yield
    finally:
        for m in patched:
            del m.forward  # the instance attribute; the class's forward shows through again
