"""Stable string ids for the things we study.

One id is used everywhere: the store, the CLI, the Python API and the viewer's URL.

=========================  ================================================
``mixed4e:55``             channel 55 of mixed4e (spatial mean / max)
``mixed4e:55@7,3``         the neuron of channel 55 at row 7, column 3
``mixed4e/topk8x_k32:17``  feature 17 of the SAE ``topk8x_k32`` on mixed4e
=========================  ================================================

SAE names default to :func:`sae_name` (``topk8x_k32``: 8 features per channel, k = 32).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError, check_int

_UNIT_RE = re.compile(
    r"^(?P<layer>[A-Za-z0-9_.\-]+?)(?:/(?P<sae>[A-Za-z0-9_.\-]+))?:(?P<index>\d+)"
    r"(?:@(?P<y>\d+),(?P<x>\d+))?$"
)


@dataclass(frozen=True, order=True)
class Unit:
    """A channel, a spatial neuron, or an SAE feature of one layer.

    >>> Unit.parse("mixed4e:55")
    Unit(layer='mixed4e', index=55, sae=None, pos=None)
    >>> Unit("mixed4e", 3, sae="sae").id
    'mixed4e/sae:3'
    """

    layer: str
    index: int
    sae: str | None = None
    pos: tuple[int, int] | None = None  # (y, x) for a spatial neuron

    @property
    def kind(self) -> str:
        if self.sae is not None:
            return "feature"
        return "neuron" if self.pos is not None else "channel"

    @property
    def id(self) -> str:
        s = self.layer + (f"/{self.sae}" if self.sae else "") + f":{self.index}"
        if self.pos is not None:
            s += f"@{self.pos[0]},{self.pos[1]}"
        return s

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, text: str) -> "Unit":
        m = _UNIT_RE.match(text.strip())
        if not m:
            raise BadInputError(
                f"cannot parse unit id {text!r}; expected 'layer:channel' (mixed4e:55), "
                "'layer:channel@y,x' (mixed4e:55@7,7) or 'layer/sae:feature' (mixed4e/sae:17)"
            )
        pos = (int(m["y"]), int(m["x"])) if m["y"] is not None else None
        return cls(m["layer"], int(m["index"]), sae=m["sae"], pos=pos)


def sae_name(kind: str = "topk", expansion: int = 8, k: int | None = 32) -> str:
    """The one default name of an SAE, used by ``fit_sae``, ``study`` and the CLI alike.

    >>> sae_name("topk", 8, 32), sae_name("relu", 4)
    ('topk8x_k32', 'relu4x')
    """
    check_int("expansion", expansion, 1), check_int("k", k, 1, optional=True)
    return f"topk{expansion}x_k{k}" if kind == "topk" else f"{kind}{expansion}x"


def resolve_sae(unit: Unit | str, *, sae=None, run=None, model=None):
    """The SAE a feature id such as ``mixed3b/topk8x_k1:17`` (or a feature layer such as
    ``mixed3b/topk8x_k1``) names: ``sae`` itself (checked against the id), or the one the run
    ``run`` (a :class:`Run` or its path) recorded under that name."""
    if not isinstance(unit, (str, Unit)):
        raise BadInputError(f"a feature is a unit id such as 'mixed3b/topk8x_k1:17', got {unit!r:.60}")
    if isinstance(unit, str) and ":" not in unit and "/" in unit:  # a feature layer: its SAE is the same
        layer, _, name = unit.partition("/")
        unit = Unit(layer, 0, sae=name)
        what = f"{layer}/{name}"
    else:
        unit = Unit.parse(unit) if isinstance(unit, str) else unit
        what = unit.id
    if unit.sae is None:
        raise BadInputError(f"{unit.id} is not an SAE feature (those read 'layer/sae:index')")
    if isinstance(sae, (str, Path)):  # an SAE's directory, as fit_sae(out=...) or a run writes it
        from .sae import load_sae

        sae = load_sae(sae, model=model, layer=unit.layer, device=getattr(model, "device", None))
    if sae is not None:
        if not hasattr(sae, "decoder_direction"):
            raise BadInputError(f"sae= must be a fitted SAE or its directory, got {sae!r:.60}")
        if (sae.layer, sae.name) != (unit.layer, unit.sae):
            raise BadInputError(f"{what} names SAE {unit.layer}/{unit.sae}, but sae= is {sae.layer}/{sae.name}")
        return sae
    if run is None:
        raise BadInputError(f"{what} names SAE features: pass sae= (the fitted SAE or its directory) or run= "
                            "(a run that holds it)")
    from .store import Run, open_run

    run = run if isinstance(run, Run) else open_run(run)
    return run.load_sae(unit.sae, unit.layer, model=model, device=getattr(model, "device", None))


def feature_objective(unit: Unit | str, *, sae=None, run=None, model=None):
    """The objective that renders an SAE feature: its decoder direction, named by the feature id,
    so ``visualize`` results and ``run.add_visualizations`` know which unit they are.

    >>> cv.visualize(model, cv.feature_objective("mixed3b/topk8x_k1:17", run="runs/demo"))  # doctest: +SKIP
    """
    from .optvis import direction

    unit = Unit.parse(unit) if isinstance(unit, str) else unit
    sae = resolve_sae(unit, sae=sae, run=run, model=model)
    return direction(unit.layer, sae.decoder_direction(unit.index), name=unit.id)


MAX_CHANNELS = 1 << 20  # bound on a range when the layer's width is not given


def parse_channels(spec: str | int | list[int] | range, total: int | None = None) -> list[int]:
    """Parse ``"55,56,60-70"`` (inclusive ranges) or ``"*"`` into a sorted list of channels.

    >>> parse_channels("1,3-5")
    [1, 3, 4, 5]
    """
    check_int("total", total, 0, optional=True)
    limit = total if total is not None else MAX_CHANNELS
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec]
    if not isinstance(spec, str):
        try:
            return sorted(set(check_int("channel", c, 0) for c in spec))
        except TypeError:
            raise BadInputError(f"channels must be a spec like '55,60-70', an int or a list of ints, got {spec!r}") from None
    spec = spec.strip()
    if spec in ("*", "all", ""):
        if total is None:
            raise BadInputError(f"channel spec {spec!r} needs the layer's channel count")
        return list(range(total))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            a, b = (int(p) for p in part.split("-", 1)) if "-" in part else (int(part),) * 2
            if b < a:
                raise ValueError
        except ValueError:
            raise BadInputError(
                f"bad channel spec {part!r} in {spec!r}; use comma-separated indices and "
                "inclusive ranges such as '55,56,60-70', or '*' for all"
            ) from None
        if b >= limit:  # checked before the range is built: '0-100000000' must not fill memory
            raise BadInputError(f"channel {b} in {spec!r} is out of range (valid: 0..{limit - 1})")
        out.update(range(a, b + 1))
    return sorted(out)
