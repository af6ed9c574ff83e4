"""``circuit``: the units with the strongest weights into (or out of) one unit.

>>> c = circuit(model, "mixed4c:447", source="mixed4b", top=10)      # doctest: +SKIP
>>> print(c.table())                                                 # doctest: +SKIP

Inputs (``source=``): every unit of the source layer ranked by the total of its kernel into the
unit, the largest positive and the most negative. Outputs (``target=``): the units of a later
layer that the unit drives most. Either end may be an SAE feature (``"mixed3b/topk8x_k1:35"``,
or ``source="mixed3b/topk8x_k1"`` for all features of that SAE), given ``sae=``: a feature reads
its layer through its encoder row and writes it through its decoder direction
(:mod:`circuitsviz.circuits.features`), composed here with the expanded weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import BadInputError, check_int
from ..units import Unit
from .features import as_unit, check_feature, find_sae, layer_spec, read_vectors, write_vectors
from .weights import ExpandedWeights, _support, expanded_weights


@dataclass
class Connection:
    """One edge: ``unit`` (the other end) and its kernel, over source positions (rows top to bottom)."""

    unit: str
    total: float                 # the kernel's sum
    kernel: torch.Tensor         # (k, k)
    branch: str | None = None    # the branch of the target layer the edge runs through
    path: tuple[str, ...] = ()   # the modules (convs, pools) it runs through
    direct: bool = False         # one conv connects the two layers: these are its weights


@dataclass
class Circuit:
    """The strongest connections into (``direction="inputs"``) or out of a unit."""

    unit: str
    layer: str                   # the other layer (and SAE), e.g. "mixed4b" or "mixed3b/topk8x_k1"
    direction: str               # "inputs" or "outputs"
    positive: list[Connection]
    negative: list[Connection]
    truncated: bool = False      # some kernel reached the edge of the map it was computed on
    totals: torch.Tensor = field(default=None, repr=False)  # every unit's total, in index order

    def to_rows(self) -> list[dict]:
        """Plain rows (one per connection, positive then negative) for a store table."""
        return [dict(unit=self.unit, other=c.unit, direction=self.direction, layer=self.layer, sign=sign,
                     rank=r, total=c.total, kernel=c.kernel.tolist(), branch=c.branch, path=list(c.path),
                     direct=c.direct)
                for sign, conns in (("+", self.positive), ("-", self.negative)) for r, c in enumerate(conns, 1)]

    def table(self) -> str:
        arrow = "<-" if self.direction == "inputs" else "->"
        lines = [f"{self.unit} {arrow} {self.layer} ({self.direction}; total = sum of the kernel)"]
        for title, conns in (("positive", self.positive), ("negative", self.negative)):
            lines.append(f"  {title}:")
            lines.append(f"  {'rank':>4}  {'unit':<28} {'total':>10}  {'k':>5}  {'branch':<12} kind")
            for r, c in enumerate(conns, 1):
                k = "x".join(str(d) for d in c.kernel.shape)
                kind = "direct" if c.direct else "expanded via " + " > ".join(c.path) if c.path else "expanded"
                lines.append(f"  {r:>4}  {c.unit:<28} {c.total:>10.4g}  {k:>5}  {c.branch or '-':<12} {kind}")
        return "\n".join(lines)


def circuit(model, unit: str | Unit, *, source: str | None = None, target: str | None = None, top: int = 10,
            sae=None, input_size: int | None = None) -> Circuit:
    """The ``top`` strongest positive and negative connections of ``unit``.

    ``source="mixed4b"``: its inputs from that (earlier) layer; ``target="mixed4d"``: its outputs
    into that (later) layer. Weights are direct where one conv connects the layers, expanded
    (:func:`expanded_weights`: ReLUs as identity, max pools as average pools) otherwise.
    ``sae``: the SAE(s) that feature ids name (one, a list, or a dict).
    """
    check_int("top", top, 1), check_int("input_size", input_size, 1, 4096, optional=True)
    u = as_unit(unit)
    if (source is None) == (target is None):
        raise BadInputError("give exactly one of source= (the unit's inputs) or target= (its outputs)")
    if not isinstance(top, int) or top < 1:
        raise BadInputError(f"top must be a positive integer, got {top!r}")
    if source is not None:
        return _inputs(model, u, source, top, sae, input_size)
    return _outputs(model, u, target, top, sae, input_size)


def _end_vector(model, u: Unit, sae, read: bool) -> torch.Tensor:
    """How ``u`` reads (``read``) or writes its layer, as a vector over the layer's channels."""
    if u.sae is None:
        model.check_channel(u.layer, u.index)
        v = torch.zeros(model.channels(u.layer), dtype=torch.float64)
        v[u.index] = 1.0
        return v
    s = find_sae(sae, u.layer, u.sae)
    check_feature(s, u)
    return (read_vectors(s) if read else write_vectors(s))[u.index].double().cpu()


