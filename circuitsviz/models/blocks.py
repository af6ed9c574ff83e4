"""Small modules shared by the zoo's networks.

Every spatial op is a module (not a bare ``F.*`` call) so that hooks can address it by name
and receptive fields can be traced from the module graph.
"""

from __future__ import annotations

import torch
import torch.fx
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
        # The ordinary ReLU gradient, by the kernel torch.relu uses (gradient 0 at x == 0, where
        # Lucid's tf.where(x < 0) passes it: a measure-zero difference, and several times faster
        # here than a masked fill).
        relu_grad = torch.ops.aten.threshold_backward(grad, x, 0)
        dims = tuple(range(1, grad.dim()))
        alive = (relu_grad.amax(dim=dims) > 0) | (relu_grad.amin(dim=dims) < 0)  # no |.| copy
        if bool(alive.all()):  # the usual case; only dead examples need the redirected gradient
            return relu_grad
        dead = ~alive
        # grad > 0 is the direction gradient descent uses to *lower* x (the loss is -objective).
        relu_grad[dead] = torch.where((x[dead] < 0) & (grad[dead] > 0), 0.0, grad[dead])
        return relu_grad


class ReLU(nn.ReLU):
    """A ReLU that optimisation can switch into Lucid's redirected-gradient mode.

    ``redirect`` is per-module state, toggled only by ``VisionModel.redirected_relu()`` for the
    duration of a ``with`` block; nothing global is touched. An ``nn.ReLU`` subclass, so that
    what knows that module (the receptive-field trace, the linearised network) takes it as one
    instead of tracing each of InceptionV1's 57 ReLUs (half the setup of a mining run).
    Whether a call may overwrite its input is the caller's to say (:func:`rectify`), not the
    module's ``inplace`` attribute, which stays False.
    """

    def __init__(self) -> None:
        super().__init__()
        self.redirect = False

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if self.redirect and torch.is_grad_enabled():  # its backward reads x: never in place
            return _RedirectedReLUFn.apply(x)
        # ``is True``, not truthiness: a torch.fx trace of this module (receptive fields) passes a
        # proxy here, which must not reach control flow.
        return torch.relu_(x) if inplace is True else torch.relu(x)


def is_hooked(module: nn.Module) -> bool:
    """Whether a forward hook (the module's own or a global one) sees ``module``'s output."""
    return bool(module._forward_hooks) or bool(nn.modules.module._global_forward_hooks)


def may_overwrite(*producers: nn.Module) -> bool:
    """Whether a fresh output of ``producers`` may be overwritten by the next op, as nobody else reads it.

    Not when a hook saw it (a capture of the layer, or an intervention that returned a tensor of
    its own), nor under a torch.fx trace: the graph is frozen, and an extractor built from it may
    return that very output (``*_pre_relu``).
    """
    return not torch.fx._symbolic_trace.is_fx_symbolic_tracing() and not any(is_hooked(p) for p in producers)


