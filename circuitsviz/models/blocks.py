"""Small modules shared by the zoo's networks.

Every spatial op is a module (not a bare ``F.*`` call) so that hooks can address it by name
and receptive fields can be traced from the module graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _RedirectedReLUFn(torch.autograd.Function):
    """ReLU whose backward lets gradient reach dead units, per batch element (Lucid's rule).

    Where the ordinary ReLU gradient of an example is all zero, use the incoming gradient
    instead, except where it would push an already negative input further down. Examples whose
    ReLU gradient is nonzero keep the ordinary gradient, so batching never mixes images.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        negative = x < 0
        relu_grad = grad.masked_fill(negative, 0)
        alive = torch.count_nonzero(relu_grad, dim=tuple(range(1, grad.dim()))) > 0
        if bool(alive.all()):  # the usual case; only dead examples need the redirected gradient
            return relu_grad
        dead = ~alive
        # grad > 0 is the direction gradient descent uses to *lower* x (the loss is -objective).
        relu_grad[dead] = grad[dead].masked_fill(negative[dead] & (grad[dead] > 0), 0)
        return relu_grad


class ReLU(nn.Module):
    """A ReLU that optimisation can switch into Lucid's redirected-gradient mode.

    ``redirect`` is per-module state, toggled only by ``VisionModel.redirected_relu()`` for the
    duration of a ``with`` block; nothing global is touched.
    """

    def __init__(self) -> None:
        super().__init__()
        self.redirect = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.redirect and torch.is_grad_enabled():
            return _RedirectedReLUFn.apply(x)
        return torch.relu(x)


class _LRNFn(torch.autograd.Function):
    """LRN with a hand-written backward: two windowed sums (1x1 convs with the banded matrix)
    and a few fused element-wise passes, instead of autograd's chain of a dozen."""

    @staticmethod
    def forward(ctx, x, band, bias: float, alpha: float, beta: float):
        t = F.conv2d(x * x, band).mul_(alpha).add_(bias)  # bias + alpha * window sum of squares
        d = t.rsqrt() if beta == 0.5 else t.pow(-beta)
        ctx.save_for_backward(x, band, t, d)
        ctx.coef = 2 * alpha * beta
        return x * d

    @staticmethod
    def backward(ctx, grad):
        x, band, t, d = ctx.saved_tensors
        gd = grad * d
        # d y_i / d x_j = d_i [i == j] - 2 alpha beta x_i x_j d_i / t_i, summed over windows i of j.
        back = F.conv2d((gd * x).div_(t), band)  # the band is symmetric: its transpose is itself
        return torch.addcmul(gd, x, back, value=-ctx.coef), None, None, None, None


class LocalResponseNorm(nn.Module):
    """TensorFlow's LRN, ``x / (bias + alpha * sum_{|d'-d| <= radius} x_d'^2) ** beta``.

    Equal to ``F.local_response_norm(x, 2 * radius + 1, alpha * (2 * radius + 1), beta, bias)``,
    but the windowed sum over channels is a 1x1 convolution with a banded 0/1 matrix (exact,
    one matrix product) and the backward pass is written out, which together make it several
    times faster on CPU than PyTorch's 3-D average pooling, forward and backward.
    """

    def __init__(self, depth_radius: int, bias: float, alpha: float, beta: float) -> None:
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta
        self._band: torch.Tensor | None = None

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        band = self._band
        if band is None or band.shape[0] != c or band.device != x.device or band.dtype != x.dtype:
            i = torch.arange(c, device=x.device)
            band = ((i[:, None] - i[None, :]).abs() <= self.depth_radius).to(x.dtype)[:, :, None, None]
            self._band = band
        return band

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFn.apply(x, self._window(x), self.bias, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"


class Concat(nn.Module):
    """Channel concatenation, as a module so a hook can name the mixed layer."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class AffineInput(nn.Module):
    """Maps images in [0, 1] to the network's input space: ``x * scale + shift`` per channel."""

    def __init__(self, scale: list[float] | float, shift: list[float] | float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift
