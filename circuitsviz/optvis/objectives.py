"""Composable objectives, as in Lucid: ``channel("mixed4a", 476) + 100 * diversity("mixed4a")``.

An :class:`Objective` maps activations (``{layer: B x C x H x W}``, or ``B x C`` for layers
without space, such as logits) to one value per image, a tensor of shape ``(B,)``, that
rendering **maximises**. Values add, scale and negate per image, so each image's share can be
reported.

Weights mean what they mean in Lucid: the batch *mean* of every built-in objective is Lucid's
objective of the same name (Lucid's ``channel`` and ``direction`` average over the batch, and
its ``diversity`` is ``sum_{i != j} cos(G_i, G_j) / B``), so ``channel(...) + 100 * diversity(...)``
here is Lucid's ``channel(...) - 100 * diversity(...)``. ``class_logit`` and ``neuron`` are
per-image values too (Lucid sums those two over the batch).

>>> obj = channel("mixed4e", 55) - 0.5 * channel("mixed4e", 56)
>>> obj.layers
('mixed4e',)
>>> first_only = channel("mixed4e", 55, batch=0)   # acts on image 0 of the batch only

A plain function of the activations becomes an objective with :func:`objective`::

    @objective(layers=["mixed4e"])
    def peak_55(acts):
        return acts["mixed4e"][:, 55].amax(dim=(-2, -1))

Sign conventions: Lucid's ``diversity`` is a similarity to subtract; here :func:`diversity` is
minus that similarity, so it is *added*: ``channel(...) + w * diversity(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInputError, check_int

Acts = Mapping[str, torch.Tensor]


class Objective:
    """A per-image quantity to maximise. Build one with :func:`channel`, :func:`neuron`,
    :func:`direction`, :func:`class_logit`, :func:`diversity`, :func:`objective` or the algebra ``+ - *``.

    ``layers`` lists the layers ``fn`` reads (``None``: unknown, found by a probe call before
    rendering). ``checks`` validate the objective against a model before any work is done.
    ``channels`` maps each layer to the only channels ``fn`` reads, when that is known for sure
    (the built-in linear objectives and their sums); the forward pass may then skip work that
    feeds no read channel. ``None`` (the default, and for any hand-written function): all.
    """

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Iterable[str] | None, name: str,
                 checks: Sequence[Callable] = (), channels: Mapping[str, frozenset[int]] | None = None,
                 unit: str | None = None) -> None:
        self.fn = fn
        self.layers = None if layers is None else tuple(dict.fromkeys(layers))
        self.name = name
        self.checks = tuple(checks)
        self.channels = None if channels is None else dict(channels)
        # The canonical unit id when the objective is exactly one unit's (``channel("mixed4e", 55)``
        # is ``mixed4e:55``): rendering names and seeds its image by it, as for the id itself.
        self.unit = unit

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def check(self, model) -> None:
        """Raise a :class:`~circuitsviz.errors.CircuitsvizError` if the objective does not fit ``model``."""
        for layer in self.layers or ():
            model.layer(layer)
        for chk in self.checks:
            chk(model)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # ------------------------------------------------------------------ algebra
    def _combine(self, other: "Objective", op: Callable, name: str) -> "Objective":
        layers = None if self.layers is None or other.layers is None else self.layers + other.layers
        return Objective(lambda acts: op(self(acts), other(acts)), layers, name, self.checks + other.checks,
                         union_channels([self, other]))

    def __add__(self, other):
        if isinstance(other, (int, float)):
            return Objective(lambda acts: self(acts) + other, self.layers, f"{self.name} + {other}", self.checks,
                             self.channels)
        if isinstance(other, Objective):
            return self._combine(other, torch.add, f"{self.name} + {other.name}")
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, k):
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Objective(lambda acts: k * self(acts), self.layers, f"{k} * ({self.name})", self.checks,
                         self.channels)

    __rmul__ = __mul__

    def __truediv__(self, k):
        return self * (1.0 / k) if isinstance(k, (int, float)) else NotImplemented

    def __neg__(self) -> "Objective":
        return -1 * self

    def __sub__(self, other):
        return self + (-other) if isinstance(other, (int, float, Objective)) else NotImplemented

    def __rsub__(self, other):
        return (-self) + other

    # ----------------------------------------------------------------- batching
    def on(self, batch: int | slice) -> "Objective":
        """The same objective evaluated on one image (or a contiguous slice) of the batch only;
        the other images get 0. Like Lucid's ``batch=`` argument."""
        def fn(acts: Acts) -> torch.Tensor:
            n = _batch_size(acts)
            start, stop, step = (slice(batch, batch + 1) if isinstance(batch, int) else batch).indices(n)
            if step != 1 or stop <= start:
                raise BadInputError(f"batch index {batch!r} selects no contiguous images of a batch of {n}")
            vals = self({k: v[start:stop] for k, v in acts.items()})
            return F.pad(vals, (start, n - stop))

        return Objective(fn, self.layers, f"{self.name}[batch={batch}]", self.checks, self.channels)


