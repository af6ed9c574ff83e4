"""InceptionV1 exactly as Lucid's ``inception5h`` TensorFlow graph computes it.

Parameter names equal those of lucent's ``InceptionV1``, so the public ``inception5h.pth``
state dict loads unchanged. Two intended differences from lucent:

* the LRN: Lucid's graph uses depth_radius 5, bias 2, alpha 1e-4, beta 0.5. PyTorch's LRN takes
  a window *size* (2 * radius + 1 = 11) and divides alpha by that size, hence alpha = 1e-4 * 11;
* padding: ``conv2d0`` and the stride-2 pools pad as TF ``SAME`` does for the size that actually
  arrives. Lucent hard-codes the pads of even sizes, which differ from Lucid's whenever a
  stride-2 input is odd (at 140 px, what a 128 px render feeds, Lucid's mixed3a is 18x18).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn

from .blocks import (Concat, LocalResponseNorm, ReLU, SameMaxPool2d, SamePad2d, StemConv2d, is_channels_last,
                     may_overwrite, rectify)
from .wrapper import Branch, LayerInfo

LUCID_LRN = dict(depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5)
# The same in torch.nn.functional.local_response_norm's terms.
LRN = dict(size=11, alpha=1e-4 * 11, beta=0.5, k=2.0)
# What lucent uses; kept so tests can pin the difference (lucent PR #51).
LUCENT_LRN = dict(size=9, alpha=9.99999974738e-05, beta=0.5, k=1.0)

# name: (in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce)
MIXED = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
# Stride-2 max pools that sit *before* these mixed layers (TF "SAME" padding for the actual size).
POOL_BEFORE = {"mixed4a": "maxpool4", "mixed5a": "maxpool10"}
BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")


def _same_pool(stride: int) -> nn.MaxPool2d:
    """3x3 max pool with TF SAME (-inf) padding for the actual input size.

    Stride 1 pads one pixel on every side at any size. Stride 2 pads (0, 1) at even sizes and
    (1, 1) at odd ones, so 128 px renders (140 px at the net) keep Lucid's 18x18 mixed3a.
    """
    if stride == 2:
        return SameMaxPool2d(3, 2)
    return nn.MaxPool2d(3, 1, padding=1)


class InceptionV1(nn.Module):
    """Lucid's InceptionV1 (GoogLeNet as trained for ``inception5h``, 1008 classes).

    Takes input already in the graph's range ``x * 255 - 117``; ``VisionModel`` does that mapping.
    Returns softmax probabilities, as Lucid's graph does; logits are the layer
    ``softmax2_pre_activation_matmul``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv2d0_pre_relu_conv = StemConv2d(3, 64, 7, stride=2)
        self.conv2d1_pre_relu_conv = nn.Conv2d(64, 64, 1)
        self.conv2d2_pre_relu_conv = nn.Conv2d(64, 192, 3, padding=1)  # lucent pads first; same result, no copy
        self.conv2d0_pad = SamePad2d(7, 2)  # (2, 3) at even sizes, (3, 3) at odd ones
        for name in ("conv2d0", "conv2d1", "conv2d2"):
            setattr(self, name, ReLU())
        self.maxpool0 = _same_pool(2)
        self.maxpool1 = _same_pool(2)
        self.localresponsenorm0 = LocalResponseNorm(**LUCID_LRN)
        self.localresponsenorm1 = LocalResponseNorm(**LUCID_LRN)
        for name, (cin, c1, c3r, c3, c5r, c5, cp) in MIXED.items():
            convs = {
                "1x1": (cin, c1, 1), "3x3_bottleneck": (cin, c3r, 1), "5x5_bottleneck": (cin, c5r, 1),
                "pool_reduce": (cin, cp, 1), "3x3": (c3r, c3, 3), "5x5": (c5r, c5, 5),
            }
            for branch, (i, o, k) in convs.items():
                setattr(self, f"{name}_{branch}_pre_relu_conv", nn.Conv2d(i, o, k, padding=k // 2))
                setattr(self, f"{name}_{branch}", ReLU())
            setattr(self, f"{name}_pool", _same_pool(1))
            setattr(self, f"{name}_pre_relu", Concat())
            setattr(self, name, Concat())
        for name in POOL_BEFORE.values():
            setattr(self, name, _same_pool(2))
        self.avgpool0 = nn.AdaptiveAvgPool2d(1)
        self.softmax2_pre_activation_matmul = nn.Linear(1024, 1008)
        self.softmax2 = nn.Softmax(dim=1)
        self._skip: dict[str, frozenset[str]] = {}  # set only inside skipping_unread_branches()

    def _conv(self, name: str, x: torch.Tensor, pres: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``relu(conv(x))``; the pre-ReLU map is appended to ``pres`` when given (and only then kept)."""
        conv = getattr(self, f"{name}_pre_relu_conv")
        pre = conv(x)
        if pres is not None:
            pres.append(pre)
        return rectify(getattr(self, name), conv, pre, keep=pres is not None)

    def _branch(self, name: str, branch: str, x: torch.Tensor, pres: list[torch.Tensor] | None) -> torch.Tensor:
        if branch == "1x1":
            return self._conv(f"{name}_1x1", x, pres)
        if branch == "pool_reduce":
            return self._conv(f"{name}_pool_reduce", getattr(self, f"{name}_pool")(x), pres)
        return self._conv(f"{name}_{branch}", self._conv(f"{name}_{branch}_bottleneck", x), pres)

    def _mixed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        skip = self._skip.get(name, frozenset())
        pre_concat = getattr(self, f"{name}_pre_relu")
        # The branches' pre-ReLU maps are kept only for a hook on the *_pre_relu concat.
        pres: list[torch.Tensor] | None = [] if pre_concat._forward_hooks else None
        outs = []
        for branch in branch_ranges(name):
            if branch.name in skip:  # nothing reads these channels: zeros keep the numbering
                fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
                out = torch.empty((x.shape[0], branch.stop - branch.start, *x.shape[2:]), dtype=x.dtype,
                                  device=x.device, memory_format=fmt).zero_()
                if pres is not None:
                    pres.append(out)
            else:
                out = self._branch(name, branch.name, x, pres)
            outs.append(out)
        if pres is not None:
            pre_concat(*pres)
            del pres
        return getattr(self, name)(*outs)

    @contextlib.contextmanager
    def skipping_unread_branches(self, layers: Iterable[str],
                                 channels: Mapping[str, Iterable[int] | None]) -> Iterator[None]:
        """Within the block, the deepest mixed layer asked for computes only the branches that
        hold a channel in ``channels[layer]``; the others come back as zeros.

        Rendering ``mixed3b:379`` (a 5x5-branch channel) then skips mixed3b's 1x1, 3x3 and pool
        branches, forward and backward: exact for whatever reads only those channels. Nothing is
        skipped when another requested layer lies inside that block (a branch, ``*_pre_relu``).
        """
        self._skip = unread_branches(list(layers), channels)
        try:
            yield
        finally:
            self._skip = {}

    def _stem_conv2d0(self, x: torch.Tensor) -> torch.Tensor:
        """``maxpool0(conv2d0(x))``; a method of its own so the 64-channel pre-ReLU map dies on return."""
        conv = self.conv2d0_pre_relu_conv
        pre = conv(self.conv2d0_pad(x))
        if self.conv2d0._forward_hooks:
            return self.maxpool0(rectify(self.conv2d0, conv, pre))
        # Max pooling commutes with ReLU: rectify after it, on 4x fewer values, same result.
        return rectify(self.conv2d0, self.maxpool0, self.maxpool0(pre))

    @staticmethod
    def _normalize(lrn: LocalResponseNorm, x: torch.Tensor, *producers: nn.Module) -> torch.Tensor:
        """``lrn(x)``, over ``x`` itself when no hook saw it: the stem's largest map is then not
        held twice (without autograd; with it, the LRN keeps its input for the backward)."""
        return lrn(x, inplace=True) if may_overwrite(*producers) else lrn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normalize(self.localresponsenorm0, self._stem_conv2d0(x), self.conv2d0, self.maxpool0)
        x = self._conv("conv2d1", x)
        x = self._conv("conv2d2", x)
        x = self.maxpool1(self._normalize(self.localresponsenorm1, x, self.conv2d2))
        for name in MIXED:
            if name in POOL_BEFORE:
                x = getattr(self, POOL_BEFORE[name])(x)
            x = self._mixed(name, x)
        # Lucid pools 7x7 at 224 px; adaptive pooling gives the same there and works at any size.
        x = self.avgpool0(x).flatten(1)
        return self.softmax2(self.softmax2_pre_activation_matmul(x))


def branch_ranges(name: str) -> tuple[Branch, ...]:
    """The channel ranges of the 1x1, 3x3, 5x5 and pool branches of a mixed layer, in concat order."""
    _, c1, _, c3, _, c5, cp = MIXED[name]
    branches, start = [], 0
    for b, width in zip(BRANCHES, (c1, c3, c5, cp)):
        branches.append(Branch(b, start, start + width))
        start += width
    return tuple(branches)


def unread_branches(layers: list[str], channels: Mapping[str, Iterable[int] | None]) -> dict[str, frozenset[str]]:
    """{deepest mixed layer: its branches holding none of the channels read}, or {} when unsafe."""
    order = list(MIXED)

    def block(layer: str) -> int:
        for i, m in enumerate(order):
            if layer == m or layer.startswith(m + "_"):
                return i
        return -1 if layer.startswith("conv2d") else len(order)

    deepest = max(layers, key=block)
    read = channels.get(deepest)
    if deepest not in MIXED or read is None or any(l != deepest and block(l) == block(deepest) for l in layers):
        return {}
    read = set(read)
    skip = frozenset(b.name for b in branch_ranges(deepest) if not any(b.start <= c < b.stop for c in read))
    return {deepest: skip} if skip else {}


def layer_table() -> list[LayerInfo]:
    """Lucid's layer names, their modules, channel counts and (for mixed layers) branch ranges."""
    table = [
        LayerInfo("conv2d0", "conv2d0", 64), LayerInfo("conv2d0_pre_relu", "conv2d0_pre_relu_conv", 64),
        LayerInfo("conv2d1", "conv2d1", 64), LayerInfo("conv2d1_pre_relu", "conv2d1_pre_relu_conv", 64),
        LayerInfo("conv2d2", "conv2d2", 192), LayerInfo("conv2d2_pre_relu", "conv2d2_pre_relu_conv", 192),
    ]
    for name, (cin, c1, c3r, c3, c5r, c5, cp) in MIXED.items():
        branches = branch_ranges(name)
        width = branches[-1].stop
        table.append(LayerInfo(name, name, width, branches))
        table.append(LayerInfo(f"{name}_pre_relu", f"{name}_pre_relu", width, branches))
        for b, width in {"1x1": c1, "3x3_bottleneck": c3r, "3x3": c3, "5x5_bottleneck": c5r, "5x5": c5, "pool_reduce": cp}.items():
            table.append(LayerInfo(f"{name}_{b}", f"{name}_{b}", width))
            table.append(LayerInfo(f"{name}_{b}_pre_relu", f"{name}_{b}_pre_relu_conv", width))
    table.append(LayerInfo("softmax2_pre_activation_matmul", "softmax2_pre_activation_matmul", 1008))
    table.append(LayerInfo("softmax2", "softmax2", 1008))
    return table
