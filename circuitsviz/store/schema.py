"""The SQLite schema of a run's index, and its version check.

The version lives in ``PRAGMA user_version``. A run written by a newer circuitsviz (a higher
version than :data:`SCHEMA_VERSION`) is refused with :class:`StoreVersionError` instead of being
misread; an older one is upgraded in place by the steps in :data:`MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3

from ..errors import CircuitsvizError

SCHEMA_VERSION = 5

# JSON columns hold small, schema-free payloads (settings, metrics, branch tables);
# everything the viewer filters or sorts on is a real column.
CIRCUIT_TABLES = """
-- circuits (schema 3): one row per connection of a stored circuit(), positive then negative by rank;
-- key: a hash of the weights, the layer pair, the SAEs at either end and the input size.
CREATE TABLE IF NOT EXISTS circuits (
    unit_id TEXT NOT NULL, other TEXT NOT NULL, direction TEXT NOT NULL, layer TEXT NOT NULL,
    sign TEXT NOT NULL, rank INTEGER NOT NULL, total REAL NOT NULL, kernel TEXT NOT NULL,
    branch TEXT, path TEXT NOT NULL DEFAULT '[]', direct INTEGER NOT NULL DEFAULT 0, key TEXT NOT NULL,
    PRIMARY KEY (unit_id, direction, layer, sign, rank));
CREATE INDEX IF NOT EXISTS circuits_by_other ON circuits (other, direction);
CREATE TABLE IF NOT EXISTS faithfulness (
    unit_id TEXT NOT NULL, source TEXT NOT NULL, n INTEGER NOT NULL, mode TEXT NOT NULL, method TEXT NOT NULL,
    top_sources TEXT NOT NULL, top_drop REAL NOT NULL, top_low REAL, top_high REAL, random_drop REAL,
    random_low REAL, random_high REAL, draws INTEGER NOT NULL, baseline REAL, examples INTEGER, data TEXT,
    PRIMARY KEY (unit_id, source));
"""

SPLIT_TOTALS = """
-- split_totals (schema 5): one row per split, what its per-feature rows do not add up to: the share
-- of all the SAE's features (not only the listed ones) and of the decoder bias; the rest of the
-- channel's activation is the reconstruction error, 1 - explained - bias_share (it can be negative).
CREATE TABLE IF NOT EXISTS split_totals (
    layer TEXT NOT NULL, channel INTEGER NOT NULL, sae TEXT NOT NULL, explained REAL NOT NULL,
    bias_share REAL NOT NULL, n_samples INTEGER, n_firing INTEGER, PRIMARY KEY (layer, channel, sae));
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    name TEXT PRIMARY KEY, channels INTEGER NOT NULL, height INTEGER, width INTEGER,
    branches TEXT NOT NULL DEFAULT '[]', rf_size REAL, rf_stride REAL, rf_offset REAL);
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY, layer TEXT NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL,
    sae TEXT, y INTEGER, x INTEGER);
CREATE INDEX IF NOT EXISTS units_by_layer ON units (layer, kind, idx);
CREATE TABLE IF NOT EXISTS visualizations (
    unit_id TEXT NOT NULL, kind TEXT NOT NULL, idx INTEGER NOT NULL, sha256 TEXT NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL, objective REAL, settings TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (unit_id, kind, idx));
CREATE TABLE IF NOT EXISTS examples (
    unit_id TEXT NOT NULL, kind TEXT NOT NULL, rank INTEGER NOT NULL, image_id TEXT NOT NULL,
    value REAL NOT NULL, y INTEGER NOT NULL, x INTEGER NOT NULL, label INTEGER NOT NULL DEFAULT -1,
    actmap BLOB, PRIMARY KEY (unit_id, kind, rank));
CREATE TABLE IF NOT EXISTS quantile_examples (
    unit_id TEXT NOT NULL, bin INTEGER NOT NULL, pos INTEGER NOT NULL, image_id TEXT NOT NULL,
    value REAL NOT NULL, y INTEGER NOT NULL, x INTEGER NOT NULL, label INTEGER NOT NULL DEFAULT -1,
    PRIMARY KEY (unit_id, bin, pos));