class LinearObjective(Objective):
    """``coef * <weights, acts[layer]>`` at one position (``pos``) or averaged over space.

    :func:`channel`, :func:`neuron` and :func:`direction` build these; rendering evaluates a
    batch of them with one gather or one matrix product instead of one call per image.
    """

    def __init__(self, layer: str, channel: int | None, vector: torch.Tensor | None,
                 pos: tuple[int | None, int | None] | None, coef: float, name: str, checks=(),
                 unit: str | None = None) -> None:
        self.layer, self.channel, self.vector, self.pos, self.coef = layer, channel, vector, pos, coef
        read = [channel] if channel is not None else torch.nonzero(vector).flatten().tolist()
        super().__init__(self._value, [layer], name, checks, {layer: frozenset(read)},
                         unit=unit if coef == 1 else None)

    def _value(self, acts: Acts) -> torch.Tensor:
        a = _positions(_at(acts[self.layer], self.pos))
        if self.channel is not None:
            v = a[:, self.channel].mean(dim=-1)
        else:
            v = torch.einsum("bcn,c->b", a, self.vector.to(a.device, a.dtype)) / a.shape[-1]
        return v * self.coef if self.coef != 1 else v

    def weights(self, channels: int) -> torch.Tensor:
        """The dense channel weight vector (coefficient included)."""
        if self.channel is not None:
            w = torch.zeros(channels)
            w[self.channel] = 1.0
        else:
            w = self.vector.float().cpu()
        return w * self.coef

    def __mul__(self, k):
        if not isinstance(k, (int, float)):
            return NotImplemented
        return LinearObjective(self.layer, self.channel, self.vector, self.pos, self.coef * k,
                               f"{k} * ({self.name})", self.checks)

    __rmul__ = __mul__


def union_channels(objectives: Iterable[Objective]) -> dict[str, frozenset[int]] | None:
    """The channels that a sum of ``objectives`` reads, per layer (``None`` if any may read all)."""
    out: dict[str, frozenset[int]] = {}
    for o in objectives:
        if o.channels is None or o.layers is None or set(o.layers) - set(o.channels):
            return None
        for layer, chans in o.channels.items():
            out[layer] = out.get(layer, frozenset()) | chans
    return out


