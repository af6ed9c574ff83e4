"""Weights between units: direct where one conv connects two layers, expanded otherwise.

The expanded weight from source channel ``s`` to target channel ``t`` is the Jacobian of the
*linearised* network (see :mod:`circuitsviz.circuits.linear`: ReLUs as identity, max pools as
average pools) from the source layer's map to ``t`` at the centre of the target map: a
``k x k`` kernel over source positions, as in Voss et al., "Visualizing Weights" (2021). Where a
single conv connects the layers it equals that conv's weights (times a following batch norm's
scale, if any).

It is computed generically, from the network's forward pass, so any ``wrap_model`` network
works. One forward pass replaces the source layer's output by a zero map that requires grad,
one backward pass over a batch with one item per target channel gives every target's kernels
at once. (The part of the network before the source runs once, on one image.)

>>> ew = expanded_weights(model, "mixed4c", "mixed4b")          # doctest: +SKIP
>>> ew.kernel(447, 373).shape                                   # doctest: +SKIP
torch.Size([5, 5])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import BadInputError, check_int, check_list
from .linear import MAX_POOLS, linearised

# Modules that carry a path's weights or mix positions; what a connection's path lists.
_PATH_MODULES = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d) + MAX_POOLS
_WEIGHT_MODULES = (nn.Conv2d, nn.Linear)
_PER_CHANNEL = (nn.BatchNorm2d,)  # on a path, but no mixing of channels or positions


@dataclass
class ExpandedWeights:
    """Kernels from every source channel to each of ``channels`` of the target layer.

    ``weights[i, s]`` is the kernel from source channel ``s`` to target channel ``channels[i]``,
    over the source positions ``origin[0] .. origin[0] + kh - 1`` (rows, likewise columns) of a
    map whose target position ``centre`` they all feed. The window is the union over all targets;
    :meth:`kernel` trims it to one target's own support.
    """

    target_layer: str
    source_layer: str
    channels: list[int]
    weights: torch.Tensor                 # (T, S, kh, kw)
    origin: tuple[int, int]
    centre: tuple[int, int]
    source_size: tuple[int, int]          # the source map's (H, W) the kernels were computed on
    input_size: int
    paths: list[tuple[str, ...]] = field(default_factory=list)  # modules each target's path runs through
    direct: list[bool] = field(default_factory=list)            # one conv connects them
    truncated: bool = False                                      # the window reached the map's edge

    def row(self, channel: int) -> int:
        try:
            return self.channels.index(int(channel))
        except ValueError:
            raise BadInputError(f"target channel {channel} of {self.target_layer} was not computed; "
                                f"computed: {self.channels[:20]}{'...' if len(self.channels) > 20 else ''}") from None

    def window(self, channel: int) -> tuple[slice, slice]:
        """Rows and columns of ``weights`` where target ``channel`` has any nonzero weight."""
        return _support(self.weights[self.row(channel)])

    def kernels(self, channel: int) -> torch.Tensor:
        """(S, k, k): every source channel's kernel into target ``channel``, trimmed to its support."""
        rows, cols = self.window(channel)
        return self.weights[self.row(channel)][:, rows, cols]

    def kernel(self, channel: int, source: int) -> torch.Tensor:
        return self.kernels(channel)[source]


