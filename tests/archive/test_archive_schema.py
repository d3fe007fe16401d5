"""Archive schema (archive/schema.py): DDL splitting, version reading/refusal, and the upgrade path
a RunStore takes when it opens an older archive."""
from __future__ import annotations

import sqlite3

import pytest

from evorank.archive import ProgramRecord, RunStore, SchemaVersionError, schema
from evorank.archive.schema import DDL, SCHEMA_VERSION, check_version, read_version, statements
from evorank.archive.store import DB_NAME

TABLES = {"meta", "events", "programs", "migrations", "elites"}


def objects(con) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in con.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}


# ------------------------------------------------------------------ statements


def test_statements_are_complete_and_create_the_tables():
    stmts = statements()
    assert len(stmts) > 1
    for s in stmts:
        assert sqlite3.complete_statement(s) and s == s.strip() and s.upper().startswith("CREATE")
    con = sqlite3.connect(":memory:")
    for s in stmts:
        con.execute(s)  # one statement per execute(): raises if two were glued together
    assert {name for kind, name in objects(con) if kind == "table"} == TABLES


def test_statements_build_the_same_schema_as_the_whole_script():
    one_by_one, script = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for s in statements():
        one_by_one.execute(s)
    script.executescript(DDL)
    assert objects(one_by_one) == objects(script)
    sql = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    assert one_by_one.execute(sql).fetchall() == script.execute(sql).fetchall()


def test_statements_run_inside_one_transaction():
    """The point of splitting: the schema can be created (or not) atomically with our own BEGIN."""
    con = sqlite3.connect(":memory:", isolation_level=None)
    con.execute("BEGIN")
    for s in statements():
        con.execute(s)
    assert con.in_transaction
    con.execute("ROLLBACK")
    assert objects(con) == set()


def test_statements_of_custom_ddl():
    ddl = (
        "CREATE TABLE t (x TEXT DEFAULT 'a;b'); -- a comment; with a semicolon\n"
        "CREATE TABLE u (y INTEGER);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
        "    INSERT INTO u VALUES (1);\n"
        "    INSERT INTO u VALUES (2);\n"
        "END;\n"
    )
    stmts = statements(ddl)
    assert len(stmts) == 3 and stmts[2].startswith("CREATE TRIGGER") and stmts[2].endswith("END;")
    con = sqlite3.connect(":memory:")
    for s in stmts:
        con.execute(s)
    con.execute("INSERT INTO t DEFAULT VALUES")
    assert con.execute("SELECT x FROM t").fetchone()[0] == "a;b"
    assert con.execute("SELECT COUNT(*) FROM u").fetchone()[0] == 2
    assert statements("") == [] and statements("\n  \n") == []


def test_statements_refuse_an_incomplete_statement():
    with pytest.raises(ValueError, match="incomplete"):
        statements("CREATE TABLE a (x);\nCREATE TABLE b (y")


# ------------------------------------------------------------------ versions


def meta_db(version=None, *, with_meta=True) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    if with_meta:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    if version is not None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    return con


def test_read_version():
    assert read_version(meta_db(SCHEMA_VERSION), "x.sqlite") == SCHEMA_VERSION
    assert read_version(meta_db(7), "x.sqlite") == 7


@pytest.mark.parametrize("con", [meta_db(None), meta_db(with_meta=False)], ids=["no-version-row", "no-meta-table"])
def test_read_version_of_a_non_archive_names_the_file(con):
    with pytest.raises(SchemaVersionError, match=r"/runs/r1/archive\.sqlite.*not an evorank archive"):
        read_version(con, "/runs/r1/archive.sqlite")


def test_check_version_refuses_a_newer_schema_naming_the_file():
    check_version(SCHEMA_VERSION, "a.sqlite")  # current: fine
    for newer in (SCHEMA_VERSION + 1, SCHEMA_VERSION + 10):
        with pytest.raises(SchemaVersionError) as info:
            check_version(newer, "/runs/r1/archive.sqlite")
        assert "/runs/r1/archive.sqlite" in str(info.value) and str(newer) in str(info.value)


def test_every_older_shipped_version_has_an_upgrade_path():
    for version in range(1, SCHEMA_VERSION + 1):  # version 1 is the first ever written
        check_version(version, "old.sqlite")
    assert all(callable(step) for step in schema.UPGRADES.values())
    assert all(1 <= v < SCHEMA_VERSION for v in schema.UPGRADES)