def _layer_matrix(model, layer: str, sae_name: str | None, sae, read: bool) -> tuple[torch.Tensor | None, int]:
    """(matrix from the layer's channels to its units, or None for the channels themselves; unit count)."""
    if sae_name is None:
        return None, model.channels(layer)
    s = find_sae(sae, layer, sae_name)
    m = (read_vectors(s) if read else write_vectors(s)).double().cpu()
    return m, m.shape[0]


def _branch(model, layer: str, u: Unit) -> str | None:
    if u.sae is not None:
        return None
    b = model.layer(layer).branch_of(u.index)
    return b.name if b else None


def _inputs(model, u: Unit, source: str, top: int, sae, input_size) -> Circuit:
    src_layer, src_sae = layer_spec(source)
    reads = _end_vector(model, u, sae, read=True)
    chans = [u.index] if u.sae is None else reads.nonzero().flatten().tolist()
    ew = expanded_weights(model, u.layer, src_layer, channels=chans, input_size=input_size)
    w = ew.weights.double().cpu()
    kernels = torch.einsum("t,tshw->shw", reads[chans], w)                 # (S, kh, kw)
    writes, n = _layer_matrix(model, src_layer, src_sae, sae, read=False)
    if writes is not None:
        kernels = torch.einsum("fs,shw->fhw", writes, kernels)
    rows, cols = _support(kernels)
    kernels = kernels[:, rows, cols]
    path, direct = (ew.paths[0], ew.direct[0]) if u.sae is None else ((), False)
    branch = _branch(model, u.layer, u)
    ids = [Unit(src_layer, i, sae=src_sae).id for i in range(n)]
    conns = [Connection(ids[i], float(kernels[i].sum()), kernels[i], branch, path, direct) for i in range(n)]
    return _ranked(u.id, source, "inputs", conns, top, ew)


def _outputs(model, u: Unit, target: str, top: int, sae, input_size) -> Circuit:
    tgt_layer, tgt_sae = layer_spec(target)
    writes = _end_vector(model, u, sae, read=False)
    ew = expanded_weights(model, tgt_layer, u.layer, input_size=input_size)
    kernels = torch.einsum("s,tshw->thw", writes, ew.weights.double().cpu())  # (T, kh, kw)
    reads, n = _layer_matrix(model, tgt_layer, tgt_sae, sae, read=True)
    conns = []
    if reads is None:
        for t in range(n):
            rows, cols = ew.window(t)
            conns.append(Connection(Unit(tgt_layer, t).id, float(kernels[t].sum()), kernels[t, rows, cols],
                                    _branch(model, tgt_layer, Unit(tgt_layer, t)), ew.paths[t], ew.direct[t]))
    else:
        kernels = torch.einsum("ft,thw->fhw", reads, kernels)
        rows, cols = _support(kernels)
        conns = [Connection(Unit(tgt_layer, f, sae=tgt_sae).id, float(kernels[f].sum()), kernels[f, rows, cols])
                 for f in range(n)]
    return _ranked(u.id, target, "outputs", conns, top, ew)


def _ranked(unit: str, layer: str, direction: str, conns: list[Connection], top: int, ew: ExpandedWeights) -> Circuit:
    totals = torch.tensor([c.total for c in conns], dtype=torch.float64)
    order = torch.argsort(totals, descending=True).tolist()
    positive = [conns[i] for i in order[:top] if conns[i].total > 0]
    negative = [conns[i] for i in reversed(order[-top:]) if conns[i].total < 0]
    return Circuit(unit, layer, direction, positive, negative, truncated=ew.truncated, totals=totals)
