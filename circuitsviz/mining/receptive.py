"""Receptive fields computed from the architecture, by tracing the module graph with torch.fx.

Every tensor in the traced graph carries, per spatial axis, the input window its position 0 sees
and how far that window moves per step: position ``p`` sees input pixels
``[offset + p * stride, offset + p * stride + size)``. ``offset`` is negative where the window
reaches into padding. Convolutions and pools grow the window, pads shift it, pointwise ops
(ReLU, LRN, batch norm, add, ...) keep it, and a concatenation takes the union of its inputs.
Modules of unknown type are traced into, so any network built from torch.nn spatial ops works.

A concatenated layer's field is the union of its branches': the widest branch's units see all
of it, a 1x1 branch's units a part (its own field is that of the branch's layer, e.g.
``mixed4e_1x1``). Max pools make this an upper bound on what a position can *use* for a given image: the field is
what it may see, the argmax path is what it does see. Convolution and average pooling fill it.
"""

from __future__ import annotations

import operator
import torch
from torch import fx, nn

from ..errors import BadInputError
from ..geometry import ReceptiveField
from ..models.blocks import LocalResponseNorm


IDENTITY = ReceptiveField((1, 1), (1, 1), (0, 0))

# Modules that do not mix spatial positions.
_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d,
    nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm, LocalResponseNorm,  # LRN mixes channels, not space
)
# Functions and methods that combine tensors position by position (the union of their inputs' fields).
_POINTWISE_CALLS = {
    operator.add, operator.mul, operator.sub, operator.truediv, operator.neg, operator.iadd, torch.add, torch.mul,
    torch.cat, torch.relu, torch.sigmoid, torch.tanh, torch.clamp, nn.functional.relu, nn.functional.gelu,
    nn.functional.silu, nn.functional.dropout, "add", "add_", "mul", "mul_", "relu", "relu_", "clamp", "clamp_",
    "sigmoid", "tanh", "contiguous", "float", "to", "__add__", "__mul__", "chunk", "split", "getitem",
    operator.getitem,
}


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(rf: ReceptiveField, kernel, stride, padding, dilation=1) -> ReceptiveField:
    """Apply a sliding window (conv or pool) with leading ``padding`` to a field."""
    k, s, p, d = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    return ReceptiveField(
        size=tuple(rf.size[a] + (k[a] - 1) * d[a] * rf.stride[a] for a in (0, 1)),
        stride=tuple(rf.stride[a] * s[a] for a in (0, 1)),
        offset=tuple(rf.offset[a] - p[a] * rf.stride[a] for a in (0, 1)),
    )


def _pad(rf: ReceptiveField, padding) -> ReceptiveField:
    # torch pads are (left, right, top, bottom); only the leading side moves position 0.
    left, _, top, _ = (padding,) * 4 if isinstance(padding, int) else padding
    return ReceptiveField(rf.size, rf.stride, (rf.offset[0] - top * rf.stride[0], rf.offset[1] - left * rf.stride[1]))


def union(fields: list[ReceptiveField]) -> ReceptiveField:
    """The smallest field containing every field in ``fields`` (all must share the stride)."""
    if len({f.stride for f in fields}) != 1:
        raise BadInputError(f"cannot combine receptive fields with different strides: {fields}")
    start = tuple(min(f.offset[a] for f in fields) for a in (0, 1))
    end = tuple(max(f.offset[a] + f.size[a] for f in fields) for a in (0, 1))
    return ReceptiveField(tuple(e - s for s, e in zip(start, end)), fields[0].stride, start)


class _AllLeaves(fx.Tracer):
    """Keep every submodule as one call, so each layer's module path appears in the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


def _module_field(module: nn.Module, inputs: list[ReceptiveField], path: str, out: dict) -> ReceptiveField | None:
    if not inputs:
        return None
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        dilation = getattr(module, "dilation", 1)
        padding = module.padding if isinstance(module.padding, (int, tuple)) else None
        if padding is None:
            raise BadInputError(f"cannot compute the receptive field through {path} (padding={module.padding!r})")
        return _window(inputs[0], module.kernel_size, module.stride, padding, dilation)
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        return _pad(inputs[0], module.padding)
    if isinstance(module, _POINTWISE):
        return inputs[0]
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten, nn.Softmax)):
        return None  # global: no spatial field beyond the whole image
    if type(module).__module__.startswith("torch.nn") and not list(module.children()):
        raise BadInputError(f"cannot compute the receptive field through {path} ({type(module).__name__})")
    return _trace(module, inputs, path, out)


def _trace(module: nn.Module, inputs: list[ReceptiveField], prefix: str, out: dict) -> ReceptiveField | None:
    """Propagate fields through ``module``'s graph; record every submodule's output field in ``out``."""
    try:
        graph = _AllLeaves().trace(module)
    except Exception as e:  # fx raises many types on data-dependent control flow
        name = prefix or type(module).__name__
        raise BadInputError(f"cannot trace {name} with torch.fx to compute receptive fields: {e}") from None
    fields: dict[fx.Node, ReceptiveField | None] = {}
    placeholders = list(inputs)
    result = None
    for node in graph.nodes:
        args = [a for a in node.all_input_nodes]
        known = [fields[a] for a in args if fields.get(a) is not None]
        if node.op == "placeholder":
            if str(node.target).startswith("*"):  # ``*args``: everything left, position by position
                fields[node] = union(placeholders) if placeholders else None
                placeholders = []
            else:
                fields[node] = placeholders.pop(0) if placeholders else None
        elif node.op == "call_module":
            path = f"{prefix}.{node.target}" if prefix else str(node.target)
            fields[node] = _module_field(module.get_submodule(node.target), known, path, out)
            if fields[node] is not None:
                out[path] = fields[node]
        elif node.op in ("call_function", "call_method"):
            if not known:
                fields[node] = None
            elif node.target in _POINTWISE_CALLS:
                fields[node] = union(known)
            else:
                fields[node] = None  # e.g. flatten, view, mean: spatial layout is gone
        elif node.op == "output":
            result = union(known) if known else None
        else:
            fields[node] = None
    return result


def receptive_field(model, layer: str) -> ReceptiveField:
    """The receptive field of ``layer``'s positions in ``model``'s input, from its module graph.

    >>> model = load_model("inceptionv1", pretrained=False)            # doctest: +SKIP
    >>> receptive_field(model, "conv2d0")                              # doctest: +SKIP
    ReceptiveField(size=(7, 7), stride=(2, 2), offset=(-2, -2))
    """
    return receptive_fields(model, [layer])[layer]


def receptive_fields(model, layers: list[str]) -> dict[str, ReceptiveField]:
    """:func:`receptive_field` for several layers from one trace."""
    net = getattr(model, "net", model)
    paths = {name: model.layer(name).module if hasattr(model, "layer") else name for name in layers}
    out: dict[str, ReceptiveField] = {}
    # Some modules run only while observed (InceptionV1 builds ``*_pre_relu`` only for a hook), so
    # the requested ones carry a no-op hook while the graph is traced.
    handles = [net.get_submodule(p).register_forward_hook(lambda *_: None) for p in set(paths.values()) if p]
    try:
        _trace(net, [IDENTITY], "", out)
    finally:
        for h in handles:
            h.remove()
    result = {}
    for name, path in paths.items():
        if path not in out:
            raise BadInputError(
                f"layer {name!r} has no spatial receptive field (module {path!r} is after global pooling "
                "or was not reached by the traced graph)"
            )
        result[name] = out[path]
    return result
