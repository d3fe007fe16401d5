"""Benchmark: one candidate on a suite split into query shards, on a 2-worker Dask LocalCluster vs the local
loky path (run by hand; not a test).

    cp -r /work/shared/ir_datasets /tmp/irds_c && chmod -R u+w /tmp/irds_c
    export IR_DATASETS_HOME=/tmp/irds_c EVORANK_DATA=/work/shared/datasets
    pip install 'evorank[dask]'
    python bench/cluster_speed.py [--suite dev] [--workers 2] [--shard-queries 50] [--reps 7]

Prints, for BM25 and for an empty-but-valid program (all scores -inf: the pure per-task cost), the
median wall time of a full evaluation (warm workers) on each path, sharded and not, the number of
tasks, the cost per task (wall x workers / tasks), the time a task spends in ``run_sandboxed`` on its
worker, and the cluster's extra cost per task over the local path; plus the cluster's start-up and
warm-up times, the round trip of a no-op task through the Dask executor, and the pickled task size.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import statistics
import sys
import time

from evorank.evaluators.cluster import local_cluster  # noqa: E402
from evorank.evaluators.evaluate import load_topics  # noqa: E402
from evorank.evaluators.parallel import Evaluator, Limits, _Candidate  # noqa: E402
from evorank.evaluators.program.source import seed_path  # noqa: E402
from evorank.evaluators.data.suites import resolve_collections  # noqa: E402

BM25 = seed_path("bm25").read_text(encoding="utf-8")
EMPTY = "import numpy as np\n# EVOLVE-BLOCK-START\ndef score(query, index, state):\n    return np.full(index.n_docs, -np.inf)\n# EVOLVE-BLOCK-END\n"


def timed(ev: Evaluator, source: str, reps: int) -> tuple[float, int, float]:
    """(median wall seconds, tasks per evaluation, median ms per task inside run_sandboxed) of full evaluations."""
    ev.evaluate_trusted(source)  # warm: indexes mapped, prepare() paths imported
    walls, inside = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = ev.evaluate_trusted(source)
        walls.append(time.perf_counter() - t0)
        assert res.ok, (res.failure_reason, res.failure_detail)
        inside.append(res.eval_seconds / len(ev.last_tasks) * 1e3)
    return statistics.median(walls), len(ev.last_tasks), statistics.median(inside)


def noop(x):
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="dev")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-queries", type=int, default=50)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.WARNING)
    W, S = args.workers, args.shard_queries

    addresses = resolve_collections(args.suite, None)
    topics = [load_topics(a) for a in addresses]
    n_q = sum(len(t.queries) for t in topics)
    print(f"suite {args.suite}: {len(topics)} collections, {n_q} queries; {W} workers; shards of <= {S} queries")
    limits = Limits(timeout_s=120)
    rows = []

    with Evaluator([], n_workers=W, limits=limits, topics=topics, cascade=None) as ev:
        for name, src in (("BM25", BM25), ("empty", EMPTY)):
            rows.append(("local", "whole", name, *timed(ev, src, args.reps)))
    with Evaluator([], n_workers=W, limits=limits, topics=topics, cascade=None, shard_queries=S) as ev:
        for name, src in (("BM25", BM25), ("empty", EMPTY)):
            rows.append(("local", f"<={S}", name, *timed(ev, src, args.reps)))

    t0 = time.perf_counter()
    cluster = local_cluster(W)
    t_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        ev = Evaluator([], limits=limits, topics=topics, cascade=None, cluster=cluster.scheduler_address,
                       shard_queries=S)
        t_warm = time.perf_counter() - t0
        with ev:
            ex = ev._pool()
            ex.submit(noop, 0).result()
            trips = []
            for _ in range(30):
                t0 = time.perf_counter()
                ex.submit(noop, 0).result()
                trips.append(time.perf_counter() - t0)
            task_bytes = statistics.mean(len(pickle.dumps(ev._task(_Candidate(0, "x", BM25, None), 2, j, s)))
                                         for j in range(len(topics)) for s in range(len(ev._bounds[(2, j)])))
            for name, src in (("BM25", BM25), ("empty", EMPTY)):
                rows.append(("dask", f"<={S}", name, *timed(ev, src, args.reps)))
        with Evaluator([], limits=limits, topics=topics, cascade=None, cluster=cluster.scheduler_address) as ev:
            for name, src in (("BM25", BM25), ("empty", EMPTY)):
                rows.append(("dask", "whole", name, *timed(ev, src, args.reps)))
    finally:
        cluster.close()

    print(f"\nLocalCluster start {t_start:.2f} s; connect + warm-up (every worker maps {len(topics)} indexes, checks "
          f"the sandbox) {t_warm:.2f} s; no-op task round trip through the Dask executor "
          f"{statistics.median(trips) * 1e3:.1f} ms (median); mean pickled task {task_bytes / 1024:.1f} KiB\n")
    print(f"{'path':<6} {'shards':<7} {'program':<8} {'wall (median)':>14} {'tasks':>6} {'wall x workers / task':>22} "
          f"{'in run_sandboxed':>17}")
    per_task = {}
    for path, shards, name, wall, tasks, inside in rows:
        per_task[(path, shards, name)] = wall * W / tasks * 1e3
        print(f"{path:<6} {shards:<7} {name:<8} {wall:>12.3f} s {tasks:>6} {wall * W / tasks * 1e3:>19.1f} ms "
              f"{inside:>14.1f} ms")
    print()
    for shards in ("whole", f"<={S}"):
        for name in ("BM25", "empty"):
            extra = per_task[("dask", shards, name)] - per_task[("local", shards, name)]
            print(f"dask overhead per task ({name}, {shards}): {extra:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
