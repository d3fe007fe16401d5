"""One evaluation task and the worker processes that run it, shared by the local pool and the Dask path.

An ``EvalTask`` is one sandboxed run: a program on (a shard of) one collection's analysed queries.
Local loky workers run it with ``run_local_task`` (open the collection's memory-mapped index once per
worker, then ``run_sandboxed``); Dask workers with ``cluster.run_cluster_task``. Both kinds of worker
start with the environment from ``worker_env``: every variable outside ``workers.WORKER_ENV_KEEP`` blanked, so
no API key reaches a process that forks candidates, and numeric libraries held to one thread.

Large collections can be split into query shards (``shard_bounds``), one task each; ``merge_shards``
puts the results back together in query order before the trusted side measures them. This module
imports no metric code, so a worker unpickling a task never loads it.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from evorank.evaluators.index.index import prepared_folder
from evorank.evaluators.sandbox.jail import LAYERS, prepare_process, remove_stale_jails
from evorank.evaluators.program.ranking import ProgramQuery, Ranking
from evorank.evaluators.sandbox.prepared import max_cache_bytes, remove_stale_spools
from evorank.evaluators.sandbox.runner import Limits, SandboxResult, run_sandboxed
from .workers import THREAD_ENV, WORKER_ENV_KEEP


@dataclass(frozen=True)
class EvalTask:
    """One sandboxed run: a program on (a shard of) one collection's analysed queries. Local workers open
    ``index_path``; cluster workers resolve ``address`` + ``signature`` (``cluster.resolve_index``)."""

    source: str
    name: str
    index_path: str
    queries: list[ProgramQuery]  # without ids: a worker never holds them (the ranking names queries by position)
    k: int
    limits: Limits
    restrict_builtins: bool
    address: str = ""
    signature: str = ""


# -- local worker processes --------------------------------------------------------------------------

_worker_indexes: dict[str, object] = {}


def worker_env(keep: frozenset[str] = frozenset()) -> dict[str, str]:
    """The environment a worker starts with: variables outside ``WORKER_ENV_KEEP | keep`` blanked (a pool
    can only set, not remove, variables; ``init_worker`` removes the blanks), one thread per library."""
    env = {k: "" for k in os.environ if k not in WORKER_ENV_KEEP | keep}
    env.update(THREAD_ENV)
    return env


def worker_limits(limits: Limits, reuse_prepare: bool) -> Limits:
    """``limits`` as tasks carry them to workers: the prepare-state cache's cap (``EVORANK_PREPARED_MB``) read here,
    in the caller's environment, since workers start with a scrubbed one; reuse on only when the cap is not 0."""
    cache_mb = max_cache_bytes() >> 20 if limits.prepared_mb is None else max(0, limits.prepared_mb)
    return replace(limits, reuse_prepare=(reuse_prepare or limits.reuse_prepare) and cache_mb > 0,
                   prepared_mb=cache_mb)


def remove_worker_leftovers(index_paths) -> None:
    """After the workers stopped: the jail folders and prepare-state spools of processes that no longer exist."""
    remove_stale_jails()
    for path in index_paths:
        remove_stale_spools(prepared_folder(Path(path)))


def init_worker() -> None:
    """Initializer of a local worker: ignore Ctrl-C, drop the blanked variables and prepare the sandbox (imports,
    seccomp)."""
    ignore_interrupts()
    for key in [k for k, v in os.environ.items() if v == "" and k not in WORKER_ENV_KEEP]:
        del os.environ[key]
    prepare_process()


def ignore_interrupts() -> None:
    """A worker ignores SIGINT. Ctrl-C in a terminal reaches every process of the foreground group, and the parent
    decides what it means (a run finishes its step, then stops its workers); a worker that took it as its own
    KeyboardInterrupt would fail the candidate it runs, break the pool, or print a traceback. A worker started while
    its parent held SIGINT back (``submit_held``) may have one pending: ignoring the signal discards it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def submit_held(pool, fn, task):
    """``pool.submit(fn, task)`` with SIGINT held back from the calling thread meanwhile: the pool may start worker
    processes then, and a process inherits the mask, so a Ctrl-C cannot reach a worker before ``ignore_interrupts``.
    The parent gets a signal that came meanwhile when the call returns."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(fn, task)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_local_task(task: EvalTask) -> SandboxResult:
    """Runs in a worker: open (or reuse) the memory-mapped index, then one sandboxed run."""
    from evorank.evaluators.index.index import load_index
    from evorank.evaluators.index.views import preload as preload_views

    index = _worker_indexes.get(task.index_path)
    if index is None:
        index = load_index(Path(task.index_path), verify=False)
        index.terms  # read the vocabulary once per worker, not once per jail
        _worker_indexes[task.index_path] = index
    preload_views(index, task.source)  # the vocabulary views it names, mapped before the jail closes (once)
    return run_sandboxed(task.source, index, task.queries, task.k, task.limits, name=task.name,
                         restrict_builtins=task.restrict_builtins)


# -- query shards ------------------------------------------------------------------------------------

def shard_bounds(n_queries: int, shard_queries: int | None) -> list[tuple[int, int]]:
    """Balanced consecutive [start, end) ranges of at most ``shard_queries`` queries (one range when off)."""
    if not shard_queries or n_queries <= shard_queries:
        return [(0, n_queries)]
    m = -(-n_queries // shard_queries)
    edges = [n_queries * i // m for i in range(m + 1)]
    return list(zip(edges[:-1], edges[1:]))


def merge_shards(parts: list[SandboxResult], bounds: list[tuple[int, int]], output_bytes: int) -> SandboxResult:
    """One collection's result from its shards' results, in query order.

    The first failing shard (in query order) decides the outcome; its message is prefixed with the
    queries it covered. ``prepare_ms`` is the mean over shards (``prepare()`` ran once per shard, so the
    mean is comparable with an unsharded run); wall time is summed; the isolation layers reported are
    those every shard had.
    """
    if len(parts) == 1:
        return parts[0]
    n = bounds[-1][1]
    output = "".join(p.output for p in parts)[:output_bytes]
    wall_ms = float(sum(p.wall_ms for p in parts))
    common = set(LAYERS)
    for p in parts:
        if p.layers:
            common &= set(p.layers)
    layers = tuple(x for x in LAYERS if x in common) if any(p.layers for p in parts) else ()
    for p, (a, b) in zip(parts, bounds):
        if not p.ok:
            return SandboxResult(None, p.reason, f"[queries {a + 1}-{b} of {n}] {p.message or p.reason}", output,
                                 wall_ms, layers, a + p.queries_done)
    rankings = [p.ranking for p in parts]
    ranking = Ranking([q for r in rankings for q in r.query_ids], [d for r in rankings for d in r.doc_idx],
                      [s for r in rankings for s in r.scores],
                      np.concatenate([np.asarray(r.latency_ms, dtype=np.float64) for r in rankings]),
                      float(np.mean([r.prepare_ms for r in rankings])))
    return SandboxResult(ranking, None, None, output, wall_ms, layers, sum(p.queries_done for p in parts),
                         prepare_reused=sum(p.prepare_reused for p in parts))