CREATE TABLE IF NOT EXISTS stats (
    unit_id TEXT PRIMARY KEY, mean REAL, max REAL, frac_positive REAL,
    hist_counts TEXT NOT NULL DEFAULT '[]', hist_edges TEXT NOT NULL DEFAULT '[]',
    scores TEXT NOT NULL DEFAULT '{}', label_counts TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS saes (
    name TEXT NOT NULL, layer TEXT NOT NULL, config TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}', path TEXT, PRIMARY KEY (layer, name));
CREATE TABLE IF NOT EXISTS features (
    unit_id TEXT PRIMARY KEY, sae TEXT NOT NULL, decoder_top TEXT NOT NULL DEFAULT '[]',
    freq REAL, mean_act REAL);
-- one row per (feature, channel) of a feature's top decoder weights, so "which features write
-- into mixed4e:55" is an index lookup rather than a scan of every feature's JSON.
CREATE TABLE IF NOT EXISTS feature_writes (
    unit_id TEXT NOT NULL, layer TEXT NOT NULL, channel INTEGER NOT NULL, weight REAL NOT NULL,
    PRIMARY KEY (unit_id, channel));
CREATE INDEX IF NOT EXISTS feature_writes_by_channel ON feature_writes (layer, channel);
CREATE TABLE IF NOT EXISTS splits (
    layer TEXT NOT NULL, channel INTEGER NOT NULL, sae TEXT NOT NULL, rank INTEGER NOT NULL,
    unit_id TEXT NOT NULL, share REAL, cosine REAL, freq REAL,
    PRIMARY KEY (layer, channel, sae, rank));
-- one row per step of work: what it was computed with (settings, JSON; NULL in runs from
-- schema 1, which did not record them) and whether it finished (complete = 0: begun).
CREATE TABLE IF NOT EXISTS done (step TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL,
    settings TEXT, complete INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (step, key));
""" + CIRCUIT_TABLES + SPLIT_TOTALS

# version -> SQL that upgrades version-1 to version.
MIGRATIONS: dict[int, str] = {
    # 2: an SAE is named within its layer (unit ids are layer/sae:i), and steps record their settings.
    2: """
CREATE TABLE saes_v2 (
    name TEXT NOT NULL, layer TEXT NOT NULL, config TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}', path TEXT, PRIMARY KEY (layer, name));
INSERT INTO saes_v2 SELECT name, layer, config, metrics, path FROM saes;
DROP TABLE saes;
ALTER TABLE saes_v2 RENAME TO saes;
ALTER TABLE done ADD COLUMN settings TEXT;
ALTER TABLE done ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
""",
    # 3: circuits and their faithfulness (circuitsviz/store/circuits.py); older rows are kept as they are.
    3: CIRCUIT_TABLES,
    # 4: a layer's rf_offset is the first input pixel of position 0, as mining's ReceptiveField
    # records it (circuitsviz/geometry.py); before, it was the centre of that field.
    4: "UPDATE layers SET rf_offset = rf_offset - rf_size / 2.0 WHERE rf_offset IS NOT NULL AND rf_size IS NOT NULL;",
    # 5: each split's totals (all features, bias); older splits have none until they are split again.
    5: SPLIT_TOTALS,
}


class StoreVersionError(CircuitsvizError, RuntimeError):
    """The run was written by a schema version this circuitsviz does not know."""


def ensure_schema(conn: sqlite3.Connection, path: str, create: bool) -> None:
    """Create the tables (new run), upgrade an older run, or refuse a newer one."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"run {path!r} uses store schema version {version}, but this circuitsviz reads versions "
            f"up to {SCHEMA_VERSION}; upgrade circuitsviz (pip install -U circuitsviz) to open it"
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0 and not create:
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if not has_tables:
            return  # an empty index opened read-only: nothing to upgrade, nothing to read
    # One script, one transaction: a half-created or half-upgraded index is never left behind.
    steps = SCHEMA if version == 0 else "".join(MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
    conn.executescript(f"BEGIN IMMEDIATE; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
