"""``DemoNet``: InceptionV1's layout at toy scale, for 64 px images of the procedural concepts.

Stem ``conv2d0`` (7x7, stride 2) -> ``maxpool0`` -> ``conv2d1`` (1x1) -> ``conv2d2`` (3x3) ->
``maxpool1``, then two mixed blocks at 8x8 with 1x1 / 3x3 / 5x5 / pool branches concatenated in
that order, then average pooling and a linear classifier. Names follow Lucid's InceptionV1, so
layer tables, branch display and hooks work the same as on the real model.

``mixed3b`` is the superposition layer: 8 channels for 13 concepts, each seeing the whole 64 px
image, read out linearly (avg pool + linear) so the concepts must be directions in its 8-d space.
Every conv is followed by batch norm before its ReLU; at the narrow layer this is what keeps all
channels alive (a plain narrow ReLU layer loses about half of them in training). In eval mode
the batch norms are fixed affine maps, so the net is a plain conv-ReLU net at analysis time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..models.blocks import Concat, ReLU, rectify
from ..models.weights import WeightsSpec, default_weights_dir
from ..models.wrapper import Branch, LayerInfo

SUPERPOSITION_LAYER = "mixed3b"
WEIGHTS_FILE = "demo.pt"
INPUT_SIZE = 64
# Images in [0, 1] enter the net as x * 2 - 1.
INPUT_SCALE, INPUT_SHIFT = 2.0, -1.0

# name: (in, out, kernel, stride)
STEM = {"conv2d0": (3, 16, 7, 2), "conv2d1": (16, 16, 1, 1), "conv2d2": (16, 32, 3, 1)}
# name: (in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce)
MIXED = {
    "mixed3a": (32, 16, 16, 24, 8, 12, 12),
    "mixed3b": (64, 2, 12, 2, 8, 2, 2),
}
BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")


def _conv_names(name: str) -> list[str]:
    if name in STEM:
        return [name]
    return [f"{name}_{b}" for b in ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")]


class DemoNet(nn.Module):
    """The demo network; returns logits over :data:`circuitsviz.data.procedural.CONCEPTS`.

    Each conv ``X`` is three modules: ``X_pre_relu_conv`` (conv), ``X_pre_relu_bn`` (batch norm,
    its output is the pre-ReLU layer ``X_pre_relu``) and ``X`` (ReLU).
    """

    def __init__(self, num_classes: int = 13) -> None:
        super().__init__()
        for name, (cin, cout, k, stride) in STEM.items():
            self._add_conv(name, cin, cout, k, stride)
        self.maxpool0 = nn.MaxPool2d(3, 2, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2, padding=1)
        for name, (cin, c1, c3r, c3, c5r, c5, cp) in MIXED.items():
            convs = {
                "1x1": (cin, c1, 1), "3x3_bottleneck": (cin, c3r, 1), "3x3": (c3r, c3, 3),
                "5x5_bottleneck": (cin, c5r, 1), "5x5": (c5r, c5, 5), "pool_reduce": (cin, cp, 1),
            }
            for branch, (i, o, k) in convs.items():
                self._add_conv(f"{name}_{branch}", i, o, k, 1)
            setattr(self, f"{name}_pool", nn.MaxPool2d(3, 1, padding=1))
            setattr(self, f"{name}_pre_relu", Concat())
            setattr(self, name, Concat())
        self.avgpool0 = nn.AdaptiveAvgPool2d(1)
        self.softmax2_pre_activation_matmul = nn.Linear(self._width(SUPERPOSITION_LAYER), num_classes)

    @staticmethod
    def _width(name: str) -> int:
        _, c1, _, c3, _, c5, cp = MIXED[name]
        return c1 + c3 + c5 + cp

    def _add_conv(self, name: str, cin: int, cout: int, k: int, stride: int) -> None:
        setattr(self, f"{name}_pre_relu_conv", nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False))
        setattr(self, f"{name}_pre_relu_bn", nn.BatchNorm2d(cout))
        setattr(self, name, ReLU())

    def _conv(self, name: str, x: torch.Tensor, pres: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``relu(bn(conv(x)))``; the pre-ReLU map is appended to ``pres`` when given (and only then kept)."""
        bn = getattr(self, f"{name}_pre_relu_bn")
        pre = bn(getattr(self, f"{name}_pre_relu_conv")(x))
        if pres is not None:
            pres.append(pre)
        return rectify(getattr(self, name), bn, pre, keep=pres is not None)

    def _mixed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        pre_concat = getattr(self, f"{name}_pre_relu")
        pres: list[torch.Tensor] | None = [] if pre_concat._forward_hooks else None  # only built when asked for
        out1 = self._conv(f"{name}_1x1", x, pres)
        out3 = self._conv(f"{name}_3x3", self._conv(f"{name}_3x3_bottleneck", x), pres)
        out5 = self._conv(f"{name}_5x5", self._conv(f"{name}_5x5_bottleneck", x), pres)
        outp = self._conv(f"{name}_pool_reduce", getattr(self, f"{name}_pool")(x), pres)
        if pres is not None:
            pre_concat(*pres)
            del pres
        return getattr(self, name)(out1, out3, out5, outp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool0(self._conv("conv2d0", x))
        x = self._conv("conv2d1", x)
        x = self._conv("conv2d2", x)
        x = self.maxpool1(x)
        for name in MIXED:
            x = self._mixed(name, x)
        return self.softmax2_pre_activation_matmul(self.avgpool0(x).flatten(1))


def layer_table() -> list[LayerInfo]:
    """Layer names (Lucid's pattern), their modules, widths and branch ranges."""
    table = []
    for name, (_, cout, _, _) in STEM.items():
        table += [LayerInfo(name, name, cout), LayerInfo(f"{name}_pre_relu", f"{name}_pre_relu_bn", cout)]
    for name, (_, c1, c3r, c3, c5r, c5, cp) in MIXED.items():
        branches, start = [], 0
        for b, width in zip(BRANCHES, (c1, c3, c5, cp)):
            branches.append(Branch(b, start, start + width))
            start += width
        table += [LayerInfo(name, name, start, tuple(branches)),
                  LayerInfo(f"{name}_pre_relu", f"{name}_pre_relu", start, tuple(branches))]
        for b, width in {"1x1": c1, "3x3_bottleneck": c3r, "3x3": c3, "5x5_bottleneck": c5r, "5x5": c5, "pool_reduce": cp}.items():
            table += [LayerInfo(f"{name}_{b}", f"{name}_{b}", width),
                      LayerInfo(f"{name}_{b}_pre_relu", f"{name}_{b}_pre_relu_bn", width)]
    table.append(LayerInfo("softmax2_pre_activation_matmul", "softmax2_pre_activation_matmul", None))
    return table


def weights_record(folder: str | Path | None = None) -> dict | None:
    """The JSON written beside the trained weights (accuracy, seed, hash, ...), or None if absent."""
    path = Path(folder or default_weights_dir()) / f"{WEIGHTS_FILE}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def zoo_entry():
    """The zoo's ``demo`` entry; the expected SHA-256 comes from the shipped JSON record."""
    from ..data.procedural import CONCEPTS
    from ..models.zoo import ZooEntry

    record = weights_record() or {}
    return ZooEntry(
        name="demo",
        build=lambda: DemoNet(num_classes=len(CONCEPTS)),
        description=f"circuitsviz's bundled InceptionV1-style net on the {len(CONCEPTS)} procedural concepts "
        f"(64 px); {SUPERPOSITION_LAYER} has {DemoNet._width(SUPERPOSITION_LAYER)} channels: superposition",
        weights=WeightsSpec(
            filename=WEIGHTS_FILE, size=record.get("size"), sha256=record.get("sha256"),
            how_to_get="It ships in weights/ of the source tree; to remake it, train it: "
            "python -m circuitsviz.demo.train --out weights/",
        ),
        layers=layer_table,
        input_size=INPUT_SIZE,
        input_scale=INPUT_SCALE,
        input_shift=INPUT_SHIFT,
        default_layer=SUPERPOSITION_LAYER,
        labels=lambda: list(CONCEPTS),
    )
