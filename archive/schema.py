"""SQLite schema of a run store and its version check.

The version lives in the `meta` table (key 'schema_version'). A database
written by a newer evorank is refused rather than misread; older versions
are upgraded by the steps in `UPGRADES` (none yet: version 1 is the first).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1


class SchemaVersionError(RuntimeError):
    """The database's schema is newer than this evorank understands (or it
    is not an evorank archive at all)."""


# Every table is append-only except `meta` (counters) and `elites` (the
# denormalized current grid, kept only so `verify` has something written at
# insert time to compare the replayed grid against).
DDL = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE events (
    id   INTEGER PRIMARY KEY,
    ts   REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL              -- JSON object
);
CREATE INDEX events_kind ON events(kind);

CREATE TABLE programs (
    id                INTEGER PRIMARY KEY,   -- insertion order == replay order
    code              TEXT NOT NULL,
    code_hash         TEXT NOT NULL,         -- sha256 of normalized code
    parent_ids        TEXT NOT NULL,         -- JSON list of ints
    island            INTEGER NOT NULL,
    generation        INTEGER NOT NULL,
    iteration         INTEGER NOT NULL,
    operator          TEXT NOT NULL,
    status            TEXT NOT NULL,
    failure_reason    TEXT,
    failure_detail    TEXT,
    metrics           TEXT NOT NULL,         -- JSON {collection: {metric: value}}
    fitness           REAL,
    latency_ms        REAL,
    latency_ratio     REAL,
    features          TEXT NOT NULL,         -- JSON {name: value}
    cell              TEXT,                  -- JSON list of bin indices, NULL = not placed
    stage             INTEGER NOT NULL,
    model             TEXT,
    prompt            TEXT,
    response          TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    started_at        REAL,
    created_at        REAL NOT NULL
);
CREATE INDEX programs_hash ON programs(code_hash);
CREATE INDEX programs_island_status ON programs(island, status);
CREATE INDEX programs_iteration ON programs(iteration);

CREATE TABLE migrations (
    id            INTEGER PRIMARY KEY,
    generation    INTEGER NOT NULL,
    source_id     INTEGER NOT NULL REFERENCES programs(id),
    copy_id       INTEGER NOT NULL UNIQUE REFERENCES programs(id),
    source_island INTEGER NOT NULL,
    target_island INTEGER NOT NULL,
    created_at    REAL NOT NULL
);
CREATE INDEX migrations_generation ON migrations(generation);

CREATE TABLE elites (
    island     INTEGER NOT NULL,
    cell       TEXT NOT NULL,
    program_id INTEGER NOT NULL REFERENCES programs(id),
    PRIMARY KEY (island, cell)
);
"""

# version -> function(conn) upgrading a database at that version by one step.
UPGRADES: dict[int, callable] = {}


def statements(ddl: str = DDL) -> list[str]:
    """Split DDL into statements (sqlite3's executescript would commit
    implicitly; we want the schema inside our own transaction)."""
    out, buf = [], ""
    for line in ddl.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete DDL statement: {buf.strip()[:80]}")
    return out


def read_version(conn: sqlite3.Connection, path) -> int:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        raise SchemaVersionError(f"{path} is not an evorank archive ({e})") from None
    if row is None:
        raise SchemaVersionError(f"{path} has no schema_version; not an evorank archive")
    return int(row[0])


def check_version(version: int, path) -> None:
    """Raise unless this code can read (after upgrades) schema `version`."""
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} was written with archive schema version {version}, but this "
            f"evorank only understands versions <= {SCHEMA_VERSION}; "
            "upgrade evorank to open this run"
        )
    missing = [v for v in range(version, SCHEMA_VERSION) if v not in UPGRADES]
    if missing:
        raise SchemaVersionError(
            f"{path} has archive schema version {version}; no upgrade path from "
            f"version(s) {missing} to {SCHEMA_VERSION}"
        )
