"""``VisionModel``: any network plus its layer table, input convention and truncated forward."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import BadInputError, ChannelOutOfRangeError, UnknownNameError
from .blocks import AffineInput


@dataclass(frozen=True)
class Branch:
    """The channel range ``[start, stop)`` that one branch of a mixed layer owns."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class LayerInfo:
    """One named layer: the module whose output it is, its width and its branch ranges."""

    name: str
    module: str
    channels: int | None = None
    branches: tuple[Branch, ...] = ()

    def branch_of(self, channel: int) -> Branch | None:
        return next((b for b in self.branches if b.start <= channel < b.stop), None)


@dataclass(frozen=True)
class LayerShape:
    """A row of :func:`list_layers`: the layer plus its activation shape at a given input size."""

    name: str
    channels: int
    height: int | None
    width: int | None
    branches: tuple[Branch, ...] = field(default_factory=tuple)


class _StopForward(Exception):
    """Raised by the last capture hook to end a forward pass early."""


# An intervention: gets a layer's activations, returns replacements (same shape) or None to keep them.
Hook = Callable[[torch.Tensor], "torch.Tensor | None"]


class VisionModel(nn.Module):
    """A network together with what circuitsviz needs to know about it.

    Images are float NCHW RGB in ``[0, 1]``; the model maps them to its own input space.
    Layers are addressed by name: the model's table (Lucid names for InceptionV1) or any module
    path (``inception4e.branch1``). The device is wherever the model's parameters are.

    >>> model = load_model("inceptionv1", pretrained=False)         # doctest: +SKIP
    >>> acts = model.activations(images, ["mixed3b", "mixed4e"])    # doctest: +SKIP
    >>> acts["mixed4e"].shape                                       # doctest: +SKIP
    torch.Size([8, 832, 14, 14])
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str = "custom",
        layers: Iterable[LayerInfo] = (),
        input_size: int = 224,
        input_scale: float | list[float] = 1.0,
        input_shift: float | list[float] = 0.0,
        labels: list[str] | None = None,
        weights_path: str | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.preprocess = AffineInput(input_scale, input_shift)
        self.name = name
        self.input_size = int(input_size)
        self.labels = labels
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self._table = {info.name: info for info in layers}
        self._modules_by_path = dict(net.named_modules())
        self._shapes: dict[int, dict[str, tuple[int, ...]]] = {}

    # ----------------------------------------------------------------- device
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # ----------------------------------------------------------------- layers
    @property
    def layer_names(self) -> list[str]:
        """The named layers: the table when the model has one, otherwise every module path."""
        return list(self._table) if self._table else [p for p in self._modules_by_path if p]

    def layer(self, name: str) -> LayerInfo:
        """The :class:`LayerInfo` for ``name``; unknown names raise with the nearest valid ones."""
        if name in self._table:
            return self._table[name]
        if name and name in self._modules_by_path:
            return LayerInfo(name, name, None)
        raise UnknownNameError("layer", name, self.layer_names)

    def module(self, layer: str) -> nn.Module:
        """The module whose output is ``layer``."""
        return self._modules_by_path[self.layer(layer).module]

    def channels(self, layer: str) -> int:
        """How many channels ``layer`` has (probed with one small forward if the table lacks it)."""
        info = self.layer(layer)
        if info.channels is not None:
            return info.channels
        return self.layer_shapes([layer])[layer][0]

    def check_channel(self, layer: str, channel: int) -> None:
        n = self.channels(layer)
        if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < n:
            raise ChannelOutOfRangeError(layer, channel, n)

    def layer_shapes(self, layers: Iterable[str] | None = None, input_size: int | None = None) -> dict[str, tuple[int, ...]]:
        """Activation shape (without batch) of each layer at ``input_size``, from one dummy forward."""
        size = input_size or self.input_size
        names = list(layers) if layers is not None else self.layer_names
        cache = self._shapes.setdefault(size, {})
        todo = [n for n in names if n not in cache]
        if todo:
            x = torch.full((1, 3, size, size), 0.5, device=self.device)
            acts = self.activations(x, todo, _stop=False)
            cache.update({n: tuple(a.shape[1:]) for n, a in acts.items()})
        return {n: cache[n] for n in names}

    # ----------------------------------------------------------------- forward
    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise BadInputError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise BadInputError(
                f"images must be float N x 3 x H x W (RGB, NCHW), got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise BadInputError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        if images.numel() == 0:
            raise BadInputError(f"no images to run (shape {tuple(images.shape)})")
        if not bool(torch.isfinite(images).all()):
            raise BadInputError(f"images hold {int((~torch.isfinite(images)).sum())} NaN or infinite values; "
                                "images must be finite, in [0, 1]")
        param = next(self.net.parameters(), None)
        if param is not None and param.is_floating_point() and images.dtype != param.dtype:
            images = images.to(param.dtype)  # e.g. float64 images for a float32 net
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise BadInputError(
                f"images must lie in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); "
                "pass raw images, the model applies its own normalisation"
            )
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The network's own output for images in [0, 1]."""
        return self.net(self.preprocess(self._layout(images.to(self.device))))

    @staticmethod
    def _layout(images: torch.Tensor) -> torch.Tensor:
        """On the CPU, feed the net channels-last images: oneDNN then runs every conv, pool and
        element-wise op without re-laying out each activation (about 1.3x faster forward and
        backward, measured on InceptionV1). Values are unchanged; activations come back
        channels-last, so callers reshape rather than view them. CUDA keeps the layout it gets."""
        if images.device.type == "cpu" and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def activations(
        self,
        images: torch.Tensor,
        layers: str | Iterable[str],
        *,
        grad: bool = False,
        check: bool = True,
        channels: Mapping[str, Iterable[int] | None] | None = None,
        hooks: Mapping[str, Hook] | None = None,
        _stop: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run the network only as far as the deepest requested layer; return exactly those layers.

        ``grad=False`` (the default) runs without autograd. Optimisation passes ``grad=True`` and
        ``check=False`` (its images are in range by construction). Hooks are always removed.
        ``channels`` promises that only these channels of each layer will be read; a network
        that can use it (InceptionV1 skips the branches of the deepest mixed layer that hold
        none of them) returns the unread channels as zeros.
        ``hooks`` intervene as in :meth:`run_with_hooks`; a requested layer that is also hooked
        comes back as the hook left it.
        """
        names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        if not names:
            raise BadInputError("ask for at least one layer")
        modules = {n: self._modules_by_path[self.layer(n).module] for n in names}
        if check:
            images = self.check_images(images)
        captured: dict[str, torch.Tensor] = {}

        def hook_for(name: str):
            def hook(_module, _inputs, output):
                captured[name] = output
                if _stop and len(captured) == len(names):
                    raise _StopForward

            return hook

        skipping = getattr(self.net, "skipping_unread_branches", None)
        pruned = skipping(names, channels) if channels and skipping else contextlib.nullcontext()
        # Interventions are registered first, so a capture on the same module sees their result.
        with self.intervening(hooks or {}):
            handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
            try:
                with torch.set_grad_enabled(grad and torch.is_grad_enabled()), pruned:
                    try:
                        self.net(self.preprocess(self._layout(images.to(self.device))))
                    except _StopForward:
                        pass
            finally:
                for h in handles:
                    h.remove()
        missing = [n for n in names if n not in captured]
        if missing:
            raise BadInputError(f"layers {missing} were not computed by the forward pass of {self.name!r}")
        return {n: captured[n] for n in names}

    def run_with_hooks(self, images: torch.Tensor, hooks: Mapping[str, Hook], *, grad: bool = False,
                       check: bool = True) -> torch.Tensor:
        """The network's output with interventions: ``hooks[layer](acts)`` may return replacements.

        A hook gets the layer's activations (N x C x H x W; on the CPU laid out channels-last) and
        returns a tensor of the same shape to use downstream instead, or None to leave them.
        Hooks are removed afterwards, also when the forward pass or a hook raises. Ready-made
        hooks (ablate channels, splice an SAE) are in :mod:`circuitsviz.circuits.hooks`.

        >>> def zero_55(a):                                                     # doctest: +SKIP
        ...     a = a.clone(); a[:, 55] = 0; return a
        >>> probs = model.run_with_hooks(images, {"mixed4e": zero_55})          # doctest: +SKIP

        Only layers whose output feeds the rest of the network can be intervened on:
        InceptionV1's and the demo's ``mixedXX_pre_relu`` is a copy made for reading (the branches' own
        ``*_pre_relu`` layers do feed it).
        """
        if check:
            images = self.check_images(images)
        with self.intervening(hooks), torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self.net(self.preprocess(self._layout(images.to(self.device))))

    @contextlib.contextmanager
    def intervening(self, hooks: Mapping[str, Hook]) -> Iterator[None]:
        """Within the block, every forward pass applies ``hooks`` (``{layer: fn}``); then they are removed."""
        if not isinstance(hooks, Mapping):
            raise BadInputError(f"hooks must be a mapping {{layer: fn}}, got {type(hooks).__name__}")
        modules = {n: self.module(n) for n in hooks}
        for n, fn in hooks.items():
            if not callable(fn):
                raise BadInputError(f"the hook for layer {n!r} must be callable, got {type(fn).__name__}")

        def wrap(name: str, fn: Hook):
            def hook(_module, _inputs, output):
                new = fn(output)
                if new is not None and (not isinstance(new, torch.Tensor) or new.shape != output.shape):
                    got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                    raise BadInputError(f"the hook for layer {name!r} returned {got}; "
                                        f"it must return None or a tensor of shape {tuple(output.shape)}")
                return new

            return hook

        handles = []
        try:
            for n, fn in hooks.items():
                handles.append(modules[n].register_forward_hook(wrap(n, fn)))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def redirected_relu(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, ReLUs that support it pass Lucid's redirected gradient."""
        mods = [m for m in self.net.modules() if hasattr(m, "redirect")]
        old = [m.redirect for m in mods]
        try:
            for m in mods:
                m.redirect = enabled
            yield
        finally:
            for m, o in zip(mods, old):
                m.redirect = o

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within the block, parameters need no gradient, so a backward pass to the input skips
        every weight gradient (about a third of its cost)."""
        params = list(self.parameters())
        old = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            yield
        finally:
            for p, o in zip(params, old):
                p.requires_grad_(o)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, layers={len(self.layer_names)}"
