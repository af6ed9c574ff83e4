"""Circuits in a run: the ``circuits`` and ``faithfulness`` tables (store schema 3).

Written only through the publishing methods below (mixed into :class:`~circuitsviz.store.Run`),
read back as plain records (numpy kernels, no torch), so the viewer needs no model::

    run.add_circuit(cv.circuit(model, "mixed3b:4", source="mixed3a"), model=model)
    run.add_faithfulness(cv.faithfulness(model, "mixed3b:4", source="mixed3a", data=images), data=spec)
    run.circuit("mixed3b:4", source="mixed3a").positive[0].kernel     # (k, k) numpy array
    run.faithfulness("mixed3b:4")                                      # [StoredFaithfulness, ...]

A circuit is a step (``circuit``, key ``UNIT|inputs|LAYER`` or ``UNIT|outputs|LAYER``) whose
settings are ``top`` and ``hash``: a hash of the model weights' SHA-256, the layer pair, the SAEs
named at either end (their recorded settings) and the input size. Storing it again with other
settings is refused (:class:`SettingsChangedError`) unless ``overwrite``, which replaces the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInputError
from ..units import Unit
from .steps import canonical, config_hash, to_json


@dataclass
class StoredConnection:
    """One stored edge: ``other`` is the unit at the far end; ``kernel`` is k x k over source positions."""

    other: str
    total: float
    kernel: np.ndarray
    branch: str | None = None
    path: tuple[str, ...] = ()
    direct: bool = False


@dataclass
class StoredCircuit:
    """A circuit as the run holds it: the strongest positive and negative connections of ``unit``."""

    unit: str
    layer: str                   # the other layer (and SAE)
    direction: str               # "inputs" or "outputs"
    positive: list[StoredConnection] = field(default_factory=list)
    negative: list[StoredConnection] = field(default_factory=list)
    key: str = ""                # hash of weights, layer pair, SAEs, input size

    def to_rows(self) -> list[dict]:
        """The rows of :meth:`circuitsviz.circuits.Circuit.to_rows` (a stored circuit reads back equal)."""
        return [dict(unit=self.unit, other=c.other, direction=self.direction, layer=self.layer, sign=sign, rank=r,
                     total=c.total, kernel=c.kernel.tolist(), branch=c.branch, path=list(c.path), direct=c.direct)
                for sign, conns in (("+", self.positive), ("-", self.negative)) for r, c in enumerate(conns, 1)]


@dataclass
class StoredFaithfulness:
    """A stored :class:`~circuitsviz.circuits.Faithfulness`: top-``n`` drop vs ``n`` random sources."""

    unit: str
    source: str
    n: int
    mode: str
    method: str
    top_sources: list[str]
    top_drop: float
    top_interval: tuple[float, float]
    random_drop: float           # mean over draws
    random_interval: tuple[float, float]
    draws: int
    baseline: float
    examples: int | None = None  # the unit's top images kept (None: all)
    data: dict | None = None     # the held-out images' dataset spec

    @property
    def ratio(self) -> float:
        return self.top_drop / self.random_drop if self.random_drop > 0 else float("inf")

    @property
    def disjoint(self) -> bool:
        return self.top_interval[0] > self.random_interval[1]

    @property
    def passes(self) -> bool:
        """The issue's target: the top-n drop is at least 2x the random-n drop, intervals disjoint."""
        return self.ratio >= 2 and self.disjoint


def _sae_names(spec: str) -> list[str]:
    """The ``layer/sae`` slots a unit id or layer spec names (none for plain channels and layers)."""
    head = spec.partition(":")[0]
    return [head] if "/" in head else []