def _support(w: torch.Tensor) -> tuple[slice, slice]:
    """The bounding box of the nonzero entries of ``w``'s last two dims (all of it if none)."""
    nz = w.reshape(-1, *w.shape[-2:]).ne(0).any(0)
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    if len(rows) == 0:
        return slice(0, w.shape[-2]), slice(0, w.shape[-1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def expanded_weights(
    model,
    target: str,
    source: str,
    *,
    channels: Sequence[int] | None = None,
    input_size: int | None = None,
    batch_size: int | None = None,
) -> ExpandedWeights:
    """Expanded weights from every channel of layer ``source`` to ``channels`` of layer ``target``
    (default: all of them), in one batched backward pass (``batch_size``: at most that many
    targets per pass, to bound memory; the result is the same).

    ``input_size``: the image size the maps are computed at. By default the smallest of 32, 64,
    128, ... (up to 4x the model's size) at which no target's window reaches the edge of the
    source map; a window that still does is marked ``truncated``. Where source and target have
    the same resolution the batched pass runs on a source map the size of the window.
    """
    check_list("channels", channels, int, optional=True)
    check_int("input_size", input_size, 1, 4096, optional=True)
    if target == source:
        raise BadInputError(f"source and target are the same layer {target!r}; pick an earlier source")
    n_target = model.channels(target)
    chans = list(range(n_target)) if channels is None else [int(c) for c in channels]
    for c in chans:
        model.check_channel(target, c)
    if not chans:
        raise BadInputError("ask for at least one target channel")
    for size in [input_size] if input_size else _sizes(model.input_size):
        probe = _probe(model, target, source, chans, size)
        if not probe.truncated:
            break
    step = batch_size or len(chans)
    if not isinstance(step, int) or step < 1:
        raise BadInputError(f"batch_size must be a positive integer, got {batch_size!r}")

    def passes(crop, window) -> ExpandedWeights:
        parts = [_jacobian(model, target, source, chans[i:i + step], size, crop, window)
                 for i in range(0, len(chans), step)]
        return replace(parts[0], channels=chans, weights=torch.cat([p.weights for p in parts]),
                       paths=[x for p in parts for x in p.paths], direct=[x for p in parts for x in p.direct],
                       truncated=any(p.truncated for p in parts))

    if probe.crop is not None and not probe.truncated:
        try:
            cropped = replace(passes(probe.crop, (slice(0, probe.crop[0]), slice(0, probe.crop[1]))), truncated=False)
            if probe.agrees(cropped):
                return cropped
        except RuntimeError:
            pass  # the path also reads earlier maps of the image's size: use the whole map
    return passes(None, probe.rows_cols)


def _sizes(model_size: int) -> list[int]:
    out, s = [], 32
    while s < 4 * model_size:
        out.append(s)
        s *= 2
    return out + [4 * model_size]


def _forward(model, target: str, source: str, size: int, batch: int, crop: tuple[int, int] | None = None):
    """The linearised forward with the source map replaced by ``batch`` zero maps that require
    grad (``crop``: of that spatial size instead of the image's):
    (source maps, target maps, [(name, module, output) of each path module on the way])."""
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    state: dict = {}
    on_path: list[tuple[str, nn.Module, torch.Tensor]] = []

    def inject(_m, _inputs, acts: torch.Tensor) -> torch.Tensor:
        shape = (batch, acts.shape[1], *(crop or acts.shape[2:]))
        # Channels-last on the CPU, as the wrapper feeds images: pools run several times faster.
        fmt = torch.channels_last if acts.device.type == "cpu" and acts.dim() == 4 else torch.contiguous_format
        state["source"] = torch.empty(shape, dtype=acts.dtype, device=acts.device,
                                      memory_format=fmt).zero_().requires_grad_()
        return state["source"]

    def track(name: str, module: nn.Module):
        def hook(_m, inputs, output):
            if any(isinstance(i, torch.Tensor) and i.requires_grad for i in inputs):
                on_path.append((name, module, output))
        return hook

    def run(n_images: int):
        on_path.clear()
        images = torch.full((n_images, 3, size, size), 0.5, dtype=dtype, device=model.device)
        tracked = [(n, m) for n, m in model.net.named_modules() if isinstance(m, _PATH_MODULES + _PER_CHANNEL)]
        # A raw hook, not ``hooks=``: this one may change the batch size.
        handles = [model.module(source).register_forward_hook(inject)]
        handles += [m.register_forward_hook(track(n, m)) for n, m in tracked]
        try:
            with linearised(model.net), model.frozen(), torch.enable_grad():
                return model.activations(images, [target], grad=True, check=False)[target]
        finally:
            for h in handles:
                h.remove()

    try:
        # The part before the source runs once; only the path runs on the whole batch.
        acts = run(1)
    except RuntimeError:
        # The network mixes earlier maps into the path (a dense concat): run it all on the batch.
        acts = run(batch)
    if "source" not in state:
        raise BadInputError(f"layer {source!r} is not computed before {target!r}; the source must come earlier")
    if not acts.requires_grad:
        raise BadInputError(f"layer {target!r} does not depend on layer {source!r}")
    for name, t in ((source, state["source"]), (target, acts)):
        if t.dim() != 4:
            raise BadInputError(f"expanded weights need conv maps; {name!r} has shape {tuple(t.shape)}")
    return state["source"], acts, on_path


def _truncated(rows: slice, cols: slice, h: int, w: int) -> bool:
    return rows.start == 0 or cols.start == 0 or rows.stop == h or cols.stop == w


@dataclass
class _Probe:
    """One backward of a fixed mix of the targets, whose support is (almost surely) the union of theirs."""

    truncated: bool                    # some target's window reaches the source map's edge
    crop: tuple[int, int] | None       # a source map size that gives the same kernels, if any
    mix: torch.Tensor                  # (T,) the mix
    window: torch.Tensor               # (S, kh, kw) the mixed kernels over the window
    rows_cols: tuple[slice, slice]     # the window on the source map

    def agrees(self, ew: ExpandedWeights) -> bool:
        """Whether ``ew``'s kernels, mixed the same way, give the probe's (a check on a crop)."""
        if tuple(ew.weights.shape[-2:]) != tuple(self.window.shape[-2:]):
            return False
        mixed = torch.einsum("t,tshw->shw", self.mix.to(ew.weights), ew.weights)
        return bool(torch.allclose(mixed, self.window.to(mixed), rtol=1e-4, atol=1e-6 * float(self.window.abs().max())))


def _probe(model, target: str, source: str, chans: list[int], size: int) -> _Probe:
    src, acts, _ = _forward(model, target, source, size, 1)
    gen = torch.Generator(device="cpu").manual_seed(0)
    mix = (torch.rand(len(chans), generator=gen, dtype=torch.float64) + 0.5).to(acts)
    cy, cx = acts.shape[2] // 2, acts.shape[3] // 2
    (g,) = torch.autograd.grad((acts[0, chans, cy, cx] * mix).sum(), src)
    rows, cols = _support(g[0])
    # A stride-1 path whose window is centred on the target: the positions the centre reads, and
    # what they read, normally lie inside the window, so a source map of the window's size gives
    # the same kernels on far fewer positions. ``agrees`` checks that it did.
    centred = (tuple(acts.shape[2:]) == tuple(src.shape[2:]) and rows.start + rows.stop - 1 == 2 * cy
               and cols.start + cols.stop - 1 == 2 * cx)
    crop = (rows.stop - rows.start, cols.stop - cols.start) if centred else None
    return _Probe(_truncated(rows, cols, *g.shape[-2:]), crop, mix.detach(), g[0][:, rows, cols].detach(), (rows, cols))


def _jacobian(model, target: str, source: str, chans: list[int], size: int, crop: tuple[int, int] | None = None,
              window: tuple[slice, slice] | None = None) -> ExpandedWeights:
    """The kernels of ``chans`` over ``window`` of the source map (default: their own support)."""
    src, acts, on_path = _forward(model, target, source, size, len(chans), crop)
    cy, cx = acts.shape[2] // 2, acts.shape[3] // 2
    idx = torch.arange(len(chans), device=acts.device)
    # Batch item i carries target chans[i]: one backward gives every target's Jacobian.
    picked = acts[idx, torch.as_tensor(chans, device=acts.device), cy, cx].sum()
    outs = [o for _, _, o in on_path]
    grads = torch.autograd.grad(picked, [src] + outs, allow_unused=True)
    jac = grads[0].detach()                                        # (T, S, H, W)
    dims = lambda g: tuple(range(1, g.dim()))  # noqa: E731
    # Nonzero anywhere, per batch item, without an |g| copy (channels-last grads do not flatten for free).
    reached = [None if g is None else ((g.amax(dims(g)) > 0) | (g.amin(dims(g)) < 0)).cpu() for g in grads[1:]]
    paths, direct = [], []
    for i in range(len(chans)):
        mods = [(n, m) for (n, m, _), r in zip(on_path, reached) if r is not None and bool(r[i])]
        mixing = [(n, m) for n, m in mods if isinstance(m, _PATH_MODULES)]
        paths.append(tuple(n for n, _ in mixing))
        direct.append(len(mixing) == 1 and isinstance(mixing[0][1], _WEIGHT_MODULES))
    rows, cols = window or _support(jac)
    h, w = jac.shape[-2:]
    return ExpandedWeights(
        target_layer=target, source_layer=source, channels=chans, weights=jac[:, :, rows, cols].contiguous(),
        origin=(rows.start, cols.start), centre=(cy, cx), source_size=(h, w), input_size=size,
        paths=paths, direct=direct, truncated=_truncated(rows, cols, h, w),
    )
