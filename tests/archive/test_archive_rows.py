"""ProgramRecord <-> programs-table rows (archive/rows.py): JSON cleaning, insert values, and the
round trip through real SQLite rows."""
from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from evorank.archive import FeatureDim, GridSpec, ProgramRecord, RunStore, normalized_code_hash
from evorank.archive.rows import clean, dumps, finite_or_none, prepare, record_from_row
from evorank.archive.schema import statements

SPEC = GridSpec((FeatureDim("complexity", (8, 16, 32)), FeatureDim("latency_ratio", (0.5, 1, 2, 4), log=True)))
CODE = "def score(tf, df):\n    return tf / (df + 1)\n"


def full_record(**kw) -> ProgramRecord:
    fields = dict(
        code=CODE, operator="crossover", island=1, generation=3, iteration=12, parent_ids=(4, 9),
        status="accepted", failure_reason=None, failure_detail=None,
        metrics={"scifact": {"ndcg@10": 0.61, "recall@100": 0.9}, "nfcorpus": {"ndcg@10": 0.31}},
        fitness=0.46, latency_ms=0.75, latency_ratio=1.5, stage=2, model="gpt-x",
        prompt="the prompt", response="the response", prompt_tokens=1200, completion_tokens=345,
        cost_usd=0.0123, features={"seed_name": "bm25"}, started_at=1700000000.5,
    )
    fields.update(kw)
    return ProgramRecord(**fields)


# ------------------------------------------------------------------ clean / dumps


def test_clean_non_finite_floats_become_none():
    assert clean(float("nan")) is None
    assert clean(float("inf")) is None and clean(-math.inf) is None
    assert clean(1.5) == 1.5 and clean(0) == 0 and clean(-3) == -3
    assert clean(None) is None and clean("nan") == "nan"  # strings are not numbers


def test_clean_keeps_bools_and_strings():
    assert clean(True) is True and clean(False) is False
    assert clean("x") == "x"


def test_clean_numpy_scalars_become_plain_numbers():
    for value, expected, typ in [
        (np.float64(0.25), 0.25, float), (np.float32(1.5), 1.5, float), (np.int64(7), 7, int),
        (np.int32(-2), -2, int), (np.uint8(255), 255, int),
    ]:
        got = clean(value)
        assert got == expected and type(got) is typ, (value, got)
    assert clean(np.float64("nan")) is None and clean(np.float32("inf")) is None


def test_clean_nested_containers():
    data = {
        "a": {"b": [1.0, float("nan"), (np.int64(2), np.float32(0.5))], "c": float("-inf")},
        3: "int key",
        "t": (1, 2),
    }
    got = clean(data)
    assert got == {"a": {"b": [1.0, None, [2, 0.5]], "c": None}, "3": "int key", "t": [1, 2]}
    assert type(got["a"]["b"][2][0]) is int and type(got["a"]["b"][2][1]) is float
    # A copy: the input is untouched.
    assert math.isnan(data["a"]["b"][1]) and data["t"] == (1, 2)


def test_dumps_writes_strict_json():
    text = dumps({"z": 1, "a": {"x": float("nan"), "y": np.float32(2.5)}, "l": [math.inf, np.int64(4)]})
    # Strict JSON (no NaN/Infinity tokens) that any reader, SQLite's json functions included, accepts.
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == {
        "z": 1, "a": {"x": None, "y": 2.5}, "l": [None, 4]}
    assert list(json.loads(text)) == ["a", "l", "z"]  # keys sorted: stable text for equal content
    con = sqlite3.connect(":memory:")
    assert con.execute("SELECT json_valid(?), json_extract(?, '$.a.x')", (text, text)).fetchone() == (1, None)
    assert dumps({"b": 1, "a": 2}) == dumps({"a": 2, "b": 1})


def test_dumps_of_unknown_objects_does_not_raise():
    class Thing:
        def __str__(self):
            return "thing!"

    assert json.loads(dumps({"x": Thing()})) == {"x": "thing!"}


def test_dumps_numpy_array_as_json_list():
    assert json.loads(dumps({"v": np.array([1.0, np.nan, 3.0])})) == {"v": [1.0, None, 3.0]}


def test_dumps_numpy_bool_as_json_bool():
    assert json.loads(dumps({"ok": np.bool_(True)})) == {"ok": True}


def test_finite_or_none():
    assert finite_or_none(None) is None
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(math.inf) is None and finite_or_none(-math.inf) is None
    assert finite_or_none(np.float32("nan")) is None
    for value in (0, 2, 0.5, np.float32(1.5), np.int64(3), -1e300):
        got = finite_or_none(value)
        assert type(got) is float and got == float(value)


# ------------------------------------------------------------------ prepare


def program_columns() -> list[str]:
    con = sqlite3.connect(":memory:")
    for stmt in statements():
        con.execute(stmt)
    return [r[1] for r in con.execute("PRAGMA table_info(programs)")]