def _positions(a: torch.Tensor) -> torch.Tensor:
    """``B x C x N``: the activations at each of the N positions (N = 1 for a ``B x C`` layer)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _at(a: torch.Tensor, pos: tuple[int | None, int | None] | None) -> torch.Tensor:
    """``a`` restricted to one spatial position (``None`` entries: the centre), or all of it.
    A layer without space (``B x C``) has one position, which a neuron may only ask for implicitly."""
    if pos is None:
        return a
    if a.dim() == 2:
        if pos != (None, None):
            raise BadInputError(f"neuron position (y={pos[0]}, x={pos[1]}) asked of a layer without spatial "
                                f"positions (shape {tuple(a.shape[1:])}); leave x and y unset")
        return a
    h, w = a.shape[-2:]
    y = h // 2 if pos[0] is None else pos[0]
    x = w // 2 if pos[1] is None else pos[1]
    if not (0 <= y < h and 0 <= x < w):
        raise BadInputError(f"neuron position (y={y}, x={x}) is outside the {h}x{w} activation map")
    return a[..., y:y + 1, x:x + 1]


def _batch_size(acts: Acts) -> int:
    for v in acts.values():
        return v.shape[0]
    raise BadInputError("objective evaluated without activations")


def _check_channel(layer: str, c: int):
    return lambda model: model.check_channel(layer, c)


def _with_batch(obj: Objective, batch: int | slice | None) -> Objective:
    return obj if batch is None else obj.on(batch)


# --------------------------------------------------------------------- builders
def channel(layer: str, c: int, batch: int | slice | None = None) -> Objective:
    """Mean activation of channel ``c`` of ``layer`` over all positions (the value itself on a
    ``B x C`` layer)."""
    check_int("channel", c, 0)
    return _with_batch(LinearObjective(layer, c, None, None, 1.0, f"channel({layer}:{c})",
                                       [_check_channel(layer, c)], unit=f"{layer}:{c}"), batch)


def neuron(layer: str, c: int, x: int | None = None, y: int | None = None,
           batch: int | slice | None = None) -> Objective:
    """Activation of channel ``c`` at row ``y``, column ``x``; the centre (``H//2, W//2``) by default.

    ``x`` is the column, as in lucent and in image coordinates. Lucid's ``neuron(layer, c, x, y)``
    indexes its NHWC tensor as ``[:, x, y]``, so its ``x`` is the row: Lucid's ``neuron(l, c, x=a, y=b)``
    is ``neuron(l, c, x=b, y=a)`` here. On a ``B x C`` layer, leave both unset.
    """
    check_int("channel", c, 0), check_int("x", x, 0, optional=True), check_int("y", y, 0, optional=True)
    where = f"@{'c' if y is None else y},{'c' if x is None else x}"
    unit = f"{layer}:{c}@{y},{x}" if x is not None and y is not None else None
    return _with_batch(LinearObjective(layer, c, None, (y, x), 1.0, f"neuron({layer}:{c}{where})",
                                       [_check_channel(layer, c)], unit=unit), batch)


def class_logit(layer: str, label: int | str, *, labels: Sequence[str] | None = None,
                batch: int | slice | None = None) -> Objective:
    """The logit of one class: Lucid's ``class_logit``, a :func:`channel` of a ``B x C`` logits layer.

    ``label`` is the class index, or its name looked up in ``labels`` (e.g. ``model.labels``).

    >>> class_logit("softmax2_pre_activation_matmul", 3).name
    'class_logit(softmax2_pre_activation_matmul:3)'
    """
    if isinstance(label, str):
        if labels is None:
            raise BadInputError(f"class {label!r} given by name: pass labels= (e.g. model.labels) or its index")
        if label not in labels:
            raise BadInputError(f"unknown class {label!r}; valid: {', '.join(map(str, labels))}")
        label = list(labels).index(label)
    check_int("label", label, 0)
    return _with_batch(LinearObjective(layer, label, None, None, 1.0, f"class_logit({layer}:{label})",
                                       [_check_channel(layer, label)], unit=f"{layer}:{label}"), batch)


def direction(layer: str, vector, batch: int | slice | None = None, *, name: str | None = None) -> Objective:
    """Dot product of the activation vector with ``vector`` (length C), averaged over positions.

    Lucid's ``direction`` with its default ``cossim_pow=0``; this is how SAE features are rendered
    (``vector`` = the feature's decoder row). Lucent uses the cosine instead.
    """
    try:
        v = torch.as_tensor(np.asarray(vector.detach().cpu() if isinstance(vector, torch.Tensor) else vector,
                                       dtype=np.float32))
    except (TypeError, ValueError):
        raise BadInputError(f"direction vector must be numbers, one per channel, got {type(vector).__name__}") from None
    if v.dim() != 1:
        raise BadInputError(f"direction vector must be 1-D (one weight per channel), got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        bad = int((~torch.isfinite(v)).sum())
        raise BadInputError(f"direction vector for {layer!r} has {bad} NaN/inf entries")

    def check_length(model) -> None:
        n = model.channels(layer)
        if v.numel() != n:
            raise BadInputError(f"direction vector has length {v.numel()} but layer {layer!r} has {n} channels")

    label = name or f"direction({layer}, |v|={float(v.norm()):.3g})"
    return _with_batch(LinearObjective(layer, None, v, None, 1.0, label, [check_length]), batch)


def diversity(layer: str) -> Objective:
    """Minus the pairwise cosine similarity of the images' Gram matrices at ``layer`` (Lucid's
    diversity term with the sign flipped, so it is added). Image i gets
    ``-sum_{j != i} cos(G_i, G_j)``, so the batch mean is minus Lucid's
    ``sum_{i != j} cos(G_i, G_j) / B`` and a weight ``w`` here is Lucid's ``w``."""
    def fn(acts: Acts) -> torch.Tensor:
        flat = _positions(acts[layer])                         # B x C x HW
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        sim = grams @ grams.T
        return -(sim.sum(1) - sim.diagonal())

    return Objective(fn, [layer], f"diversity({layer})")


def objective(fn: Callable[[Acts], torch.Tensor] | None = None, *, layers: Iterable[str] | None = None,
              name: str | None = None):
    """Turn a function ``acts -> (B,) values`` into an :class:`Objective` (usable as a decorator).

    >>> @objective(layers=["mixed4e"])
    ... def peak_55(acts):
    ...     return acts["mixed4e"][:, 55].amax(dim=(-2, -1))
    >>> (2 * peak_55).layers
    ('mixed4e',)

    Without ``layers``, the layers are discovered by a probe call before rendering.
    """
    def wrap(f: Callable[[Acts], torch.Tensor]) -> Objective:
        return Objective(f, layers, name or getattr(f, "__name__", "objective"))

    return wrap if fn is None else wrap(fn)



def stack(groups: Sequence[tuple[Objective, int]]) -> Objective:
    """One objective for a whole batch: group ``g`` owns the next ``n_g`` images and is scored by
    its own objective on those images only (so images never interact across groups).

    Single images scored by :class:`LinearObjective` on the same layer and position are
    evaluated together with one gather (channels) or one matrix product (directions).
    """
    buckets: dict[tuple, list[tuple[int, LinearObjective]]] = {}
    others: list[tuple[Objective, slice]] = []
    start = 0
    for obj, n in groups:
        if n == 1 and isinstance(obj, LinearObjective):
            buckets.setdefault((obj.layer, obj.pos), []).append((start, obj))
        else:
            others.append((obj, slice(start, start + n)))
        start += n
    total_n = start
    layers = [layer for layer, _ in buckets] + [l for o, _ in others for l in (o.layers or ())]
    unknown = any(o.layers is None for o, _ in others)
    weight_cache: dict[tuple, torch.Tensor] = {}

    def fn(acts: Acts) -> torch.Tensor:
        ref = next(iter(acts.values()))
        total = torch.zeros(total_n, device=ref.device, dtype=ref.dtype)
        for (layer, pos), members in buckets.items():
            a = _positions(_at(acts[layer], pos))
            rows = torch.tensor([r for r, _ in members], device=a.device)
            coefs = torch.tensor([o.coef for _, o in members], device=a.device, dtype=a.dtype)
            if all(o.channel is not None for _, o in members):
                chans = torch.tensor([o.channel for _, o in members], device=a.device)
                v = a[rows, chans].mean(dim=-1) * coefs
            else:
                key = (layer, pos, a.device, a.dtype)
                if key not in weight_cache:  # built once, not every step
                    weight_cache[key] = torch.stack([o.weights(a.shape[1]) for _, o in members]).to(a.device, a.dtype)
                w = weight_cache[key]
                v = torch.einsum("bcn,bc->b", a.index_select(0, rows), w) / a.shape[-1]
            total = total.index_add(0, rows, v)
        for obj, sl in others:
            total = total + obj.on(sl)(acts)
        return total

    names = [o.name for o, _ in groups]
    name = f"stack({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    checks = [c for o, _ in groups for c in o.checks]
    return Objective(fn, None if unknown else layers, name, checks, union_channels(o for o, _ in groups))
