"""Crash safety (a writer SIGKILLed at random moments) and concurrent
readers of a live run. Writers/readers are separate processes running the
small scripts below, as a real run and `evorank inspect` would be."""

import hashlib  # noqa: F401  (used by the exec'd DIGEST_SRC)
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evorank.archive import (  # ProgramRecord, rng_for: used by the exec'd RECORD_SRC
    FeatureDim,
    GridSpec,
    Islands,
    ProgramRecord,  # noqa: F401
    RunStore,
    rng_for,  # noqa: F401
    verify,
)
from evorank.archive.store import DB_NAME

SPEC = GridSpec((FeatureDim("complexity", (10, 20, 40)), FeatureDim("latency_ratio", (0.5, 1, 2, 4, 8, 16), log=True)))
SEED = 123

# Shared by the writer script and this test: a fingerprint of the grids.
DIGEST_SRC = '''
def digest(islands):
    items = sorted((i, c, pid) for i, g in islands.snapshot().items() for c, pid in g.items())
    return hashlib.sha1(repr(items).encode()).hexdigest()[:16]
'''
exec(DIGEST_SRC)

# The record for iteration `it` depends only on (seed, it): a resumed writer
# redoes exactly what an uninterrupted one would have done.
RECORD_SRC = '''
def make_record(seed, it, n_islands):
    rng = rng_for(seed, it)
    failed = bool(rng.random() < 0.1)
    return ProgramRecord(
        code=f"def score(tf, df):\\n    return tf * {it} / (df + {it % 7})\\n",
        operator="diff",
        island=it % n_islands,
        generation=it // n_islands,
        iteration=it,
        parent_ids=(max(1, it - 3),) if it > 3 else (),
        status="failed" if failed else "accepted",
        failure_reason="timeout" if failed else None,
        fitness=None if failed else float(rng.random()),
        metrics={"c1": {"ndcg@10": float(rng.random())}, "c2": {"ndcg@10": 0.5}},
        latency_ratio=float(2 ** rng.uniform(-2, 5)),
        features={"complexity": float(rng.integers(1, 60))},
        prompt="p" * int(rng.integers(500, 12000)),
        response="r" * int(rng.integers(100, 3000)),
        prompt_tokens=int(rng.integers(100, 2000)),
        completion_tokens=int(rng.integers(10, 500)),
        cost_usd=0.001,
    )
'''
exec(RECORD_SRC)

WRITER = f'''
import hashlib, sys
from evorank.archive import ProgramRecord, RunStore, resume_islands, rng_for
{DIGEST_SRC}
{RECORD_SRC}
run_dir, out_path = sys.argv[1], sys.argv[2]
out = open(out_path, "a")

def say(line):
    out.write(line + "\\n")
    out.flush()

store = RunStore.open(run_dir)
islands = resume_islands(store)
seed, n = store.seed(), store.n_islands()
it = store.iterations_done() + 1
say(f"START {{it}}")
while True:
    rec = make_record(seed, it, n)
    islands.add(store, rec)
    say(f"P {{rec.id}} {{it}} {{digest(islands)}}")
    if it % 6 == 0:
        ids = islands.migrate(store, it // 6, 0.3)
        say(f"M {{max(ids) if ids else rec.id}} {{it}} {{digest(islands)}}")
    it += 1
'''


def read_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    text = path.read_text()
    complete = text.split("\n")[:-1]  # a torn last line has no newline
    return [line.split() for line in complete if line]


