"""A run being written by another process, for the tests of readers of live runs (the dashboard, ``open_run``):
``start_writer(run_dir, steps, interval_s)`` starts ``python live_writer.py RUN_DIR STEPS INTERVAL_S``.

It holds the run's writer lock like ``evorank run`` and archives, every INTERVAL_S seconds, a program better than
the one before (so the iteration count and the best fitness keep changing), after two seeds and a hostile
program whose docstring, reply and failure text hold HTML and script (on island 1, alone in its cell).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from evorank.archive import FeatureDim, GridSpec, Islands, ProgramRecord, RunStore
from evorank.evaluators.program.source import seed_path

GRID = GridSpec((FeatureDim("complexity", (200.0, 260.0, 300.0, 400.0), log=True),
                 FeatureDim("latency_ratio", (0.5, 1.0, 2.0, 4.0), log=True)))
HOSTILE_DOC = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
               '<b class="hostile">bold</b> & </pre><style>body { display: none }</style>')


def metrics(f: float) -> dict:
    return {"builtin:demo": {"ndcg@10": f, "recall@100": min(1.0, f + 0.3), "recall@1000": 1.0, "map@1000": f - 0.1}}


def hostile_code(bm25: str) -> str:
    start = bm25.index('"""')
    end = bm25.index('"""', start + 3) + 3
    return bm25[:start] + f'"""{HOSTILE_DOC}"""' + bm25[end:]


def main(run_dir: str, steps: int, interval: float) -> None:
    bm25 = seed_path("bm25").read_text()
    config = {"iterations": steps + 1, "suite": "demo", "seeds": ["bm25"], "llm": "offline", "fitness": "rankevolve",
              "islands": 2, "seed": 0}
    store = RunStore.create(Path(run_dir), config, 0, grid=GRID, n_islands=2, synchronous="NORMAL")
    islands = Islands.from_store(store)
    store.log_event("start", {"iterations": steps + 1})
    seeds = []
    for island in range(2):
        rec = ProgramRecord(code=bm25, operator="seed", island=island, generation=0, iteration=0, stage=2,
                            features={"seed_name": "bm25"}, metrics=metrics(0.5), fitness=0.5, latency_ms=1.0,
                            latency_ratio=1.0)
        islands.add(store, rec)
        seeds.append(rec)
    islands.add(store, ProgramRecord(
        code=hostile_code(bm25), operator="full", island=1, generation=1, iteration=1, parent_ids=(seeds[1].id,),
        metrics=metrics(0.45), fitness=0.45, latency_ms=3.0, latency_ratio=3.0, stage=2, model="gpt-test",
        response=f"Idea: {HOSTILE_DOC}", features={"hostile": True}))
    parent = seeds[0]
    for k in range(1, steps + 1):
        time.sleep(interval)
        code = bm25.replace("K1 = 0.9", f"K1 = {0.9 + 0.01 * k:.2f}")
        rec = ProgramRecord(code=code, operator="offline", island=0, generation=k, iteration=k + 1,
                            parent_ids=(parent.id,), metrics=metrics(0.5 + 0.005 * k), fitness=0.5 + 0.005 * k,
                            latency_ms=1.0, latency_ratio=1.0, stage=2, response=f"k1 up to {0.9 + 0.01 * k:.2f}")
        islands.add(store, rec)
        parent = rec
    store.log_event("stop", {"reason": "completed", "proposals": steps + 1})
    store.close()


def start_writer(run_dir: Path, steps: int, interval_s: float, timeout_s: float = 30.0) -> subprocess.Popen:
    """The writer process, returned once its seeds and hostile program are archived (kill it when done)."""
    proc = subprocess.Popen([sys.executable, __file__, str(run_dir), str(steps), str(interval_s)],
                            env=os.environ.copy())
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with RunStore.open(run_dir, readonly=True) as store:
                if store.max_id() >= 3:
                    return proc
        except Exception:  # not created yet, or its schema not committed yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the writer did not start (exit code {proc.poll()})")
        time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
