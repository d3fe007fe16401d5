"""Evaluation on a Dask cluster (evaluators/cluster.py) and query shards.

The cluster tests start one ``distributed.LocalCluster`` (2 worker processes, 1 thread each, 127.0.0.1,
no dashboard) for the module; they skip, with the reason, where ``dask[distributed]`` is not installed,
except under ``EVORANK_REQUIRE_DASK=1`` (CI), where that is a failure. The shard, index-identity and
missing-dask tests need no dask.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from conftest import write_random_beir
from evorank.evaluators.cluster import ClusterError, IndexMismatch, index_signature, resolve_index
from evorank.evaluators.tasks import merge_shards, shard_bounds
from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.cascade import CascadeConfig
from evorank.evaluators.parallel import Evaluator, Limits
from evorank.evaluators.program.source import seed_path, split_block
from evorank.evaluators.program.ranking import Ranking
from evorank.evaluators.sandbox.runner import SandboxResult
from evorank.evolve.cli.main import main

HAVE_DASK = importlib.util.find_spec("distributed") is not None

BM25 = seed_path("bm25").read_text(encoding="utf-8")
SPLIT = split_block(BM25)
MODIFIED = SPLIT.join(SPLIT.block.replace("K1 = 0.9", "K1 = 1.6").replace("B = 0.4", "B = 0.8"))
SHARD = 12  # queries per task: 2-4 shards for the collections below
LIMITS = Limits(timeout_s=30, memory_mb=400)
SECRET = "sk-cluster-test-secret"


# -- no dask needed ----------------------------------------------------------------------------------

def test_shard_bounds_are_balanced_and_cover_every_query():
    assert shard_bounds(10, None) == shard_bounds(10, 0) == shard_bounds(10, 10) == [(0, 10)]
    for n in range(1, 60):
        for size in (1, 3, 7, 12):
            b = shard_bounds(n, size)
            assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:]))
            lens = [e - s for s, e in b]
            assert max(lens) <= size and max(lens) - min(lens) <= 1 and len(b) == -(-n // size)


def test_merge_shards_in_query_order_and_first_failure_wins():
    def ok(qids, prepare_ms):
        r = Ranking(qids, [np.array([i]) for i in range(len(qids))], [np.array([1.0])] * len(qids),
                    np.ones(len(qids)), prepare_ms)
        return SandboxResult(r, output="x", wall_ms=10.0, layers=("process", "pidns"), queries_done=len(qids))

    bounds = [(0, 2), (2, 3)]
    merged = merge_shards([ok(["a", "b"], 1.0), ok(["c"], 3.0)], bounds, 100)
    assert merged.ok and merged.ranking.query_ids == ["a", "b", "c"] and merged.ranking.prepare_ms == 2.0
    assert len(merged.ranking.latency_ms) == 3 and merged.wall_ms == 20.0 and merged.output == "xx"
    bad = SandboxResult(None, "timeout", "score() after 0 of 1 queries", queries_done=0, layers=("process",))
    merged = merge_shards([ok(["a", "b"], 1.0), bad], bounds, 100)
    assert merged.reason == "timeout" and merged.message.startswith("[queries 3-3 of 3] score()")
    assert merged.queries_done == 2 and merged.layers == ("process",)


def test_index_signature_is_checked_on_resolution(tmp_path, cache_dir):
    topics = load_topics(str(write_random_beir(tmp_path / "c", 30, 8, seed=3, judged_per_query=5)))
    sig = index_signature(topics.index)
    # by address, into this process's cache (what a remote worker does): same signature
    assert index_signature(resolve_index(topics.name, sig, None)) == sig
    with pytest.raises(IndexMismatch, match="not the controller's"):
        resolve_index(topics.name, "0" * 24, str(topics.index.path))


def test_cluster_without_dask_is_a_one_line_error(tiny_collection, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["eval", "bm25", "--datasets", str(tiny_collection), "--cluster", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("evorank: error:") and "pip install 'evorank[dask]'" in err
    with pytest.raises(ClusterError, match=r"pip install 'evorank\[dask\]'"):
        Evaluator([str(tiny_collection)], cluster="tcp://127.0.0.1:1")


# -- on a LocalCluster --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not HAVE_DASK:
        msg = "dask[distributed] is not installed (pip install 'evorank[dask]')"
        if os.environ.get("EVORANK_REQUIRE_DASK") == "1":
            pytest.fail(msg + " and EVORANK_REQUIRE_DASK=1 forbids skipping")
        pytest.skip(msg)
    from evorank.evaluators.cluster import local_cluster

    root = tmp_path_factory.mktemp("cluster")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVORANK_CACHE", str(root / "cache"))
        mp.setenv("OPENAI_API_KEY", SECRET)  # must not reach the workers
        paths = [write_random_beir(root / "big", 120, 45, seed=1, judged_per_query=5),
                 write_random_beir(root / "small", 60, 26, seed=2, judged_per_query=5)]
        topics = [load_topics(str(p)) for p in paths]
        with Evaluator([], n_workers=1, limits=LIMITS, topics=topics, cascade=None) as ev:
            local = ev.evaluate([BM25, MODIFIED], [BM25, BM25], [None, None], ["bm25", "modified"])
        assert all(r.ok for r in local)
        # workers get their own index cache: a worker that cannot use the controller's folder builds there
        cluster = local_cluster(2, env={"EVORANK_CACHE": str(root / "worker-cache")})
        from distributed import Client

        client = Client(cluster, set_as_default=False)
        try:
            yield {"root": root, "paths": paths, "topics": topics, "local": local, "client": client,
                   "address": cluster.scheduler_address}
        finally:
            client.close()
            cluster.close()


def assert_same_metrics(got, want):
    assert got.ok, (got.failure_reason, got.failure_detail)
    for g, w in zip(got.suite.collections, want.suite.collections, strict=True):
        assert g.name == w.name and g.metrics == w.metrics
        for m, v in w.per_query.items():
            np.testing.assert_array_equal(g.per_query[m], v)
    assert got.fitness == want.fitness and got.stage1_fitness == want.stage1_fitness


def expected_tasks(ev, names, stages=(2,)):
    return sorted((n, st, t.name, s) for n in names for st in stages for j, t in enumerate(ev.topics)
                  for s in range(len(ev._bounds[(st, j)])))


def test_cluster_metrics_identical_to_local_with_shards_and_cascade(env):
    client = env["client"]
    with Evaluator([], limits=LIMITS, topics=env["topics"], cluster=client, shard_queries=SHARD,
                   cascade=CascadeConfig(threshold=0.01)) as ev:
        assert ev.n_workers == 2
        assert all(len(ev._bounds[(st, j)]) >= 2 for st in (1, 2) for j in range(2))
        # both candidates pass stage 1 (a tiny parent value), then are fully evaluated
        got = ev.evaluate([BM25, MODIFIED], [BM25, BM25], [1e-9, 1e-9], ["bm25", "modified"])
        assert [r.stage for r in got] == [2, 2]
        assert ev.last_tasks and len(ev.last_tasks) == len(set(ev.last_tasks))  # each shard recorded once
        assert sorted(ev.last_tasks) == expected_tasks(ev, ["bm25", "modified"], (1, 2))
        workers = ev._cluster.workers
    for g, w in zip(got, env["local"]):
        assert_same_metrics(g, w)
    assert got[0].fitness != got[1].fitness  # the modified program is a different program
    # the workers ran the same sandbox, and never saw the controller's secret
    assert len(workers) == 2
    for rep in workers.values():
        assert rep["secret_env"] == [] and rep["errors"] == {} and "chroot" in rep["layers"]
    pids = client.run(lambda: (os.environ.get("OPENAI_API_KEY", ""), os.getpid()))
    assert all(key == "" for key, _ in pids.values())
    assert len(client.run(os.getpid)) == 2  # the client we passed in stays usable after close()


def test_workers_resolve_collections_by_address_into_their_own_cache(env):
    from evorank.evaluators.cluster import ClusterBackend
    from evorank.evaluators.evaluate import evaluate_on
    from evorank.evaluators.program.source import compile_program

    topics = load_topics(str(write_random_beir(env["root"] / "third", 70, 30, seed=4, judged_per_query=5)))  # new to the workers
    reference, _ = evaluate_on(compile_program(BM25), topics)
    backend = ClusterBackend(env["client"])
    backend.send_paths = False  # as on remote machines: the controller's index folders are not there
    with Evaluator([], limits=LIMITS, topics=[topics], cluster=backend, shard_queries=SHARD, cascade=None) as ev:
        got = ev.evaluate_trusted(BM25, name="bm25")
    assert got.ok and got.suite.collections[0].metrics == reference.metrics
    built = [p for p in (env["root"] / "worker-cache" / "indexes").iterdir() if "_third-" in p.name]
    assert len(built) == 1 and (built[0] / "manifest.json").is_file()
    # a collection a worker cannot load stops the evaluator before any candidate runs, naming the worker
    ghost = dataclasses.replace(topics, name=str(env["root"] / "no-such-collection"))
    backend = ClusterBackend(env["client"])
    backend.send_paths = False
    with pytest.raises(ClusterError, match="no-such-collection.*does not exist"):
        Evaluator([], topics=[ghost], cluster=backend)


def test_eval_and_run_commands_on_the_cluster(env, tmp_path, capsys):
    coll = str(env["paths"][0])
    assert main(["eval", "bm25", "--datasets", coll, "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["eval", "bm25", "--datasets", coll, "--json", "--cluster", env["address"],
                 "--shard-queries", "10"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["collections"][0]["metrics"] == local["collections"][0]["metrics"]
    assert remote["fitness"] == local["fitness"]
    out = tmp_path / "run"
    assert main(["run", "--datasets", coll, "--llm", "offline", "--seeds", "bm25", "--iterations", "2",
                 "--islands", "1", "--workers", "2", "--cluster", env["address"], "--shard-queries", "20",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "cluster: " + env["address"] in text and "2 worker threads" in text
    assert 'cluster = "' + env["address"] + '"' in (out / "config.toml").read_text()
    assert "run completed" in text and "2/2 proposals" in text


def test_killing_a_worker_mid_suite_loses_and_duplicates_nothing(env):
    client = env["client"]
    slow = SPLIT.join(SPLIT.block.replace(  # about 20-40 ms per query: a shard takes several tenths of a second
        "    rows = state[query.term_ids]",
        "    x = 0\n    for _ in range(400000):\n        x += 1\n    rows = state[query.term_ids]"))
    pids = client.run(os.getpid)  # worker address -> pid
    killed: dict = {}

    def killer():
        end = time.monotonic() + 60
        while time.monotonic() < end and not killed:
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy:
                time.sleep(0.1)  # the task has started (a shard takes several tenths of a second)
                keys = list(client.processing()[busy[0]])
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed["worker"] = busy[0]
                killed["keys"] = keys
                return
            time.sleep(0.02)

    with Evaluator([], limits=LIMITS, topics=env["topics"], cluster=client, shard_queries=SHARD, cascade=None) as ev:
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        got = ev.evaluate([slow], [BM25], [None], ["slow"])[0]
        thread.join(5)
        assert killed, "no worker was busy: nothing was killed"
        assert sorted(ev.last_tasks) == expected_tasks(ev, ["slow"])  # every shard exactly once
    assert_same_metrics(got, env["local"][0])  # the delay changes nothing in the rankings
    # the scheduler took the killed worker's tasks back and ran them elsewhere (Dask's own rescheduling)
    assert killed["keys"] and all(any(s[0] == "scheduler" and s[2:4] == ("processing", "released")
                                      and "worker-cleanup" in str(s) for s in client.story(k)) for k in killed["keys"])
    # the nanny replaced the killed worker
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(client.run(os.getpid)) < 2:
        time.sleep(0.2)
    assert pids[killed["worker"]] not in client.run(os.getpid).values()


def test_the_worker_code_digest_covers_the_jail_harness_wire_checks_and_ranking():
    from evorank.evaluators.cluster import worker_code_files

    names = {f"{p.parent.name}/{p.name}" for p in worker_code_files()}
    for needed in ("sandbox/jail.py", "sandbox/harness.py", "sandbox/wire.py", "sandbox/runner.py",
                   "program/checks.py", "program/ranking.py", "index/index.py", "evaluators/tasks.py"):
        assert needed in names, needed