def test_check_version_needs_every_upgrade_step(monkeypatch):
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(schema, "UPGRADES", {1: lambda c: None, 3: lambda c: None})
    check_version(3, "a.sqlite")
    check_version(4, "a.sqlite")
    for version in (1, 2):
        with pytest.raises(SchemaVersionError, match=r"a\.sqlite.*\[2\]"):
            check_version(version, "a.sqlite")


# ------------------------------------------------------------------ upgrades through RunStore.open


def make_store(run_dir) -> int:
    """A store at the current version holding one program; returns its id."""
    with RunStore.create(run_dir, {"x": 1}, seed=3, versions={}, synchronous="NORMAL") as s:
        return s.add_program(ProgramRecord(code="def f():\n    return 1\n", operator="seed", island=0,
                                           generation=0, iteration=0, fitness=0.5, latency_ratio=1.0))


def add_column_step(calls):
    def step(conn):
        calls.append(conn)
        conn.execute("ALTER TABLE programs ADD COLUMN upgraded_note TEXT")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    return step


def test_open_upgrades_an_older_store(tmp_path, monkeypatch):
    pid = make_store(tmp_path)  # written at SCHEMA_VERSION ...
    calls = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)  # ... which is now one behind
    monkeypatch.setattr(schema, "UPGRADES", {**schema.UPGRADES, SCHEMA_VERSION: add_column_step(calls)})

    with RunStore.open(tmp_path) as s:
        assert len(calls) == 1
        assert s.schema_version() == SCHEMA_VERSION + 1
        cols = {r[1] for r in s.execute("PRAGMA table_info(programs)")}
        assert "upgraded_note" in cols
        assert s.get(pid).fitness == 0.5 and s.config() == {"x": 1}  # data kept
    # Upgraded once: reopening (writable or not) runs no step again.
    RunStore.open(tmp_path).close()
    with RunStore.open(tmp_path, readonly=True) as ro:
        assert ro.schema_version() == SCHEMA_VERSION + 1
    assert len(calls) == 1


def test_readonly_open_of_an_older_store_raises(tmp_path, monkeypatch):
    make_store(tmp_path)
    calls = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(schema, "UPGRADES", {**schema.UPGRADES, SCHEMA_VERSION: add_column_step(calls)})
    with pytest.raises(SchemaVersionError, match=rf"{DB_NAME}.*writable"):
        RunStore.open(tmp_path, readonly=True)
    assert calls == []  # a reader never changes the file
    con = sqlite3.connect(tmp_path / DB_NAME)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def test_older_store_without_upgrade_step_is_refused(tmp_path, monkeypatch):
    make_store(tmp_path)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    for readonly in (False, True):
        with pytest.raises(SchemaVersionError, match="no upgrade path"):
            RunStore.open(tmp_path, readonly=readonly)
    # The refused writable open let go of the writer lock.
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION)
    RunStore.open(tmp_path).close()


def test_failed_upgrade_releases_the_writer_lock(tmp_path, monkeypatch):
    make_store(tmp_path)

    def broken(conn):
        raise RuntimeError("upgrade step failed")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(schema, "UPGRADES", {**schema.UPGRADES, SCHEMA_VERSION: broken})
    with pytest.raises(RuntimeError, match="upgrade step failed"):
        RunStore.open(tmp_path)
    calls = []
    monkeypatch.setattr(schema, "UPGRADES", {**schema.UPGRADES, SCHEMA_VERSION: add_column_step(calls)})
    with RunStore.open(tmp_path) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1 and len(calls) == 1


def test_half_done_upgrade_is_rolled_back(tmp_path, monkeypatch):
    make_store(tmp_path)

    def half(conn):
        conn.execute("ALTER TABLE programs ADD COLUMN upgraded_note TEXT")
        raise RuntimeError("crash in the middle of an upgrade")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(schema, "UPGRADES", {**schema.UPGRADES, SCHEMA_VERSION: half})
    with pytest.raises(RuntimeError, match="crash"):
        RunStore.open(tmp_path)
    con = sqlite3.connect(tmp_path / DB_NAME)
    cols = {r[1] for r in con.execute("PRAGMA table_info(programs)")}
    con.close()
    assert "upgraded_note" not in cols