def test_prepare_values_cover_every_column_but_the_id():
    values, _ = prepare(full_record(), SPEC)
    assert set(values) == set(program_columns()) - {"id"}


def test_prepare_values_and_decided_fields():
    rec = full_record(fitness=np.float64(0.46), prompt_tokens=np.int64(1200),
                      metrics={"scifact": {"ndcg@10": np.float32(0.5), "recall@100": float("nan")}})
    values, decided = prepare(rec, SPEC)
    assert values["code"] == CODE and values["code_hash"] == decided["code_hash"] == normalized_code_hash(CODE)
    assert json.loads(values["parent_ids"]) == [4, 9]
    assert json.loads(values["metrics"]) == decided["metrics"] == {"scifact": {"ndcg@10": 0.5, "recall@100": None}}
    assert type(values["fitness"]) is float and values["fitness"] == 0.46
    assert type(values["prompt_tokens"]) is int
    # Features: the caller's plus what the grid needs (and complexity), as JSON.
    features = json.loads(values["features"])
    assert features == decided["features"]
    assert features["seed_name"] == "bm25" and features["latency_ratio"] == 1.5 and features["complexity"] > 0
    # Placed: the cell is the grid's cell of those features, stored as JSON.
    assert decided["cell"] == SPEC.cell(features) is not None
    assert json.loads(values["cell"]) == list(decided["cell"])
    assert values["created_at"] == decided["created_at"] > 0
    # prepare only computes: the record is not modified.
    assert rec.id is None and rec.code_hash is None and rec.cell is None and rec.features == {"seed_name": "bm25"}


@pytest.mark.parametrize("kw", [
    {"status": "failed", "failure_reason": "timeout"},
    {"fitness": None},
    {"fitness": float("nan")},
    {"fitness": math.inf},
    {"latency_ratio": None},  # a grid feature is unknown
    {"latency_ratio": float("nan")},
])
def test_prepare_unplaceable_records_get_no_cell(kw):
    values, decided = prepare(full_record(**kw), SPEC)
    assert decided["cell"] is None and values["cell"] is None


def test_prepare_non_finite_numbers_become_null():
    values, decided = prepare(full_record(fitness=math.nan, latency_ms=math.inf, latency_ratio=-math.inf), SPEC)
    assert values["fitness"] is None and decided["fitness"] is None
    assert values["latency_ms"] is None and values["latency_ratio"] is None


def test_prepared_values_insert_and_read_back():
    """prepare -> plain INSERT into the real schema -> record_from_row gives the record back."""
    con = sqlite3.connect(":memory:")
    con.row_factory = sqlite3.Row
    for stmt in statements():
        con.execute(stmt)
    rec = full_record()
    values, decided = prepare(rec, SPEC)
    cur = con.execute(f"INSERT INTO programs({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                      tuple(values.values()))
    got = record_from_row(con.execute("SELECT * FROM programs WHERE id = ?", (cur.lastrowid,)).fetchone())
    for key, value in decided.items():
        setattr(rec, key, value)
    rec.id = cur.lastrowid
    assert got == rec


# ------------------------------------------------------------------ record_from_row via a store


@pytest.fixture
def store(tmp_path):
    s = RunStore.create(tmp_path / "run", {"k": 1}, seed=5, versions={}, grid=SPEC, n_islands=2,
                        synchronous="NORMAL")
    yield s
    s.close()


def test_record_round_trip_through_a_store_row(store):
    rec = full_record()
    pid = store.add_program(rec)
    row = store.execute("SELECT * FROM programs WHERE id = ?", (pid,))[0]
    assert isinstance(row, sqlite3.Row)
    got = record_from_row(row)
    assert got == rec == store.get(pid)
    assert got.parent_ids == (4, 9) and isinstance(got.parent_ids, tuple)
    assert isinstance(got.cell, tuple) and got.cell == rec.cell
    assert got.id == pid and got.code_hash == normalized_code_hash(CODE) and got.created_at is not None


def test_round_trip_of_a_failed_record_with_odd_values(store):
    rec = full_record(
        status="failed", failure_reason="invalid_scores:nan", failure_detail="ünïcode ✓ detail\nline 2",
        fitness=float("nan"), latency_ms=None, latency_ratio=None, parent_ids=(),
        metrics={"c": {"ndcg@10": np.float32(0.25), "map@1000": float("inf")}},
        features={"seed_name": "ql", "complexity": np.int64(40)}, model=None, prompt=None, response=None,
        started_at=None, stage=1,
    )
    pid = store.add_program(rec)
    got = record_from_row(store.execute("SELECT * FROM programs WHERE id = ?", (pid,))[0])
    assert got == store.get(pid)
    assert got.fitness is None and got.cell is None and got.parent_ids == ()
    assert got.metrics == {"c": {"ndcg@10": 0.25, "map@1000": None}}
    assert got.features["complexity"] == 40 and type(got.features["complexity"]) is int
    assert got.failure_detail == "ünïcode ✓ detail\nline 2" and got.status == "failed" and got.stage == 1
    assert got.model is None and got.started_at is None
