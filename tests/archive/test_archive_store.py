"""RunStore: run record, program round trip, schema versioning, read-only
access, the single-writer lock, and resume of island state."""

import math
import sqlite3

import pytest

from evorank.archive import (
    SCHEMA_VERSION,
    FeatureDim,
    GridSpec,
    Islands,
    ProgramRecord,
    ReadOnlyStoreError,
    RunStore,
    SchemaVersionError,
    StoreLockedError,
    normalized_code_hash,
    resume_islands,
    verify,
)
from evorank.archive.store import DB_NAME

SPEC = GridSpec((FeatureDim("complexity", (8, 16, 32)), FeatureDim("latency_ratio", (0.5, 1, 2, 4), log=True)))


def code(k: int) -> str:
    return f"def score(tf, df):\n    return tf * {k} / (df + 1)\n"


def rec(k: int, island=0, fitness=0.5, iteration=None, **kw) -> ProgramRecord:
    kw.setdefault("latency_ratio", 1.0)
    return ProgramRecord(
        code=code(k),
        operator=kw.pop("operator", "diff"),
        island=island,
        generation=kw.pop("generation", 1),
        iteration=k if iteration is None else iteration,
        fitness=fitness,
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    s = RunStore.create(tmp_path / "run", {"islands": 2, "model": "m"}, seed=11, versions={}, grid=SPEC, n_islands=2)
    yield s
    s.close()


def test_create_records_run_and_durability_pragmas(tmp_path):
    s = RunStore.create(tmp_path / "r", {"a": [1, 2], "path": tmp_path}, seed=3, grid=SPEC, n_islands=3)
    assert (tmp_path / "r" / DB_NAME).exists()
    assert s.config() == {"a": [1, 2], "path": str(tmp_path)}
    assert s.seed() == 3 and s.n_islands() == 3 and s.grid_spec() == SPEC
    assert s.schema_version() == SCHEMA_VERSION
    assert "python" in s.versions() and "sqlite" in s.versions()
    assert s.execute("PRAGMA journal_mode")[0][0] == "wal"
    assert s.execute("PRAGMA synchronous")[0][0] == 2  # FULL
    assert [e["kind"] for e in s.events()] == ["create"]
    assert s.iterations_done() == 0
    s.close()
    with pytest.raises(FileExistsError):
        RunStore.create(tmp_path / "r", {}, seed=3)
    with pytest.raises(FileNotFoundError):
        RunStore.open(tmp_path / "missing")
    with pytest.raises(ValueError):
        RunStore.create(tmp_path / "neg", {}, seed=-1)


def test_program_round_trip(store):
    r = ProgramRecord(
        code=code(1),
        operator="crossover",
        island=1,
        generation=4,
        iteration=9,
        parent_ids=(3, 5),
        metrics={"scifact": {"ndcg@10": 0.61, "recall@100": 0.9}, "nfcorpus": {"ndcg@10": 0.3}},
        fitness=0.455,
        latency_ms=0.8,
        latency_ratio=1.6,
        stage=2,
        model="gpt-x",
        prompt="P" * 5000,
        response="R",
        prompt_tokens=1200,
        completion_tokens=300,
        cost_usd=0.0123,
        started_at=100.0,
    )
    pid = store.add_program(r)
    assert r.id == pid and r.code_hash == normalized_code_hash(r.code)
    assert r.cell is not None and r.created_at is not None
    assert r.features["latency_ratio"] == 1.6 and r.features["complexity"] > 0
    assert store.get(pid) == r
    assert store.programs() == [r] and store.programs(island=0) == [] and store.programs(status="failed") == []
    assert store.iterations_done() == 9
    summary = store.summary()
    assert summary["prompt_tokens"] == 1200 and summary["cost_usd"] == pytest.approx(0.0123)
    with pytest.raises(KeyError):
        store.get(999)
    with pytest.raises(ValueError):
        store.add_program(r)  # already stored


def test_rejects_bad_records_without_writing(store):
    for bad in (rec(1, operator="mutate"), rec(1, status="ok"), rec(1, island=2)):
        with pytest.raises(ValueError):
            store.add_program(bad)
        assert bad.id is None
    assert store.count() == 0 and store.iterations_done() == 0


def test_unplaceable_programs_are_archived_not_placed(store):
    failed = store.add_program(rec(1, status="failed", failure_reason="timeout", fitness=None))
    nan = store.add_program(rec(2, fitness=float("nan"), metrics={"c": {"m": float("inf")}}))
    no_latency = store.add_program(rec(3, latency_ratio=None))
    assert store.get(failed).failure_reason == "timeout"
    assert store.get(nan).fitness is None and store.get(nan).metrics == {"c": {"m": None}}
    assert all(store.get(i).cell is None for i in (failed, nan, no_latency))
    assert store.placements() == [] and store.elite_table() == {}
    assert Islands.from_store(store).snapshot() == {0: {}, 1: {}}


def test_numpy_scalars_are_stored_as_plain_numbers(store):
    import numpy as np

    r = rec(1, fitness=np.float64(0.25), latency_ratio=np.float32(1.5),
            metrics={"c": {"ndcg@10": np.float32(0.5), "n": np.int64(3)}})
    store.add_program(r)
    got = store.get(r.id)
    assert got.metrics == {"c": {"ndcg@10": 0.5, "n": 3}} and got.fitness == 0.25
    assert type(got.metrics["c"]["ndcg@10"]) is float and got.features["latency_ratio"] == 1.5


def test_feature_sums_add_up_every_program_missing_counting_zero(store):
    store.add_program(rec(1, features={"prepare_runs": 6, "prepare_reused": 4}))
    store.add_program(rec(2, features={"prepare_runs": 6}))
    store.add_program(rec(3))
    assert store.feature_sums(["prepare_runs", "prepare_reused", "absent"]) == {
        "prepare_runs": 12, "prepare_reused": 4, "absent": 0}
    assert sum(r.features.get("prepare_runs", 0) for r in store.programs()) == 12


def test_has_code_hash_uses_normalized_code(store):
    pid = store.add_program(rec(1))
    variant = "# comment\ndef score(tf, df):\n    '''doc'''\n    return (tf * 1\n            / (df + 1))\n"
    assert store.has_code_hash(normalized_code_hash(variant)) == pid
    assert store.has_code_hash(normalized_code_hash(variant), island=1) is None
    assert store.has_code_hash(normalized_code_hash(code(2))) is None


def test_iteration_counter_is_a_high_water_mark(store):
    store.add_program(rec(1, iteration=5))
    store.add_program(rec(2, iteration=3))  # a slower in-flight candidate
    assert store.iterations_done() == 5
    store.record_iteration(7)
    assert store.iterations_done() == 7


def test_events(store):
    store.log_event("start", {"pid": 1})
    store.log_event("stop", {"reason": "done", "x": math.nan})
    assert [e["kind"] for e in store.events()] == ["create", "start", "stop"]
    assert store.events("stop")[0]["data"] == {"reason": "done", "x": None}


def test_atomic_block_commits_all_of_its_writes_or_none(store):
    with store.atomic():
        store.add_program(rec(1))
        store.log_event("inside")
    assert store.count() == 1 and store.events("inside")
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.add_program(rec(2))
            store.log_event("lost")
            raise RuntimeError("crash half-way through a batch")
    assert store.count() == 1 and not store.events("lost") and store.iterations_done() == 1
    store.add_program(rec(3))  # the store is usable after the rollback, one transaction per write again
    assert store.count() == 2 and store.placed_count() == 2


def _set_schema_version(run_dir, version):
    conn = sqlite3.connect(run_dir / DB_NAME)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.commit()
    conn.close()


def test_refuses_newer_schema(tmp_path):
    RunStore.create(tmp_path, {}, seed=1, versions={}).close()
    _set_schema_version(tmp_path, SCHEMA_VERSION + 1)
    for readonly in (False, True):
        with pytest.raises(SchemaVersionError, match=rf"version {SCHEMA_VERSION + 1}.*upgrade evorank"):
            RunStore.open(tmp_path, readonly=readonly)
    # The refused writable open released the writer lock.
    _set_schema_version(tmp_path, SCHEMA_VERSION)
    RunStore.open(tmp_path).close()


def test_refuses_non_archive(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="not an evorank archive"):
        RunStore.open(tmp_path, readonly=True)


def test_readonly_store_cannot_write(store):
    store.add_program(rec(1))
    ro = RunStore.open(store.run_dir, readonly=True)
    assert ro.count() == 1 and ro.seed() == 11
    with pytest.raises(ReadOnlyStoreError):
        ro.add_program(rec(2))
    with pytest.raises(ReadOnlyStoreError):
        ro.log_event("start")
    with pytest.raises(ReadOnlyStoreError):
        Islands.from_store(ro).migrate(ro, 1, 0.5)
    # Not just the wrapper: SQLite itself refuses (mode=ro connection).
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("INSERT INTO events(ts, kind, data) VALUES (0, 'x', '{}')")
    assert ro.count() == 1 and len(ro.events()) == 1
    ro.close()


def test_single_writer_lock(store):
    with pytest.raises(StoreLockedError):
        RunStore.open(store.run_dir)
    RunStore.open(store.run_dir, readonly=True).close()  # readers are fine
    run_dir = store.run_dir
    store.close()
    RunStore.open(run_dir).close()


def test_from_store_refuses_other_grid_shape(store):
    with pytest.raises(ValueError, match="fixed per run"):
        Islands.from_store(store, spec=GridSpec((FeatureDim("complexity", (1, 2)),)))
    with pytest.raises(ValueError, match="n_islands"):
        Islands.from_store(store, n_islands=3)
    assert verify(store, n_islands=3) != []


def test_resume_restores_islands_and_migrations(tmp_path):
    s = RunStore.create(tmp_path, {}, seed=5, versions={}, grid=SPEC, n_islands=2, synchronous="NORMAL")
    islands = Islands.from_store(s)
    for k in range(1, 40):
        islands.add(s, rec(k, island=k % 2, fitness=(k * 37 % 11) / 10, latency_ratio=2 ** ((k % 7) - 2)))
        if k % 10 == 0:
            islands.migrate(s, k // 10, 0.5)
    before = islands.snapshot()
    assert any(e.is_migrant for e in islands.all_elites())
    s.close()
    s = RunStore.open(tmp_path)
    again = resume_islands(s)
    assert again.snapshot() == before
    assert [r.id for r in again.all_elites()] == [r.id for r in islands.all_elites()]
    assert again.all_elites() == islands.all_elites()
    assert again.visits(0) == islands.visits(0)
    # A round already recorded is not redone after resume.
    n = s.count()
    assert again.migrate(s, 3, 0.5) == [] and s.count() == n
    s.close()


def test_verify_detects_tampering(tmp_path):
    s = RunStore.create(tmp_path, {}, seed=5, versions={}, grid=SPEC, n_islands=2, synchronous="NORMAL")
    islands = Islands.from_store(s)
    for k in range(1, 12):
        islands.add(s, rec(k, island=k % 2, fitness=k / 10, latency_ratio=1.0 + k))
    islands.migrate(s, 1, 1.0)
    assert verify(s, islands=islands, deep=True) == []
    s.close()
    raw = sqlite3.connect(tmp_path / DB_NAME)
    raw.execute("UPDATE programs SET code = code || 'x = 1' WHERE id = 1")
    raw.execute("DELETE FROM elites WHERE rowid = (SELECT MIN(rowid) FROM elites)")
    raw.execute("UPDATE programs SET cell = '[0,0]' WHERE id = 2")
    raw.execute("DELETE FROM migrations WHERE id = 1")
    raw.commit()
    raw.close()
    s = RunStore.open(tmp_path, readonly=True)
    problems = verify(s, deep=True)
    text = "\n".join(problems)
    assert "code_hash" in text and "elite table" in text and "stored cell" in text
    assert "no migrations row" in text
    s.close()


# -- read-only queries (archive.queries, mixed into RunStore) ------------------------------------------


def _mixed_run(store):
    """Seeds, proposals of two models (one failed, one duplicate), a migration copy; returns the records."""
    out = {}
    for isl in (0, 1):
        out[f"seed{isl}"] = rec(100, island=isl, iteration=0, operator="seed", features={"seed_name": "s"})
        store.add_program(out[f"seed{isl}"])
    out["a"] = rec(1, model="m1", prompt_tokens=100, completion_tokens=10, cost_usd=0.5)
    out["fail0"] = rec(2, status="failed", failure_reason="syntax_error", fitness=None, model="m1",
                       prompt_tokens=50, completion_tokens=5, cost_usd=0.25)
    out["fail1"] = rec(3, island=1, status="failed", failure_reason="timeout", fitness=None, model="m2",
                       prompt_tokens=7, completion_tokens=3, cost_usd=0.125)
    out["fail0b"] = rec(4, status="failed", failure_reason="syntax_error", fitness=None, model="m1")
    out["dup"] = rec(1, iteration=5, status="duplicate", failure_reason="duplicate", fitness=None)
    for k in ("a", "fail0", "fail1", "fail0b", "dup"):
        store.add_program(out[k])
    out["copies"] = store.record_migration(1, [(out["a"], 1)])
    return out


def test_queries_on_an_empty_run(store):
    assert store.outcome_counts() == [] and store.model_usage() == [] and store.creation_times() == []
    assert store.max_id() == 0 and store.code_hash_matches("a") == []
    assert store.proposal_progress() == (0, 0) and store.recent_failures(0) == []


def test_outcome_counts_group_by_operator_status_and_reason(store):
    from evorank.archive import OutcomeCount

    _mixed_run(store)
    got = {(o.operator, o.status, o.failure_reason): o.n for o in store.outcome_counts()}
    assert got == {("seed", "accepted", None): 2, ("diff", "accepted", None): 1,
                   ("diff", "failed", "syntax_error"): 2, ("diff", "failed", "timeout"): 1,
                   ("diff", "duplicate", "duplicate"): 1, ("migration", "accepted", None): 1}
    assert all(isinstance(o, OutcomeCount) for o in store.outcome_counts())


def test_model_usage_totals_per_model_without_seeds_or_copies(store):
    from evorank.archive import ModelUsage

    _mixed_run(store)
    usage = store.model_usage()
    assert usage[0] == ModelUsage("m1", 3, 150, 15, 0.75)  # the most used model first
    assert {u.model: u for u in usage[1:]} == {"m2": ModelUsage("m2", 1, 7, 3, 0.125),
                                               None: ModelUsage(None, 1, 0, 0, 0.0)}  # the duplicate


def test_creation_times_and_max_id(store):
    recs = _mixed_run(store)
    times = store.creation_times()
    assert len(times) == store.count() == 8 and times == sorted(times)
    assert times[0] == recs["seed0"].created_at and times[-1] == recs["copies"][0].created_at
    assert store.max_id() == recs["copies"][0].id == 8


def test_code_hash_matches_any_case_in_id_order(store):
    from evorank.archive import HashMatch

    recs = _mixed_run(store)
    h = recs["a"].code_hash
    found = store.code_hash_matches(h[:6].upper())
    # the accepted original, the duplicate (same code) and the migration copy share the hash
    assert [m.id for m in found] == [recs["a"].id, recs["dup"].id, recs["copies"][0].id]
    assert found[0] == HashMatch(recs["a"].id, h, "accepted", "diff")
    assert [m.operator for m in found] == ["diff", "diff", "migration"]
    assert store.code_hash_matches(h) == found and store.code_hash_matches("zz") == []
    assert {m.id for m in store.code_hash_matches("")} == set(range(1, 9))  # the empty prefix matches all


def test_proposal_progress_counts_proposals_not_seeds_or_copies(store):
    _mixed_run(store)
    assert store.proposal_progress() == (5, 5)
    store.add_program(rec(9, iteration=12, status="failed", failure_reason="x", fitness=None))
    assert store.proposal_progress() == (6, 12)


def test_recent_failures_newest_first_on_one_island(store):
    recs = _mixed_run(store)
    assert [r.id for r in store.recent_failures(0)] == [recs["fail0b"].id, recs["fail0"].id]
    assert [r.id for r in store.recent_failures(0, limit=1)] == [recs["fail0b"].id]
    got = store.recent_failures(1)
    assert [r.id for r in got] == [recs["fail1"].id] and got[0].failure_reason == "timeout"
    assert got[0].code == recs["fail1"].code and isinstance(got[0], ProgramRecord)


def test_queries_work_on_a_readonly_store(store):
    recs = _mixed_run(store)
    with RunStore.open(store.run_dir, readonly=True) as ro, ro.read_snapshot():
        assert ro.proposal_progress() == store.proposal_progress()
        assert ro.outcome_counts() == store.outcome_counts() and ro.model_usage() == store.model_usage()
        assert ro.max_id() == 8 and [r.id for r in ro.recent_failures(1)] == [recs["fail1"].id]
