"""The run store: one SQLite database per run directory (`<run_dir>/archive.sqlite`) holding the run's
config, seed, versions and events, every program ever produced, the migrations, and the elite table.

Durability (why WAL + synchronous=FULL):
- WAL journal: readers (inspection commands) never block the writer and never see a half-committed
  transaction; a crash at any instant leaves either the old or the new state, never a corrupt file.
- kill -9 of the writer loses nothing committed under any `synchronous` level: a commit has already handed
  the WAL frames to the OS page cache, which outlives the process.
- Power loss / kernel crash is where levels differ. With WAL, NORMAL only fsyncs at checkpoints, so the
  last few commits can silently roll back (still no corruption). FULL fsyncs the WAL on every commit, so a
  program whose `add_program` returned is on disk. We default to FULL because it is cheap here: one fsync
  per program (~0.2 ms measured on the dev box, a few ms on slow disks) against seconds of LLM call and
  evaluation per program, and it keeps the archive from "forgetting" iterations whose LLM cost was already
  paid and logged elsewhere. Pass synchronous="NORMAL" only for throwaway stores (e.g. property tests).

Concurrency contract: exactly one writer process per run (enforced with an advisory lock on
`<run_dir>/archive.lock`, released by the OS even on kill -9), any number of readers opened with
`readonly=True` (a `mode=ro` URI connection with a busy timeout). Every write method is one transaction: a
program insert, its grid placement and the iteration counter commit together, and a migration round (all
copies + bookkeeping) commits as one; `atomic()` joins several writes into one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from evorank.archive import rows, schema
from evorank.archive.features import GridSpec, beats, decode_cell, default_grid_spec, encode_cell
from evorank.archive.programs import OPERATORS, STATUSES, ProgramRecord
from evorank.archive.queries import RunQueries

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no single-writer guard
    fcntl = None

DB_NAME = "archive.sqlite"
LOCK_NAME = "archive.lock"
BUSY_TIMEOUT_MS = 10_000
SYNC_LEVELS = ("NORMAL", "FULL", "EXTRA")

class ReadOnlyStoreError(PermissionError):
    """A write was attempted on a store opened with readonly=True."""


class StoreLockedError(RuntimeError):
    """Another process already has this run open for writing (``holder``: its pid as it recorded it, or "?")."""

    def __init__(self, message: str, holder: str = "?"):
        super().__init__(message)
        self.holder = holder


def collect_versions() -> dict[str, str]:
    """evorank, Python, SQLite and dependency versions for the run record."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    for dist in ("evorank", "numpy", "scipy", "ir_datasets", "openai", "PyStemmer", "joblib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _acquire_writer_lock(run_dir: Path):
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreLockedError(
            f"{run_dir} is already open for writing by another process (pid {holder}); "
            "open it with readonly=True to inspect it", holder
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _connect(path: Path, readonly: bool, synchronous: str) -> sqlite3.Connection:
    if readonly:
        # mode=ro: SQLite itself refuses writes, not just this wrapper.
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro",
            uri=True,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        if _on_read_only_media(path) or not os.access(path.parent, os.W_OK):
            try:
                conn.execute("PRAGMA schema_version").fetchall()
            except sqlite3.OperationalError:
                # A WAL reader must create archive.sqlite-shm, which it cannot here. A run on read-only media
                # is not being written, so read the file as immutable (no locks, no shared memory).
                conn.close()
                conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True,
                                       isolation_level=None)
    else:
        # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves so
        # each public write is exactly one transaction.
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _on_read_only_media(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class RunStore(RunQueries):
    """Thin wrapper over one sqlite connection to `<run_dir>/archive.sqlite`.

    Create a run with `RunStore.create`, reopen (resume or inspect) with
    `RunStore.open`. Write methods raise ReadOnlyStoreError on a readonly
    store. The read-only aggregate queries (counts, outcomes, model usage,
    progress, recent failures, ...) come from `archive.queries.RunQueries`.
    Not thread-safe: use it from the thread that opened it.
    """

    def __init__(self, conn, path: Path, readonly: bool, lock_fd=None):
        self._conn = conn
        self.path = path
        self.run_dir = path.parent
        self.readonly = readonly
        self._lock_fd = lock_fd
        self._grid: GridSpec | None = None
        self._n_islands: int | None = None
        self._atomic = False  # inside ``atomic()``: writes join its transaction

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        run_dir,
        config: dict,
        seed: int,
        versions: dict | None = None,
        *,
        grid: GridSpec | None = None,
        n_islands: int = 1,
        synchronous: str = "FULL",
    ) -> "RunStore":
        """Start a new run in `run_dir` (created if needed). Fails if the run
        already has an archive: resume it with `open` instead.

        The grid spec and island count are fixed for the run's lifetime
        (the stored cells depend on them); `grid` defaults to
        `default_grid_spec()`. `versions` defaults to `collect_versions()`.
        """
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if n_islands < 1:
            raise ValueError(f"n_islands must be >= 1, got {n_islands}")
        if synchronous not in SYNC_LEVELS:
            raise ValueError(f"synchronous must be one of {SYNC_LEVELS}")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / DB_NAME
        if path.exists():
            raise FileExistsError(f"{path} already exists; use RunStore.open to resume")
        grid = grid or default_grid_spec()
        versions = collect_versions() if versions is None else versions
        lock_fd = _acquire_writer_lock(run_dir)
        try:
            conn = _connect(path, readonly=False, synchronous=synchronous)
            now = time.time()
            meta = {
                "schema_version": str(schema.SCHEMA_VERSION),
                "created_at": repr(now),
                "seed": str(seed),
                "config": rows.dumps(config),
                "versions": rows.dumps(versions),
                "grid": rows.dumps(grid.to_dict()),
                "n_islands": str(n_islands),
                "iterations_done": "0",
            }
            # DDL is transactional in SQLite: a crash here leaves no half
            # schema that `open` would later trip over.
            conn.execute("BEGIN IMMEDIATE")
            for stmt in schema.statements():
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
            conn.execute(
                "INSERT INTO events(ts, kind, data) VALUES (?, 'create', ?)",
                (now, rows.dumps({"seed": seed, "n_islands": n_islands})),
            )
            conn.execute("COMMIT")
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store = cls(conn, path, readonly=False, lock_fd=lock_fd)
        store._load_meta()
        return store

    @classmethod
    def open(cls, run_dir, readonly: bool = False, *, synchronous: str = "FULL") -> "RunStore":
        """Open an existing run: as its (single) writer to resume it, or
        readonly to inspect it while it runs. Refuses newer schemas with
        SchemaVersionError."""
        if synchronous not in SYNC_LEVELS:
            raise ValueError(f"synchronous must be one of {SYNC_LEVELS}")
        run_dir = Path(run_dir)
        path = run_dir / DB_NAME
        if not path.exists():
            raise FileNotFoundError(f"no archive at {path}")
        lock_fd = None if readonly else _acquire_writer_lock(run_dir)
        try:
            conn = _connect(path, readonly=readonly, synchronous=synchronous)
            try:
                version = schema.read_version(conn, path)
                schema.check_version(version, path)
                if version < schema.SCHEMA_VERSION:
                    if readonly:
                        raise schema.SchemaVersionError(
                            f"{path} has schema version {version}; open it once "
                            "writable to upgrade it"
                        )
                    conn.execute("BEGIN IMMEDIATE")  # all steps or none: a failed step leaves the file as it was
                    try:
                        for v in range(version, schema.SCHEMA_VERSION):
                            schema.UPGRADES[v](conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store = cls(conn, path, readonly=readonly, lock_fd=lock_fd)
        store._load_meta()
        return store

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _load_meta(self) -> None:
        self._grid = GridSpec.from_dict(json.loads(self._meta("grid")))
        self._n_islands = int(self._meta("n_islands"))

    # ------------------------------------------------------------ run record

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def config(self) -> dict:
        return json.loads(self._meta("config"))

    def update_config(self, config: dict) -> None:
        """Replace the stored settings with those the run goes on with (a resume may raise the total of
        iterations or the budget): what ``config()`` returns is what the run is running to, for every reader."""
        with self._tx() as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'config'", (rows.dumps(config),))

    def seed(self) -> int:
        return int(self._meta("seed"))

    def versions(self) -> dict:
        return json.loads(self._meta("versions"))

    def grid_spec(self) -> GridSpec:
        return self._grid

    def n_islands(self) -> int:
        return self._n_islands

    def schema_version(self) -> int:
        return int(self._meta("schema_version"))

    def iterations_done(self) -> int:
        """Highest iteration number recorded (0 for a fresh run). Advanced in
        the same transaction as each program insert, so after a crash the
        loop resumes at iterations_done() + 1 and a total-iterations target
        is a total for the whole run."""
        return int(self._meta("iterations_done"))

    def record_iteration(self, iteration: int) -> None:
        """Count an iteration that produced no program row (e.g. the LLM
        call failed outright) as done."""
        with self._tx() as conn:
            self._bump_iterations(conn, iteration)

    def log_event(self, kind: str, data: dict | None = None) -> None:
        """Append an event ('start', 'stop', 'resume', ...); one transaction."""
        with self._tx() as conn:
            self._log_event(conn, kind, data)

    def events(self, kind: str | None = None) -> list[dict]:
        """Events in order as {'id', 'ts', 'kind', 'data'}."""
        sql, args = "SELECT id, ts, kind, data FROM events", ()
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", (kind,)
        found = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [
            {"id": r["id"], "ts": r["ts"], "kind": r["kind"], "data": json.loads(r["data"])}
            for r in found
        ]

    # ------------------------------------------------------------ programs

    def add_program(self, rec: ProgramRecord) -> int:
        """Insert `rec` in its own transaction, together with its grid
        placement (cell, elite table) and the iteration counter; returns its
        id. On success sets rec.id, code_hash, created_at, cell, and
        completes rec.features; on failure leaves rec untouched."""
        with self._tx() as conn:
            row = self._insert(conn, rec)
        self._apply(rec, row)
        return rec.id

    def get(self, program_id: int) -> ProgramRecord:
        row = self._conn.execute("SELECT * FROM programs WHERE id = ?", (program_id,)).fetchone()
        if row is None:
            raise KeyError(f"no program with id {program_id}")
        return rows.record_from_row(row)

    def get_many(self, ids) -> dict[int, ProgramRecord]:
        ids = list(ids)
        out: dict[int, ProgramRecord] = {}
        for i in range(0, len(ids), 500):  # stay below SQLite's variable limit
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT * FROM programs WHERE id IN ({marks})", chunk):
                out[row["id"]] = rows.record_from_row(row)
        return out

    def programs(
        self,
        status: str | None = None,
        island: int | None = None,
        since_id: int | None = None,
    ) -> list[ProgramRecord]:
        """Programs in id order, optionally filtered; `since_id` returns only
        ids greater than it (for tailing a live run)."""
        where, args = [], []
        for col, val, op in (("status", status, "="), ("island", island, "="), ("id", since_id, ">")):
            if val is not None:
                where.append(f"{col} {op} ?")
                args.append(val)
        sql = "SELECT * FROM programs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [rows.record_from_row(r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    def has_code_hash(
        self, code_hash: str, island: int | None = None, status: str | None = None
    ) -> int | None:
        """Lowest id of a program with this normalized hash (optionally on
        one island / with one status), or None."""
        sql, args = "SELECT MIN(id) FROM programs WHERE code_hash = ?", [code_hash]
        if island is not None:
            sql, args = sql + " AND island = ?", args + [island]
        if status is not None:
            sql, args = sql + " AND status = ?", args + [status]
        return self._conn.execute(sql, args).fetchone()[0]

    def placements(self, upto_id: int | None = None) -> list[tuple[int, int, tuple, float]]:
        """(id, island, cell, fitness) of every placed program in id order:
        the replay log from which grids are derived."""
        sql = "SELECT id, island, cell, fitness FROM programs WHERE cell IS NOT NULL"
        args: tuple = ()
        if upto_id is not None:
            sql, args = sql + " AND id <= ?", (upto_id,)
        found = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [(r[0], r[1], decode_cell(r[2]), r[3]) for r in found]

    def elite_table(self) -> dict[tuple[int, tuple], int]:
        """The elite table written at insert time: {(island, cell): id}."""
        found = self._conn.execute("SELECT island, cell, program_id FROM elites").fetchall()
        return {(r[0], decode_cell(r[1])): r[2] for r in found}

    # ------------------------------------------------------------ migration

    def migration_done(self, generation: int) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM events WHERE kind = 'migration' "
            "AND json_extract(data, '$.generation') = ? LIMIT 1",
            (generation,),
        ).fetchone()
        return row is not None

    def record_migration(
        self, generation: int, moves: list[tuple[ProgramRecord, int]]
    ) -> list[ProgramRecord]:
        """Write one migration round atomically: for each (source, target
        island) a copy row (operator 'migration', parent = source, same
        code, metrics, fitness, features), a `migrations` row, and one
        'migration' event for the round (written even if `moves` is empty,
        so the round is not redone on resume). Returns the copies, in order.
        Raises RuntimeError if this generation's round is already recorded.
        """
        copies = []
        with self._tx() as conn:
            if self.migration_done(generation):
                raise RuntimeError(f"migration for generation {generation} already recorded")
            iteration = int(self._meta("iterations_done"))
            decided = []
            for src, target in moves:
                if src.id is None or src.is_migrant:
                    raise ValueError("only stored, non-migrant programs can migrate")
                copy = ProgramRecord(
                    code=src.code,
                    operator="migration",
                    island=target,
                    generation=generation,
                    iteration=iteration,
                    parent_ids=(src.id,),
                    status="accepted",
                    metrics=src.metrics,
                    fitness=src.fitness,
                    latency_ms=src.latency_ms,
                    latency_ratio=src.latency_ratio,
                    stage=src.stage,
                    features=dict(src.features),
                )
                row = self._insert(conn, copy)
                conn.execute(
                    "INSERT INTO migrations(generation, source_id, copy_id, source_island, "
                    "target_island, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (generation, src.id, row["id"], src.island, target, row["created_at"]),
                )
                copies.append(copy)
                decided.append(row)
            self._log_event(
                conn,
                "migration",
                {"generation": generation, "copies": [[s.id, r["id"]] for (s, _), r in zip(moves, decided)]},
            )
        for copy, row in zip(copies, decided):
            self._apply(copy, row)
        return copies

    def migrations(self) -> list[dict]:
        return [dict(r) for r in self._conn.execute("SELECT * FROM migrations ORDER BY id")]

    def replace_grid(self, grid: GridSpec, cells: dict[int, tuple | None], elites: dict[tuple[int, tuple], int]) -> None:
        """Adopt a re-binned grid in one transaction: the spec in meta, every program's cell, the elite table
        (computed by ``elites.regrid``, which keeps every elite)."""
        with self._tx() as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'grid'", (rows.dumps(grid.to_dict()),))
            conn.executemany("UPDATE programs SET cell = ? WHERE id = ?",
                             [(encode_cell(c), pid) for pid, c in cells.items()])
            conn.execute("DELETE FROM elites")
            conn.executemany("INSERT INTO elites(island, cell, program_id) VALUES (?, ?, ?)",
                             [(island, encode_cell(cell), pid) for (island, cell), pid in elites.items()])
            self._log_event(conn, "regrid", {"grid": grid.to_dict()})
        self._grid = grid

    @contextmanager
    def atomic(self):
        """Every write inside the block commits as one transaction (a batch of programs with the migration and
        re-binning it triggers): a crash keeps all of it or none, so a resumed run starts where a batch began."""
        with self._tx():
            self._atomic = True
            try:
                yield self
            finally:
                self._atomic = False

    # ------------------------------------------------------------ maintenance

    def integrity_check(self) -> str:
        """'ok' or SQLite's description of the damage."""
        return "\n".join(r[0] for r in self._conn.execute("PRAGMA integrity_check"))

    @contextmanager
    def read_snapshot(self):
        """Make the reads inside the block see one consistent state (one
        read transaction). Needed by readers of a live run that combine
        several queries; re-entrant, and a no-op inside a write."""
        if self._conn.in_transaction:
            yield self
            return
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    def execute(self, sql: str, args=()) -> list[sqlite3.Row]:
        """Read-only escape hatch for ad-hoc SQL (tests, debugging). Code that
        needs a query should add a named method to `archive.queries` instead."""
        return self._conn.execute(sql, args).fetchall()

    # ------------------------------------------------------------ internals

    @contextmanager
    def _tx(self):
        if self.readonly:
            raise ReadOnlyStoreError(f"{self.path} is open read-only")
        if self._conn is None:
            raise sqlite3.ProgrammingError("store is closed")
        if self._atomic:  # part of the enclosing atomic() transaction
            yield self._conn
            return
        # IMMEDIATE takes the write lock up front, so a transaction never
        # fails half-way on lock upgrade.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may leave the transaction open (e.g. SQLITE_BUSY).
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _log_event(self, conn, kind: str, data: dict | None) -> None:
        conn.execute(
            "INSERT INTO events(ts, kind, data) VALUES (?, ?, ?)",
            (time.time(), kind, rows.dumps(data or {})),
        )

    @staticmethod
    def _bump_iterations(conn, iteration: int) -> None:
        conn.execute(
            "UPDATE meta SET value = MAX(CAST(value AS INTEGER), ?) WHERE key = 'iterations_done'",
            (int(iteration),),
        )

    def _validate(self, rec: ProgramRecord) -> None:
        if rec.id is not None:
            raise ValueError(f"program already stored as id {rec.id}")
        if rec.operator not in OPERATORS:
            raise ValueError(f"unknown operator {rec.operator!r}; expected one of {OPERATORS}")
        if rec.status not in STATUSES:
            raise ValueError(f"unknown status {rec.status!r}; expected one of {STATUSES}")
        if not 0 <= rec.island < self._n_islands:
            raise ValueError(f"island {rec.island} out of range for {self._n_islands} islands")
        if not isinstance(rec.code, str):
            raise TypeError("code must be str")

    def _insert(self, conn, rec: ProgramRecord) -> dict:
        """INSERT inside an open transaction; returns the values the store
        decided (id, hash, features, cell, ...) for `_apply` after commit."""
        self._validate(rec)
        values, out = rows.prepare(rec, self._grid)
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))
        cur = conn.execute(f"INSERT INTO programs({cols}) VALUES ({marks})", tuple(values.values()))
        out["id"] = cur.lastrowid
        self._bump_iterations(conn, rec.iteration)
        if out["cell"] is not None:
            key = encode_cell(out["cell"])
            inc = conn.execute(
                "SELECT p.fitness FROM elites e JOIN programs p ON p.id = e.program_id "
                "WHERE e.island = ? AND e.cell = ?",
                (rec.island, key),
            ).fetchone()
            if inc is None or beats(out["fitness"], inc[0]):
                conn.execute(
                    "INSERT OR REPLACE INTO elites(island, cell, program_id) VALUES (?, ?, ?)",
                    (rec.island, key, out["id"]),
                )
        return out

    @staticmethod
    def _apply(rec: ProgramRecord, out: dict) -> None:
        for key in ("id", "code_hash", "fitness", "metrics", "features", "cell", "created_at"):
            setattr(rec, key, out[key])