@pytest.mark.slow
def test_sigkill_writer_loses_nothing_committed(tmp_path):
    run_dir = tmp_path / "run"
    RunStore.create(run_dir, {"kind": "crash-test"}, seed=SEED, versions={}, grid=SPEC, n_islands=3).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rnd = random.Random(4)
    printed: dict[int, int] = {}  # program id -> iteration, as reported by writers
    done_before = 0
    kills = mid_run_kills = 0
    t0 = time.monotonic()
    for k in range(24):
        out = tmp_path / f"out{k}.txt"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run_dir), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if k % 4 == 0:
            time.sleep(rnd.uniform(0.0, 0.4))  # anywhere, startup and resume included
        else:
            deadline = time.monotonic() + 20
            while not read_lines(out) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rnd.uniform(0.01, 0.25))  # somewhere among the inserts
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        kills += 1

        lines = read_lines(out)
        if lines:
            assert lines[0] == ["START", str(done_before + 1)]  # resumes at the right iteration
        for kind, pid, it, _ in lines[1:]:
            if kind == "P":
                printed[int(pid)] = int(it)
        mid_run_kills += len(lines) > 3

        raw = sqlite3.connect(run_dir / DB_NAME)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        store = RunStore.open(run_dir, readonly=True)
        rows = store.execute("SELECT id, iteration FROM programs WHERE operator != 'migration'")
        in_db = {r[0]: r[1] for r in rows}
        # Every program whose add_program returned is there, exactly once.
        assert all(in_db.get(pid) == it for pid, it in printed.items())
        done = store.iterations_done()
        assert sorted(in_db.values()) == list(range(1, done + 1))
        assert verify(store) == []
        if len(lines) > 1:
            # The grid rebuilt from the table equals the killed writer's
            # in-memory grid as of its last reported step.
            kind, last_id, _, last_digest = lines[-1]
            assert digest(Islands.from_store(store, upto_id=int(last_id))) == last_digest
        store.close()
        done_before = done

    assert kills >= 20 and mid_run_kills >= 8, (kills, mid_run_kills)
    store = RunStore.open(run_dir, readonly=True)
    assert verify(store, deep=True) == []
    # Resumed iterations made the same records an uninterrupted run would.
    for rec in store.programs()[:: max(1, store.count() // 50)]:
        if rec.operator != "migration":
            ref = make_record(SEED, rec.iteration, 3)
            assert (rec.code, rec.fitness, rec.status, rec.island) == (ref.code, ref.fitness, ref.status, ref.island)
    assert store.migrations(), "no migration round ever committed"
    print(f"{kills} kills, {store.count()} programs, {time.monotonic() - t0:.1f}s")
    store.close()


READER = '''
import json, os, sys, time
from evorank.archive import RunStore, normalized_code_hash, verify
run_dir, stop_path, out_path = sys.argv[1:4]
store = RunStore.open(run_dir, readonly=True)
print("READY", flush=True)
last, polls, errors, counts, verified = 0, 0, [], set(), 0
while True:
    stop = os.path.exists(stop_path)
    try:
        with store.read_snapshot():
            rows = store.programs(since_id=last)
            n = store.count()
            elites = store.elite_table()
        for r in rows:
            if r.id != last + 1:
                errors.append(f"gap before {r.id}")
            last = r.id
            if normalized_code_hash(r.code) != r.code_hash:
                errors.append(f"{r.id}: hash/code mismatch")
            if not all(isinstance(m, dict) for m in r.metrics.values()) or not r.metrics:
                errors.append(f"{r.id}: bad metrics {r.metrics!r}")
            if r.operator != "migration" and len(r.prompt or "") != r.prompt_tokens:
                errors.append(f"{r.id}: torn prompt")
        if n != last:
            errors.append(f"count {n} != last id {last}")
        if any(pid > last for pid in elites.values()):
            errors.append("elite table ahead of programs")
        counts.add(n)
        if polls % 25 == 0:
            problems = verify(store)
            verified += 1
            if problems:
                errors.append(problems[0])
    except Exception as e:
        errors.append(repr(e))
    polls += 1
    if stop:
        break
json.dump({"polls": polls, "last": last, "errors": errors[:20], "distinct_counts": len(counts),
           "verified": verified}, open(out_path, "w"))
'''


def test_readers_never_block_or_see_partial_writes(tmp_path):
    run_dir = tmp_path / "run"
    store = RunStore.create(run_dir, {}, seed=SEED, versions={}, grid=SPEC, n_islands=2)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(stop), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        islands = Islands.from_store(store)
        latencies = []
        for it in range(1, 1001):
            rec = make_record(SEED, it, 2)
            rec.prompt_tokens = len(rec.prompt)  # lets the reader detect a torn row
            t = time.perf_counter()
            islands.add(store, rec)
            latencies.append(time.perf_counter() - t)
            if it % 100 == 0:
                islands.migrate(store, it // 100, 0.3)
        stop.touch()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    report = json.loads(out.read_text())
    assert report["errors"] == []
    assert report["last"] == store.count()
    assert report["polls"] > 20 and report["distinct_counts"] > 10 and report["verified"] > 0
    # The writer was never made to wait on the reader (busy_timeout would show as seconds).
    assert max(latencies) < 2.0, max(latencies)
    store.close()
