"""``Run``: one study's results on disk, written by jobs and read by the viewer and by scripts.

>>> run = open_run("runs/cat", create=True)                              # doctest: +SKIP
>>> run.put_layer("mixed4e", 832, 14, 14, rf=(139, 16, -62))             # doctest: +SKIP
>>> run.put_examples("mixed4e:55", [dict(rank=0, image_id="a.jpg", value=9.1, y=3, x=4, label=1)])  # doctest: +SKIP
>>> [e.image_id for e in open_run("runs/cat").examples("mixed4e:55")]   # doctest: +SKIP
['a.jpg']

Every ``put_*`` is one SQLite transaction, and PNGs are renamed into place before the row that
names them commits, so a reader (the viewer) never sees half a record and a killed job leaves at
most an unreferenced PNG behind. Group several puts into one transaction with ``run.batch()``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import BadInputError, CircuitsvizError, DamagedRunError, UnknownNameError
from ..units import Unit
from .blobs import BlobStore, is_sha256, remove_stale_temporaries
from .records import (
    Example, Feature, LayerRecord, QuantileExample, RunInfo, SAERecord, Split, SplitFeature, Stats,
    StepRecord, UnitRecord, Visualization,
)
from .circuits import CircuitStore
from .publish import Publishing
from .schema import SCHEMA_VERSION, StoreVersionError, ensure_schema
from .steps import changed_error, settings_diff, to_json

INDEX_NAME = "index.sqlite"
VIS_KINDS = ("positive", "negative", "diversity", "neuron")
EXAMPLE_KINDS = ("max", "mean")


def open_run(path: str | Path, create: bool = False, *, writable: bool | None = None) -> "Run":
    """Open the run directory at ``path`` (``create=True`` makes a new one if it is missing).

    Without ``create`` (or ``writable=True``) the run is opened **read-only**: nothing in it is
    created or changed, not the schema, not the journal mode (SQLite's ``mode=ro``). A missing,
    empty, truncated or foreign ``index.sqlite`` is a :class:`~circuitsviz.errors.DamagedRunError`
    naming the file and the repair.

    >>> run = open_run("runs/demo")                   # doctest: +SKIP
    >>> [u.id for u in run.units("mixed4e")][:2]      # doctest: +SKIP
    ['mixed4e:0', 'mixed4e:1']
    """
    if not isinstance(path, (str, Path)) or not str(path):
        raise BadInputError(f"a run is a folder path, got {path!r}")
    return Run(path, create=create, writable=writable)


# Files only a run that already had an index can hold (the store writes images/ and cache/, the
# study writes report.json last): if any is there, a missing or empty index
# means damage, not a new run.
RUN_CONTENTS = ("images", "cache", "report.json")
_REPAIR = ("to repair, restore it from a backup, or save what is readable with "
           "`sqlite3 {index} .recover | sqlite3 {index}.recovered` and move that into its place; "
           "or re-run the job that made the run into a new folder")


def _sqlite_damage(index: Path) -> str | None:
    """Why ``index`` cannot be a whole SQLite file (from its 100-byte header), or None."""
    size = index.stat().st_size
    with open(index, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "it is not an SQLite database"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    valid = head[92:96] == head[24:28]  # the in-header page count is valid only then
    if valid and pages and size < pages * page:
        return f"it is truncated ({size} bytes, its header says {pages * page})"
    return None


def _check_index(root: Path, index: Path, create: bool) -> None:
    """Refuse an index that is missing or empty where a run's files exist, or damaged."""
    if root.exists() and not root.is_dir():
        raise BadInputError(f"{str(root)!r} is a file, not a run folder; give a folder for the run")
    leftovers = [n for n in RUN_CONTENTS if (root / n).exists()]
    empty = index.exists() and index.is_file() and index.stat().st_size == 0
    if (not index.exists() or empty) and leftovers:
        state = "is empty (0 bytes)" if empty else "is missing"
        raise DamagedRunError(
            f"run {str(root)!r} has {', '.join(leftovers)} but its index {index} {state}, so it is damaged, "
            "not new; restore index.sqlite from a backup, or re-run the job that made it into a new folder"
        )
    if not index.exists():
        if not create:
            hint = " (it is a folder, but holds no index.sqlite)" if root.is_dir() else ""
            raise BadInputError(
                f"no circuitsviz run at {str(root)!r}{hint}; runs are made by `circuitsviz study`, "
                "`circuitsviz mine --out DIR` and friends, or open_run(path, create=True)"
            )
        return
    if not index.is_file():
        raise DamagedRunError(f"the run index {index} is not a file")
    if empty:
        if create:
            return  # a writer killed before its first commit: start afresh
        raise DamagedRunError(f"the run index {index} is empty (0 bytes): the run is damaged or was never written; "
                              "re-run the job that made it")
    why = _sqlite_damage(index)
    if why:
        raise DamagedRunError(f"the run index {index} is damaged: {why}; " + _REPAIR.format(index=index))
    _refuse_foreign(index, fresh_ok=create)


def _refuse_foreign(index: Path, fresh_ok: bool) -> None:
    """Refuse an SQLite file that another program made, before anything writes to it: it is read
    read-only (``mode=ro``), so its tables and journal mode stay exactly as they were. A writer may
    take a file with no tables at all (created, never committed to)."""
    try:
        conn = sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.OperationalError as e:  # locked, unreadable, ...: not damage
        raise CircuitsvizError(f"cannot open the run index {index}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise DamagedRunError(f"the run index {index} is damaged ({e}); " + _REPAIR.format(index=index)) from None
    if fresh_ok and not tables:
        return
    if version == 0 or "meta" not in tables or "units" not in tables:
        raise DamagedRunError(
            f"{index} is an SQLite file but not a circuitsviz run index (tables: {', '.join(sorted(tables)) or 'none'}); "
            "it was opened read-only and left unchanged: give the run a folder of its own"
        )


def _opt_float(v) -> float | None:
    return None if v is None else float(v)


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


def _actmap_bytes(actmap) -> bytes | None:
    if actmap is None:
        return None
    arr = np.asarray(actmap.detach().cpu() if hasattr(actmap, "detach") else actmap, dtype=np.float32)
    if arr.ndim != 2:
        raise BadInputError(f"an example's actmap must be a 2-D (H x W) array, got shape {arr.shape}")
    buf = io.BytesIO()
    np.save(buf, arr.astype(np.float16), allow_pickle=False)  # heatmaps need no more precision
    return buf.getvalue()


def _actmap_array(blob: bytes | None) -> np.ndarray | None:
    if blob is None:
        return None
    # An .npy file is a magic string, a header (dtype, order, shape) and the raw array. Every
    # actmap of a layer shares one header; parsing it (np.load does, with ast) costs more than
    # reading the array, and a page reads hundreds.
    if blob[:8] == b"\x93NUMPY\x01\x00":
        end = 10 + int.from_bytes(blob[8:10], "little")
        dtype, shape = _npy_header(blob[10:end])
        if dtype is not None:
            return np.frombuffer(blob, dtype=dtype, count=int(np.prod(shape)), offset=end).reshape(shape) \
                .astype(np.float32)
    return np.load(io.BytesIO(blob), allow_pickle=False).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype | None, tuple]:
    """dtype and shape of a C-ordered ``.npy`` header (dtype None: anything else, for np.load)."""
    import ast

    d = ast.literal_eval(header.decode("latin1"))
    if d.get("fortran_order") or not isinstance(d.get("shape"), tuple):
        return None, ()
    return np.dtype(d["descr"]), d["shape"]


class Run(Publishing, CircuitStore):
    """A run directory: ``index.sqlite`` (WAL) plus ``images/`` (content-addressed PNGs),
    ``saes/``, ``activations/`` and ``mining/`` (work files).
    See ``circuitsviz/store/SPEC.md``.

    Results go in through the publishing API (``add_visualizations``, ``add_mining``,
    ``add_sae``, ``add_split``; see :class:`~circuitsviz.store.publish.Publishing`), which checks
    each step's settings against what the run already holds. The ``put_*`` methods below are
    the raw rows they write. One ``Run`` may be shared between threads (the viewer does); calls
    are serialised by a lock.
    """

    def __init__(self, path: str | Path, create: bool = False, *, writable: bool | None = None) -> None:
        self.path = Path(path).expanduser()
        self.writable = bool(create) if writable is None else bool(writable)
        index = self.path / INDEX_NAME
        _check_index(self.path, index, create)
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BadInputError(f"cannot create the run folder {str(path)!r}: {e.strerror or e}") from None
        self.blobs = BlobStore(self.path / "images")
        self.cache_dir = self.path / "cache"
        self._lock = threading.RLock()
        self._depth = 0
        self._source = None
        try:
            self._conn = self._connect(index)
        except sqlite3.OperationalError as e:  # locked, unreadable, ...: not damage
            raise CircuitsvizError(f"cannot open the run index {index}: {e}") from None
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            raise DamagedRunError(f"the run index {index} is damaged ({e}); " + _REPAIR.format(index=index)) from None
        if self.writable:
            remove_stale_temporaries(self.path / "images")
            remove_stale_temporaries(self.cache_dir)

    def _connect(self, index: Path) -> sqlite3.Connection:
        if not self.writable:
            # mode=ro: a reader never creates tables or switches the journal mode, so a foreign
            # SQLite file stays exactly as it was. (A WAL-mode run's readers share its -shm file.)
            conn = sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=30.0)
            try:
                conn.execute("PRAGMA busy_timeout = 30000")
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # not foreign: _check_index
                if version < SCHEMA_VERSION:  # upgrading would write; a reader changes nothing
                    raise StoreVersionError(f"run {str(self.path)!r} uses the older store schema {version}; "
                                            "open it once for writing (open_run(path, writable=True)) to upgrade it")
                ensure_schema(conn, str(self.path), create=False)  # refuses a newer version
            except BaseException:
                conn.close()
                raise
            return conn
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly one put.
        conn = sqlite3.connect(index, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise CircuitsvizError(f"could not switch {index} to WAL mode (is it on a network filesystem?)")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; atomic always
            ensure_schema(conn, str(self.path), create=True)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def batch(self) -> Iterator["Run"]:
        """Make every put inside the block one transaction: readers see all of it or none.

        >>> with run.batch():                                      # doctest: +SKIP
        ...     run.put_examples(uid, rows); run.put_stats(uid, max=3.2)
        """
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._conn.execute(
                    "INSERT INTO meta VALUES ('revision', '1') "
                    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["Run"]:
        """Read several things from one consistent state of the index (a read transaction)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN")
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if outer:
                    self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def revision(self) -> int:
        """A counter that grows with every committed write: a cheap cache key for readers."""
        row = self._rows("SELECT value FROM meta WHERE key = 'revision'")
        return int(row[0][0]) if row else 0

    # ---------------------------------------------------------------- write API
    def _set_meta(self, **values) -> None:
        with self.batch():
            for k, v in values.items():
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, to_json(v)))

    def set_info(self, model: str | None = None, weights_sha256: str | None = None,
                 input_size: int | None = None, settings: dict | None = None) -> None:
        """Record what produced this run: the model, its weights' hash, input size and settings."""
        self._set_meta(model=model, weights_sha256=weights_sha256,
                       input_size=None if input_size is None else int(input_size), settings=settings or {})

    def set_data_source(self, spec: dict, classes: list[str] | None = None) -> None:
        """Record the dataset (``dataset.spec()``) that examples' ``image_id`` s point into."""
        if not isinstance(spec, dict) or "kind" not in spec:
            raise BadInputError(f"a data source spec is a dict with a 'kind' (dataset.spec()), got {spec!r}")
        self._set_meta(data_source=spec, classes=list(classes) if classes is not None else None)
        self._source = None

    def put_layer(self, name: str, channels: int, height: int | None = None, width: int | None = None,
                  branches: Iterable = (), rf: tuple[float, float, float] | None = None) -> None:
        """Record a layer: width, spatial size, branch ranges ``(name, start, stop)`` (or
        ``Branch`` objects) and receptive field ``(size, stride, offset)`` in input pixels, ``offset``
        the first pixel of position 0 (``ReceptiveField.as_tuple()``, :mod:`circuitsviz.geometry`)."""
        br = [(b.name, b.start, b.stop) if hasattr(b, "start") else tuple(b) for b in branches]
        rf = None if rf is None else tuple(float(v) for v in rf)
        if rf is not None and len(rf) != 3:
            raise BadInputError(f"rf must be (size, stride, offset), got {rf!r}")
        with self.batch():  # a writer that does not know the receptive field keeps the recorded one
            self._conn.execute(
                "INSERT INTO layers VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "channels = excluded.channels, height = excluded.height, width = excluded.width, "
                "branches = excluded.branches, rf_size = coalesce(excluded.rf_size, rf_size), "
                "rf_stride = coalesce(excluded.rf_stride, rf_stride), rf_offset = coalesce(excluded.rf_offset, rf_offset)",
                (name, int(channels), height, width, to_json(br), *(rf or (None, None, None))),
            )

    def add_units(self, units: Iterable[dict | str | Unit]) -> None:
        """Register units: dicts ``{"id", "layer", "index", "kind"}``, id strings or ``Unit`` s."""
        with self.batch():
            for u in units:
                self._add_unit(u)

    def _add_unit(self, u: dict | str | Unit) -> str:
        parsed = Unit.parse(u["id"] if isinstance(u, dict) else str(u))
        if isinstance(u, dict):
            given = (u.get("layer", parsed.layer), int(u.get("index", parsed.index)), u.get("kind", parsed.kind))
            if given != (parsed.layer, parsed.index, parsed.kind):
                raise BadInputError(
                    f"unit {u['id']!r} says layer/index/kind {given}, but its id means "
                    f"{(parsed.layer, parsed.index, parsed.kind)}"
                )
        y, x = parsed.pos or (None, None)
        self._conn.execute(
            "INSERT OR IGNORE INTO units VALUES (?, ?, ?, ?, ?, ?, ?)",
            (parsed.id, parsed.layer, parsed.index, parsed.kind, parsed.sae, y, x),
        )
        return parsed.id

    def put_visualization(self, unit_id: str, image, kind: str = "positive", index: int = 0,
                          objective: float | None = None, settings: dict | None = None) -> Path:
        """Store a feature visualization (``H x W x 3`` uint8). Returns the PNG's path."""
        if kind not in VIS_KINDS:
            raise UnknownNameError("visualization kind", kind, VIS_KINDS)
        sha, h, w = self.blobs.put_image(image)  # the file exists before any row names it
        with self.batch():
            uid = self._add_unit(unit_id)
            self._conn.execute(
                "INSERT OR REPLACE INTO visualizations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, kind, int(index), sha, h, w, _opt_float(objective), to_json(settings or {})),
            )
        return self.blobs.path(sha)

    def put_examples(self, unit_id: str, rows: Iterable[dict], kind: str = "max") -> None:
        """Replace a unit's top examples: rows of ``rank, image_id, value, y, x, label`` and an
        optional ``actmap`` (the unit's small 2-D activation map on that image, for overlays)."""
        if kind not in EXAMPLE_KINDS:
            raise UnknownNameError("example kind", kind, EXAMPLE_KINDS)
        values = [
            (int(r["rank"]), str(r["image_id"]), float(r["value"]), int(r["y"]), int(r["x"]),
             int(r.get("label", -1) if r.get("label") is not None else -1), _actmap_bytes(r.get("actmap")))
            for r in rows
        ]
        with self.batch():
            uid = self._add_unit(unit_id)
            self._conn.execute("DELETE FROM examples WHERE unit_id = ? AND kind = ?", (uid, kind))
            self._conn.executemany(
                "INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(uid, kind, *v) for v in values],
            )

    def put_quantile_examples(self, unit_id: str, rows: Iterable[dict]) -> None:
        """Replace a unit's quantile-binned examples: rows of ``bin, image_id, value, y, x``."""
        rows = list(rows)
        with self.batch():
            uid = self._add_unit(unit_id)
            self._conn.execute("DELETE FROM quantile_examples WHERE unit_id = ?", (uid,))
            self._conn.executemany(
                "INSERT INTO quantile_examples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(uid, int(r["bin"]), pos, str(r["image_id"]), float(r["value"]), int(r["y"]), int(r["x"]),
                  int(r["label"]) if r.get("label") is not None else -1) for pos, r in enumerate(rows)],
            )

    def put_stats(self, unit_id: str, mean: float | None = None, max: float | None = None,  # noqa: A002
                  frac_positive: float | None = None, hist_counts: Iterable = (), hist_edges: Iterable = (),
                  scores: dict | None = None, label_counts: dict | None = None) -> None:
        """Replace a unit's activation statistics, histogram, scores and top-k label counts."""
        counts, edges = list(np.asarray(hist_counts).tolist()), list(np.asarray(hist_edges).tolist())
        if counts and len(edges) != len(counts) + 1:
            raise BadInputError(f"a histogram with {len(counts)} counts needs {len(counts) + 1} edges, got {len(edges)}")
        labels = {str(k): v for k, v in (label_counts or {}).items()}
        with self.batch():
            uid = self._add_unit(unit_id)
            self._conn.execute(
                "INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, _opt_float(mean), _opt_float(max), _opt_float(frac_positive), to_json(counts),
                 to_json(edges), to_json(scores or {}), to_json(labels)),
            )

    def put_sae(self, name: str, layer: str, config: dict | None = None, metrics: dict | None = None,
                path: str | Path | None = None) -> None:
        """Record an SAE trained on ``layer``: its config, metrics (FVU, L0, ...) and saved files
        (a path relative to the run when it lies inside it, so a moved run still finds them)."""
        if path is not None:
            path = Path(path)
            with contextlib.suppress(ValueError):
                path = path.resolve().relative_to(self.path.resolve())
        with self.batch():
            self._conn.execute(
                "INSERT OR REPLACE INTO saes VALUES (?, ?, ?, ?, ?)",
                (name, layer, to_json(config or {}), to_json(metrics or {}), None if path is None else str(path)),
            )

    def put_feature(self, unit_id: str, sae: str | None = None, decoder_top: Iterable = (),
                    freq: float | None = None, mean_act: float | None = None) -> None:
        """Record an SAE feature (``layer/sae:index``) with its strongest decoder weights
        ``[(channel, weight), ...]``, firing frequency and mean activation."""
        unit = Unit.parse(unit_id)
        if unit.sae is None or (sae is not None and sae != unit.sae):
            raise BadInputError(f"feature id {unit_id!r} must name its SAE, e.g. '{unit.layer}/{sae or 'sae'}:{unit.index}'")
        top = [(int(c), float(w)) for c, w in decoder_top]
        with self.batch():
            uid = self._add_unit(unit)
            self._conn.execute(
                "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)",
                (uid, unit.sae, to_json(top), _opt_float(freq), _opt_float(mean_act)),
            )
            self._conn.execute("DELETE FROM feature_writes WHERE unit_id = ?", (uid,))
            self._conn.executemany("INSERT OR REPLACE INTO feature_writes VALUES (?, ?, ?, ?)",
                                   [(uid, unit.layer, c, w) for c, w in top])

    def put_split(self, layer: str, channel: int, sae: str, features: Iterable[dict],
                  totals: dict | None = None) -> None:
        """Record how ``sae`` splits ``layer:channel``: ranked features with ``unit_id, share,
        cosine, freq`` (best first), and ``totals``: ``explained, bias_share`` (optionally
        ``n_samples, n_firing``), what all features and the bias write (None: not known)."""
        rows = list(features)
        with self.batch():
            for table in ("splits", "split_totals"):
                self._conn.execute(f"DELETE FROM {table} WHERE layer = ? AND channel = ? AND sae = ?",
                                   (layer, int(channel), sae))
            if totals is not None:
                self._conn.execute(
                    "INSERT INTO split_totals VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (layer, int(channel), sae, float(totals["explained"]), float(totals["bias_share"]),
                     _opt_int(totals.get("n_samples")), _opt_int(totals.get("n_firing"))))
            for rank, f in enumerate(rows):
                uid = self._add_unit(f["unit_id"])
                self._conn.execute(
                    "INSERT INTO splits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (layer, int(channel), sae, rank, uid, _opt_float(f.get("share")),
                     _opt_float(f.get("cosine")), _opt_float(f.get("freq"))),
                )

    # ---------------------------------------------------------------- steps and their settings
    def step(self, step: str, key: str) -> StepRecord | None:
        """The record of ``step`` for ``key`` (its settings, and whether it finished), or None."""
        rows = self._rows("SELECT step, key, at, settings, complete FROM done WHERE step = ? AND key = ?",
                          (step, str(key)))
        if not rows:
            return None
        step, key, at, settings, complete = rows[0]
        return StepRecord(step, key, at, None if settings is None else json.loads(settings), bool(complete))

    def steps(self, step: str | None = None) -> list[StepRecord]:
        """Every step record (optionally of one step), in the order they were first written."""
        sql, args = ("SELECT step, key FROM done WHERE step = ?", (step,)) if step else ("SELECT step, key FROM done", ())
        return [self.step(s, k) for s, k in self._rows(sql + " ORDER BY rowid", args)]

    def check_step(self, step: str, key: str, settings: dict, *, overwrite: bool = False,
                   what: str | None = None) -> bool:
        """True when ``step`` for ``key`` finished with exactly ``settings`` (reuse it); False when
        it is still to do (new, begun, or ``overwrite``). Other recorded settings raise
        :class:`SettingsChangedError` naming the changed ones: call this before any work."""
        rec = self.step(step, key)
        if rec is None:
            return False
        diff = settings_diff(rec.settings, settings)
        if not diff:
            return rec.complete
        if overwrite:
            return False
        raise changed_error(what or f"step {step!r} of {key}", repr(str(self.path)), diff)

    def begin_step(self, step: str, key: str, settings: dict | None = None) -> None:
        """Record that ``step`` for ``key`` started with ``settings`` (a later call with others is refused)."""
        self._put_step(step, key, settings, complete=False)

    def mark_done(self, step: str, key: str, settings: dict | None = None) -> None:
        """Record that ``step`` finished for ``key`` (with ``settings``; default: those it began with)."""
        if settings is None:
            rec = self.step(step, key)
            settings = rec.settings if rec is not None else {}
        self._put_step(step, key, settings, complete=True)

    def _put_step(self, step: str, key: str, settings: dict | None, complete: bool) -> None:
        with self.batch():
            self._conn.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?)",
                               (step, str(key), time.time(), to_json(settings or {}), int(complete)))

    def is_done(self, step: str, key: str) -> bool:
        rec = self.step(step, key)
        return rec is not None and rec.complete

    def forget_steps(self, step: str, prefix: str = "") -> None:
        """Drop the records of ``step`` whose key starts with ``prefix`` (their results are being replaced)."""
        with self.batch():
            self._conn.execute("DELETE FROM done WHERE step = ? AND substr(key, 1, ?) = ?", (step, len(prefix), prefix))

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the run's lock ``name`` (e.g. one SAE, one mining job) across processes: a second
        writer waits here until the first is done, then finds its result."""
        path = self.path / "locks" / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one writer per run is the rule there
            yield
            return
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                f.truncate()
                f.write(name)
                f.flush()
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- read API
    def _meta(self) -> dict:
        return {k: json.loads(v) for k, v in self._rows("SELECT key, value FROM meta")}

    def info(self) -> RunInfo:
        m = self._meta()
        return RunInfo(m.get("model"), m.get("weights_sha256"), m.get("input_size"), m.get("settings") or {},
                       m.get("data_source"), m.get("classes"))

    @staticmethod
    def _layer(row) -> LayerRecord:
        name, channels, h, w, branches, size, stride, offset = row
        rf = None if size is None else (size, stride, offset)
        return LayerRecord(name, channels, h, w, [tuple(b) for b in json.loads(branches)], rf)

    def layers(self) -> list[LayerRecord]:
        """Layers in the order they were recorded."""
        return [self._layer(r) for r in self._rows("SELECT * FROM layers ORDER BY rowid")]

    def layer(self, name: str) -> LayerRecord:
        rows = self._rows("SELECT * FROM layers WHERE name = ?", (name,))
        if not rows:
            raise UnknownNameError("layer", name, [r.name for r in self.layers()])
        return self._layer(rows[0])

    @staticmethod
    def _unit(row) -> UnitRecord:
        uid, layer, idx, kind, sae, y, x = row
        return UnitRecord(uid, layer, idx, kind, sae, None if y is None else (y, x))

    def units(self, layer: str | None = None, kind: str | None = None, sae: str | None = None) -> list[UnitRecord]:
        """Units, optionally of one layer / kind (channel, neuron, feature) / SAE, by index."""
        sql, args = "SELECT * FROM units WHERE 1=1", []
        for col, val in (("layer", layer), ("kind", kind), ("sae", sae)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        return [self._unit(r) for r in self._rows(sql + " ORDER BY layer, sae, idx, y, x", tuple(args))]

    def unit(self, unit_id: str) -> UnitRecord:
        """One unit by id; an unknown id raises ``UnknownNameError`` with close matches."""
        rows = self._rows("SELECT * FROM units WHERE id = ?", (unit_id,))
        if not rows:
            raise UnknownNameError("unit", unit_id, [r[0] for r in self._rows("SELECT id FROM units ORDER BY rowid")])
        return self._unit(rows[0])

    def _vis(self, row) -> Visualization:
        uid, kind, idx, sha, h, w, objective, settings = row
        return Visualization(uid, kind, idx, self.blobs.path(sha), h, w, objective, json.loads(settings))

    def visualizations(self, unit_id: str, kind: str | None = None) -> list[Visualization]:
        sql = "SELECT * FROM visualizations WHERE unit_id = ?" + (" AND kind = ?" if kind else "")
        args = (unit_id, kind) if kind else (unit_id,)
        return [self._vis(r) for r in self._rows(sql + " ORDER BY kind, idx", args)]

    def layer_visualizations(self, layer: str, kind: str = "positive") -> dict[str, Visualization]:
        """The first visualization of ``kind`` for every unit of ``layer`` (for grids)."""
        rows = self._rows(
            "SELECT v.* FROM visualizations v JOIN units u ON u.id = v.unit_id "
            "WHERE u.layer = ? AND v.kind = ? AND v.idx = 0", (layer, kind))
        return {r[0]: self._vis(r) for r in rows}

    def examples(self, unit_id: str, kind: str = "max") -> list[Example]:
        rows = self._rows("SELECT * FROM examples WHERE unit_id = ? AND kind = ? ORDER BY rank", (unit_id, kind))
        return [Example(*r[:8], actmap=_actmap_array(r[8])) for r in rows]

    def quantile_examples(self, unit_id: str) -> list[QuantileExample]:
        rows = self._rows("SELECT unit_id, bin, image_id, value, y, x, label FROM quantile_examples "
                          "WHERE unit_id = ? ORDER BY bin, pos", (unit_id,))
        return [QuantileExample(*r) for r in rows]

    @staticmethod
    def _stats(row) -> Stats:
        uid, mean, mx, frac, counts, edges, scores, labels = row
        return Stats(uid, mean, mx, frac, json.loads(counts), json.loads(edges), json.loads(scores), json.loads(labels))

    def stats(self, unit_id: str) -> Stats | None:
        rows = self._rows("SELECT * FROM stats WHERE unit_id = ?", (unit_id,))
        return self._stats(rows[0]) if rows else None

    def layer_stats(self, layer: str) -> dict[str, Stats]:
        """Stats of every unit of ``layer`` in one query (for sorting grids)."""
        rows = self._rows("SELECT s.* FROM stats s JOIN units u ON u.id = s.unit_id WHERE u.layer = ?", (layer,))
        return {r[0]: self._stats(r) for r in rows}

    def _sae(self, row) -> SAERecord:
        name, layer, config, metrics, path = row
        if path is not None and not Path(path).is_absolute():
            path = str(self.path / path)
        return SAERecord(name, layer, json.loads(config), json.loads(metrics), path)

    def load_sae(self, name: str, layer: str | None = None, *, model=None, device=None):
        """Load the run's SAE ``name`` (``layer/name``) from its folder inside the run. A record whose
        path leads outside the run (a received index can say anything) is refused, so opening a run
        never reads files elsewhere.

        >>> sae = run.load_sae("mixed3b/topk8x_k1", model=model)  # doctest: +SKIP
        """
        from ..sae import load_sae

        record = self.sae(name, layer)
        if not record.path:
            raise BadInputError(f"the run records SAE {record.layer}/{record.name} but not where its files are")
        root, where = self.path.resolve(), Path(record.path).resolve()
        if not where.is_relative_to(root):
            raise DamagedRunError(f"run {str(self.path)!r} records SAE {record.layer}/{record.name} at {record.path!r}, "
                                  "outside the run; a run is read only from its own folder (fit the SAE into it again, "
                                  "or load it yourself and pass sae=)")
        return load_sae(where, model=model, layer=record.layer, device=device)

    def saes(self, layer: str | None = None) -> list[SAERecord]:
        sql, args = ("SELECT * FROM saes WHERE layer = ?", (layer,)) if layer else ("SELECT * FROM saes", ())
        return [self._sae(r) for r in self._rows(sql + " ORDER BY rowid", args)]

    def sae(self, name: str, layer: str | None = None) -> SAERecord:
        """The SAE called ``name`` (``layer/name`` or ``layer=`` picks one of several layers')."""
        if layer is None and "/" in name:
            layer, name = name.split("/", 1)
        found = [s for s in self.saes(layer) if s.name == name]
        if len(found) > 1:
            raise BadInputError(f"SAE {name!r} exists on layers {', '.join(s.layer for s in found)}; "
                                f"name one as LAYER/{name}")
        if not found:
            raise UnknownNameError("SAE", name, [f"{s.layer}/{s.name}" for s in self.saes()])
        return found[0]

    @staticmethod
    def _feature(row) -> Feature:
        uid, sae, top, freq, mean_act = row
        return Feature(uid, sae, [tuple(t) for t in json.loads(top)], freq, mean_act)

    def feature(self, unit_id: str) -> Feature | None:
        rows = self._rows("SELECT * FROM features WHERE unit_id = ?", (unit_id,))
        return self._feature(rows[0]) if rows else None

    def features(self, sae: str | None = None) -> list[Feature]:
        sql, args = ("SELECT * FROM features WHERE sae = ?", (sae,)) if sae else ("SELECT * FROM features", ())
        return [self._feature(r) for r in self._rows(sql + " ORDER BY rowid", args)]

    def features_of_channel(self, layer: str, channel: int, limit: int | None = None) -> list[tuple[Feature, float]]:
        """SAE features whose top decoder weights include ``layer:channel``, strongest write first."""
        rows = self._rows(
            "SELECT f.*, w.weight FROM feature_writes w JOIN features f ON f.unit_id = w.unit_id "
            "WHERE w.layer = ? AND w.channel = ? ORDER BY w.weight DESC" + (" LIMIT ?" if limit else ""),
            (layer, int(channel), limit) if limit else (layer, int(channel)),
        )
        return [(self._feature(r[:5]), r[5]) for r in rows]

    def splits(self, layer: str | None = None) -> list[Split]:
        """Every recorded channel split (optionally of one layer), in channel order."""
        sql, args = "SELECT * FROM splits", ()
        if layer:
            sql, args = sql + " WHERE layer = ?", (layer,)
        groups: dict[tuple, list[SplitFeature]] = {}
        with self.snapshot():  # the features and their totals from one state of the index
            for lay, ch, sae, _rank, uid, share, cos, freq in self._rows(sql + " ORDER BY layer, channel, sae, rank",
                                                                          args):
                groups.setdefault((lay, ch, sae), []).append(SplitFeature(uid, share, cos, freq))
            totals = {tuple(r[:3]): r[3:] for r in self._rows(sql.replace("splits", "split_totals", 1), args)}
        return [Split(lay, ch, sae, feats, *totals.get((lay, ch, sae), ())) for (lay, ch, sae), feats in groups.items()]

    def split(self, layer: str, channel: int | None = None, sae: str | None = None) -> Split | None:
        """The split of a channel (by ``sae``, or by the first SAE that split it), or None.

        >>> run.split("mixed4e:55", sae="topk8x_k32")      # doctest: +SKIP
        >>> run.split("mixed4e", 55)                        # the same  # doctest: +SKIP
        """
        if channel is None:
            unit = Unit.parse(layer)
            if unit.kind != "channel":
                raise BadInputError(f"a split is of a channel such as 'mixed4e:55', not {layer!r}")
            layer, channel = unit.layer, unit.index
        found = [s for s in self.splits(layer) if s.channel == int(channel) and (sae is None or s.sae == sae)]
        return found[0] if found else None

    # ---------------------------------------------------------------- checks
    def verify(self, *, source_images: bool = False) -> list[str]:
        """Problems with this run (an empty list when it is consistent), one line each: SQLite's
        integrity check; every image hash a row names must be 64 hex digits and its PNG must
        exist; every example's image id must lie inside the data folder (and, with
        ``source_images``, exist there). Reads only.

        >>> open_run("runs/demo").verify()    # doctest: +SKIP
        []
        """
        try:
            problems = [f"index: {r[0]}" for r in self._rows("PRAGMA integrity_check") if r[0] != "ok"]
            vis = self._rows("SELECT unit_id, kind, idx, sha256 FROM visualizations ORDER BY unit_id, kind, idx")
            ids = self._rows("SELECT DISTINCT image_id FROM examples UNION SELECT DISTINCT image_id FROM quantile_examples")
        except sqlite3.DatabaseError as e:
            return [f"index: cannot be read ({e})"]
        for uid, kind, idx, sha in vis:
            if not is_sha256(sha):
                problems.append(f"visualization {uid} {kind} #{idx}: image hash {sha!r} is not 64 hex digits")
            elif not self.blobs.path(sha).is_file():
                problems.append(f"visualization {uid} {kind} #{idx}: missing image {self.blobs.path(sha)}")
        problems += self._verify_image_ids([i for (i,) in ids], source_images)
        return problems

    def _verify_image_ids(self, ids: list[str], check_exists: bool) -> list[str]:
        try:
            spec = self.info().data_source
        except (sqlite3.DatabaseError, ValueError) as e:
            return [f"meta: data source cannot be read ({e})"]
        if not spec or spec.get("kind") != "folder":
            return []
        from ..data.folder import ImageFolderDataset

        root = Path(str(spec.get("root", ""))).expanduser()
        probe = ImageFolderDataset.__new__(ImageFolderDataset)  # path checks only: no folder scan
        probe.root = root
        problems, absent = [], []
        for image_id in ids:
            try:
                path = probe.path_of(image_id)
            except BadInputError as e:
                problems.append(f"example image: {e}")
                continue
            if check_exists and not path.is_file():
                absent.append(image_id)
        if absent:
            shown = ", ".join(absent[:5]) + (f", ... ({len(absent)} in all)" if len(absent) > 5 else "")
            problems.append(f"example images missing from the data folder {root}: {shown}")
        return problems

    # ---------------------------------------------------------------- rendered crops
    def source(self):
        """The dataset the examples point into, reopened from the recorded spec."""
        if self._source is None:
            spec = self.info().data_source
            if not spec:
                raise CircuitsvizError(f"run {str(self.path)!r} has no data source; mining records it "
                                       "(run.set_data_source(dataset.spec()))")
            from ..data import open_source

            self._source = open_source(spec)
        return self._source

    def example_image(self, example: Example | QuantileExample, mode: str = "crop", size: int = 128) -> Path:
        """The PNG of an example: ``crop`` (its receptive field), ``full`` (the model-input image
        with the field boxed) or ``overlay`` (``full`` plus the activation heatmap). Rendered from
        the source image once, then cached in the user cache folder, never in the run."""
        from .render import render_example

        return render_example(self, example, mode, size)