class CircuitStore:
    """The circuit half of :class:`~circuitsviz.store.Run` (mixed into it)."""

    def circuit_key(self, unit: str, layer: str, *, weights: str | None = None,
                    input_size: int | None = None) -> str:
        """The hash a stored circuit is keyed by: weights, the layer pair, the SAEs at either end, input size."""
        saes = {}
        for slot in _sae_names(unit) + _sae_names(layer):
            rec = self.step("sae", slot)
            saes[slot] = rec.settings if rec is not None else None
        return config_hash(canonical(dict(weights=weights or self.info().weights_sha256,
                                          layers=[unit.partition(":")[0], layer], saes=saes, input_size=input_size)))

    def add_circuit(self, circuit, *, model=None, input_size: int | None = None, overwrite: bool = False) -> int:
        """Record a :func:`~circuitsviz.circuits.circuit` result (one row per connection). ``model``
        records the weights the circuit was computed from (default: the run's). Returns the rows written.

        >>> run.add_circuit(cv.circuit(model, "mixed3b:4", source="mixed3a", top=5), model=model)  # doctest: +SKIP
        10
        """
        from .publish import model_fingerprint

        if model is not None:
            self.add_model(model)
        rows = circuit.to_rows()
        for slot in _sae_names(circuit.unit) + _sae_names(circuit.layer):
            if self.step("sae", slot) is None:
                raise BadInputError(f"circuit {circuit.unit} names SAE {slot}, which is not in this run; "
                                    "add it first (run.add_sae(sae))")
        weights = model_fingerprint(model) if model is not None else None
        key = self.circuit_key(circuit.unit, circuit.layer, weights=weights, input_size=input_size)
        step_key = f"{circuit.unit}|{circuit.direction}|{circuit.layer}"
        settings = {"top": max(len(circuit.positive), len(circuit.negative)), "hash": key}
        self.check_step("circuit", step_key, settings, overwrite=overwrite, what=f"circuit {step_key}")
        with self.batch():
            self._add_unit(circuit.unit)
            self._conn.execute("DELETE FROM circuits WHERE unit_id = ? AND direction = ? AND layer = ?",
                               (circuit.unit, circuit.direction, circuit.layer))
            for r in rows:
                self._add_unit(r["other"])
                self._conn.execute(
                    "INSERT INTO circuits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r["unit"], r["other"], r["direction"], r["layer"], r["sign"], r["rank"], float(r["total"]),
                     json.dumps(r["kernel"]), r["branch"], json.dumps(r["path"]), int(r["direct"]), key))
            self.mark_done("circuit", step_key, settings)
        return len(rows)

    def add_faithfulness(self, f, *, data=None, examples: int | None = None) -> None:
        """Record a :func:`~circuitsviz.circuits.faithfulness` result. ``data``: the held-out
        images' dataset (or its ``spec()``); ``examples``: the unit's top images it kept."""
        spec = data.spec() if hasattr(data, "spec") else data
        if spec is not None and not isinstance(spec, dict):
            raise BadInputError(f"data is a dataset or its spec() (a dict), got {type(spec).__name__}")
        drops = [float(x) for x in f.random_drops]
        with self.batch():
            self._add_unit(f.unit)
            self._conn.execute(
                "INSERT OR REPLACE INTO faithfulness VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f.unit, f.source, int(f.n), f.mode, f.method, json.dumps(list(f.top_sources)), float(f.top_drop),
                 float(f.top_interval[0]), float(f.top_interval[1]), float(np.mean(drops)) if drops else 0.0,
                 float(f.random_interval[0]), float(f.random_interval[1]), len(drops), float(f.baseline),
                 examples, None if spec is None else to_json(spec)))

    # ------------------------------------------------------------------------ reading
    def circuit(self, unit_id: str, *, source: str | None = None, target: str | None = None) -> StoredCircuit | None:
        """The stored inputs of ``unit_id`` from ``source`` (or outputs into ``target``), or None.

        >>> run.circuit("mixed3b:4", source="mixed3a").positive[0].other       # doctest: +SKIP
        'mixed3a:43'
        """
        if (source is None) == (target is None):
            raise BadInputError("give exactly one of source= (the unit's inputs) or target= (its outputs)")
        uid = Unit.parse(unit_id).id
        direction, layer = ("inputs", source) if source is not None else ("outputs", target)
        rows = self._rows("SELECT other, sign, total, kernel, branch, path, direct, key FROM circuits "
                          "WHERE unit_id = ? AND direction = ? AND layer = ? ORDER BY sign, rank",
                          (uid, direction, layer))
        if not rows:
            return None
        c = StoredCircuit(uid, layer, direction, key=rows[0][7])
        for other, sign, total, kernel, branch, path, direct, _ in rows:
            conn = StoredConnection(other, total, np.asarray(json.loads(kernel), dtype=np.float64), branch,
                                    tuple(json.loads(path)), bool(direct))
            (c.positive if sign == "+" else c.negative).append(conn)
        return c

    def circuits(self, unit_id: str) -> list[tuple[str, str]]:
        """The ``(direction, layer)`` pairs the run holds circuits of ``unit_id`` for."""
        return [tuple(r) for r in self._rows("SELECT DISTINCT direction, layer FROM circuits WHERE unit_id = ? "
                                             "ORDER BY direction, layer", (Unit.parse(unit_id).id,))]

    def circuit_units(self) -> list[str]:
        """Every unit the run holds a circuit of, in the order they were stored."""
        return [r[0] for r in self._rows("SELECT unit_id FROM circuits GROUP BY unit_id ORDER BY min(rowid)")]

    def read_by(self, unit_id: str, limit: int = 10) -> list[tuple[str, float]]:
        """Units whose stored inputs name ``unit_id``: ``(reader, total)``, strongest positive first."""
        return [tuple(r) for r in self._rows(
            "SELECT unit_id, total FROM circuits WHERE other = ? AND direction = 'inputs' ORDER BY total DESC LIMIT ?",
            (Unit.parse(unit_id).id, int(limit)))]

    def faithfulness(self, unit_id: str) -> list[StoredFaithfulness]:
        """Every stored faithfulness measurement of ``unit_id`` (one per source layer)."""
        rows = self._rows("SELECT * FROM faithfulness WHERE unit_id = ? ORDER BY source", (Unit.parse(unit_id).id,))
        return [StoredFaithfulness(u, src, n, mode, method, json.loads(top), td, (tl, th), rd, (rl, rh), draws, base,
                                   ex, None if data is None else json.loads(data))
                for u, src, n, mode, method, top, td, tl, th, rd, rl, rh, draws, base, ex, data in rows]


__all__ = ["CircuitStore", "StoredCircuit", "StoredConnection", "StoredFaithfulness"]