def rectify(relu: ReLU, producer: nn.Module, pre: torch.Tensor, keep: bool = False) -> torch.Tensor:
    """``relu(pre)`` for ``pre``, the fresh output of ``producer``: in place unless the caller
    ``keep``s ``pre`` or it :func:`may not be overwritten <may_overwrite>`.

    Overwriting is exact, also under autograd: ReLU's backward reads its output, and convolution,
    pooling and batch norm do not save theirs. It saves allocating, and page-faulting in, one map
    per conv, and keeps the pre-ReLU maps nobody asked for from living on.
    """
    if not keep and may_overwrite(producer):
        return relu(pre, inplace=True)
    return relu(pre)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _channel_window_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``out[:, d] = sum(x[:, d'] for |d' - d| <= radius)``, zero beyond the edges.

    Shifted adds along the channel axis, doubling the run length each time (11 = 8 + 2 + 1
    takes 5 adds): exact, and 3-5x cheaper on CPU than multiplying by the C x C banded matrix,
    since the band is only 2 * radius + 1 wide. Channels-last input is summed along its
    contiguous last axis and the result comes back channels-last.
    """
    c, width = x.shape[1], 2 * radius + 1
    channels_last = is_channels_last(x)
    view, dim = (x.permute(0, 2, 3, 1), -1) if channels_last else (x, 1)
    pad = (radius, radius) if channels_last else (0, 0) * (x.dim() - 2) + (radius, radius)
    runs = {1: F.pad(view, pad)}  # runs[n][i] = sum of n consecutive padded channels from i
    n = 1
    while 2 * n <= width:
        run = runs[n]
        runs[2 * n] = run.narrow(dim, 0, run.shape[dim] - n) + run.narrow(dim, n, run.shape[dim] - n)
        n *= 2
    total, offset = None, 0
    for n in sorted(runs, reverse=True):
        if width - offset >= n:
            part = runs[n].narrow(dim, offset, c)
            total = part if total is None else total + part
            offset += n
    return total.permute(0, 3, 1, 2) if channels_last else total


_INFERENCE_CHUNK = 1 << 20  # elements per slice of the batch in LocalResponseNorm without autograd


def _lrn_terms(x: torch.Tensor, radius: int, bias: float, alpha: float, beta: float):
    """``t = bias + alpha * window sum of x^2`` and the scale ``d = t ** -beta`` (so ``y = x * d``)."""
    t = _channel_window_sum(x * x, radius).mul_(alpha).add_(bias)
    return t, (t.rsqrt() if beta == 0.5 else t.pow(-beta))


class _LRNFn(torch.autograd.Function):
    """LRN with a hand-written backward: two windowed sums and a few element-wise passes,
    instead of autograd's chain of a dozen."""

    @staticmethod
    def forward(ctx, x, radius: int, bias: float, alpha: float, beta: float):
        t, d = _lrn_terms(x, radius, bias, alpha, beta)
        ctx.save_for_backward(x, t, d)
        ctx.radius, ctx.coef = radius, 2 * alpha * beta
        return x * d

    @staticmethod
    def backward(ctx, grad):
        x, t, d = ctx.saved_tensors
        gd = grad * d
        # d y_i / d x_j = d_i [i == j] - 2 alpha beta x_i x_j d_i / t_i for every window i that
        # holds j; the windows are symmetric, so the sum over i is the same window sum.
        back = _channel_window_sum((gd * x).div_(t), ctx.radius)
        return torch.addcmul(gd, x, back, value=-ctx.coef), None, None, None, None


class LocalResponseNorm(nn.Module):
    """TensorFlow's LRN, ``x / (bias + alpha * sum_{|d'-d| <= radius} x_d'^2) ** beta``.

    Equal to ``F.local_response_norm(x, 2 * radius + 1, alpha * (2 * radius + 1), beta, bias)``,
    but the windowed sum over channels is a handful of shifted adds and the backward pass is
    written out, which together make it several times faster on CPU than PyTorch's 3-D average
    pooling, forward and backward.
    """

    def __init__(self, depth_radius: int, bias: float, alpha: float, beta: float) -> None:
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``inplace`` lets the pass without autograd overwrite ``x`` (autograd keeps it for the backward)."""
        if torch.is_grad_enabled() and x.requires_grad:
            return _LRNFn.apply(x, self.depth_radius, self.bias, self.alpha, self.beta)
        return self._inference(x, inplace)

    def _inference(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The same values without autograd, a few images at a time: the temporaries stay small
        enough for malloc to reuse, where a whole 224-px batch would map (and page-fault in)
        several fresh ~80 MB buffers per call. Images are independent, so ``inplace`` may write
        each slice over its input once its scale is known."""
        out = x if inplace else torch.empty_like(x)
        step = max(1, _INFERENCE_CHUNK // max(1, x[0].numel()))
        for i in range(0, x.shape[0], step):
            xs = x[i:i + step]
            _, d = _lrn_terms(xs, self.depth_radius, self.bias, self.alpha, self.beta)
            torch.mul(xs, d, out=out[i:i + step])
        return out

    def extra_repr(self) -> str:
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"


class StemConv2d(nn.Conv2d):
    """A stride-2 convolution over few input channels (InceptionV1's 7x7 ``conv2d0``), computed
    on the CPU as a stride-1 convolution over the 2x2 space-to-depth rearranged input.

    Same parameters and the same result (up to float rounding): the input is folded into
    4x the channels at half the resolution and the kernel into a 4x4 one (zero-padded to 8x8
    first). oneDNN's stride-2 backward pass to a 3-channel image is slow; the folded one runs
    about 1.5x faster (the forward costs about the same). CUDA and other strides take the usual
    path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        plain = (self.stride != (2, 2) or self.padding != (0, 0) or self.dilation != (1, 1) or self.groups != 1
                 or self.kernel_size[0] != self.kernel_size[1] or x.device.type != "cpu")
        if plain:
            return super().forward(x)
        half = (k + 1) // 2
        w = F.pad(self.weight, (0, 2 * half - k, 0, 2 * half - k))             # O x C x 2h x 2h
        o, c = w.shape[:2]
        # w[o, c, 2i + a, 2j + b] -> w[o, 4c + 2a + b, i, j]: pixel_unshuffle's channel order.
        w = w.reshape(o, c, half, 2, half, 2).permute(0, 1, 3, 5, 2, 4).reshape(o, 4 * c, half, half)
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))                 # even size; meets zero taps only
        folded = F.pixel_unshuffle(x, 2)
        if is_channels_last(x):
            folded = folded.contiguous(memory_format=torch.channels_last)
        return F.conv2d(folded, w, self.bias)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis: ``(before, after)`` for an input of ``size``.

    The output has ``ceil(size / stride)`` positions; the total pad is what that needs, split
    with the odd pixel after. Stride-2 ops therefore pad differently at odd and even sizes.

    >>> same_padding(140, 7, 2), same_padding(35, 3, 2), same_padding(36, 3, 2)
    ((2, 3), (1, 1), (0, 1))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePad2d(nn.ConstantPad2d):
    """Pads its input as TF ``SAME`` would for a ``kernel``/``stride`` op, at whatever size arrives.

    ``padding`` holds the pads for sizes divisible by the stride (InceptionV1's 224 px path), which
    is what a static receptive-field trace reads; ``forward`` recomputes them per input.
    """

    def __init__(self, kernel: int, stride: int, value: float = 0.0) -> None:
        before, after = same_padding(16 * stride, kernel, stride)
        super().__init__((before, after, before, after), value)
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel, self.stride)
        return F.pad(x, (left, right, top, bottom), value=self.value)


class SameMaxPool2d(nn.MaxPool2d):
    """Max pooling with TF ``SAME`` padding (``-inf``) for the actual input size, without a padded copy.

    SAME pads ``before = total // 2`` and ``after = before`` or ``before + 1``. A symmetric
    implicit pad of ``before`` plus ``ceil_mode`` (which lets the last window hang one pixel over
    the far edge) gives exactly those windows, per axis. The module's static ``padding`` is the
    one for sizes divisible by the stride, for receptive-field tracing.
    """

    def __init__(self, kernel: int, stride: int) -> None:
        before, _ = same_padding(16 * stride, kernel, stride)
        super().__init__(kernel, stride, padding=before, ceil_mode=True)
        self.same_kernel, self.same_stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = tuple(same_padding(n, self.same_kernel, self.same_stride)[0] for n in x.shape[-2:])
        return F.max_pool2d(x, self.same_kernel, self.same_stride, padding=pad, ceil_mode=True)


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
