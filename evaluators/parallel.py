"""Evaluate many candidate programs on many collections: static checks, sandboxed parallel runs, cascade.

``Evaluator`` loads every collection's ``Topics`` once in the trusted process and fans
(candidate x collection) tasks out over persistent joblib/loky worker processes. A worker keeps
the memory-mapped ``Index`` objects it has opened (cached by index folder) and the allowed modules
imported, and runs each task through ``evaluators.sandbox.runner.run_sandboxed`` (a fresh isolated child
per task). Workers receive program text, the index folder, analysed queries and limits, and return
rankings only; judgements never leave this process, where ``measure()`` turns rankings into metrics.

Cascade (:mod:`evorank.evaluators.cascade`): with a parent's stage-1 fitness known, a candidate is first scored on a fixed, seeded sample
of each collection's queries; only if its stage-1 fitness reaches ``threshold`` x the parent's does
it get the full evaluation, which scores every query (so full metrics never depend on the cascade).
Stage-1 fitness ignores latency; for fully evaluated candidates it is derived from the per-query
metrics of the same sample, so children can always be compared with it.

Typical use (the evolution loop)::

    with Evaluator(resolve_collections("dev", None), n_workers=2) as ev:
        results = ev.evaluate(sources, seed_sources, parent_stage1)

Workers are started with an environment in which every variable not in ``workers.WORKER_ENV_KEEP`` is
blanked (``OPENAI_API_KEY`` and the like never reach a process that forks candidates).

``cluster=`` (an address such as ``tcp://HOST:8786``, or a ``distributed.Client``) runs the same tasks
on a Dask cluster instead of the local pool, and ``shard_queries=N`` splits collections with more than
N queries into query shards, one task each (both in ``evaluators/cluster.py``, see ``docs/cluster.md``).
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
from dataclasses import dataclass, field, replace

import numpy as np

from .cascade import TOP, CascadeConfig, cascade_sample, mean_query_ms, ranks_as, signature
from .evaluate import (CollectionResult, SuiteResult, Topics, failed_result, latency_ratio, load_topics, measure,
                       subset_ranking, subset_topics)
from .errors import ProgramError
from .metrics import fitness, fitness_spec
from evorank.evaluators.program.source import seed_path
from evorank.evaluators.program.ranking import DEFAULT_K, program_queries
from evorank.evaluators.program.output import failure_text
from evorank.evaluators.sandbox.runner import Limits, SandboxResult, warn_missing_layers
from .splits import relevant_counts, validation_split
from evorank.evaluators.program.checks import static_check
from .tasks import (EvalTask, init_worker, merge_shards, remove_worker_leftovers, run_local_task, shard_bounds,
                    submit_held, worker_env, worker_limits)

__all__ = ["Limits", "CandidateResult", "Evaluator", "evaluate_program_sandboxed", "evaluate_programs_sandboxed"]

log = logging.getLogger(__name__)

@dataclass
class CandidateResult:
    """One candidate over all collections.

    stage: 0 = rejected by the static checks, 1 = stopped after stage 1 (by the cascade or a failure),
    2 = fully evaluated (successfully or not).
    fitness: the full-evaluation fitness (0.0 for any failure, at any stage); None when the cascade
    stopped a working candidate (its stage-1 sample scores are in ``suite`` and ``stage1_fitness``).
    suite: per-collection results of the last stage run (stage-1 sample results when stage == 1;
    failed results naming the static violation when stage == 0).
    failure_reason / failure_detail: the first failure (machine-readable, and text for the LLM).
    latency_ms: geometric mean over collections of the median per-query latency (full evaluation only).
    """

    name: str
    stage: int
    suite: SuiteResult | None
    fitness: float | None
    stage1_fitness: float | None = None
    failure_reason: str | None = None
    failure_detail: str | None = None
    latency_ms: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # collection -> captured stdout/stderr (non-empty)
    eval_seconds: float = 0.0  # summed wall time of this candidate's sandboxed runs
    validation: SuiteResult | None = None  # the same run measured on the validation queries (full evaluation only)
    validation_fitness: float | None = None
    prepare_runs: int = 0  # sandboxed runs (tasks) of this candidate that finished
    prepare_reused: int = 0  # of those, runs that reused a stored prepare() state (prepared.py)
    sample_ranking: dict[str, str] = field(default_factory=dict)  # collection -> its signature on the stage-1 sample
    ranks_as_start: int | None = None  # which of its ``starts`` it ranks as on the sample (a no-op; sample.py)

    @property
    def ok(self) -> bool:
        return self.failure_reason is None

    @property
    def stopped_by_cascade(self) -> bool:
        return self.stage == 1 and self.failure_reason is None and self.ranks_as_start is None


# -- the evaluator -----------------------------------------------------------------------------------

@dataclass
class _Candidate:
    i: int
    name: str
    source: str
    parent: float | None
    stage: int = 0
    pending: int = 0
    stage1: dict[int, CollectionResult] = field(default_factory=dict)
    full: dict[int, CollectionResult] = field(default_factory=dict)
    validation: dict[int, CollectionResult] = field(default_factory=dict)
    shards: dict[tuple[int, int], list[SandboxResult | None]] = field(default_factory=dict)  # (stage, j) -> parts
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    runs: int = 0
    reused: int = 0
    starts: list[dict[str, str]] = field(default_factory=list)  # sample signatures it must not rank as
    sample_docs: dict[int, list[np.ndarray]] = field(default_factory=dict)  # collection -> top documents per query


class Evaluator:
    """Sandboxed, parallel, cascaded evaluation of candidate programs on a fixed set of collections."""

    def __init__(self, addresses: list[str], n_workers: int | None = None, limits: Limits = Limits(),
                 fitness: str = "rankevolve", cascade: CascadeConfig | None = CascadeConfig(), seed: int = 0,
                 k: int = DEFAULT_K, *, topics: list[Topics] | None = None, reference: str | None = "bm25",
                 cluster=None, shard_queries: int | None = None, cluster_retries: int = 1, validation: float = 0.0,
                 reuse_prepare: bool = True, keep_rankings: bool = False, pool=None):
        """``topics`` may pass already loaded collections instead of loading ``addresses``; ``reference`` is the
        seed (name or source) whose latency the latency-aware fitness compares against (measured once, lazily).

        ``cluster``: a Dask scheduler address, ``distributed.Client`` or ``cluster.ClusterBackend`` to run the tasks
        on (connects and warms the workers up now; raises ``ClusterError``); ``n_workers`` then does not apply.
        ``cluster_retries``: how often Dask re-runs a task that raised on a worker. ``shard_queries``: at most this
        many queries per task (None or 0: one task per collection). ``validation``: the fraction of each collection's
        judged queries held out of selection (``evaluators.splits``): candidates are scored on all queries in one run,
        but their fitness (and the cascade's sample) comes from the train queries only, and the validation queries
        give ``CandidateResult.validation``. ``reuse_prepare``: candidates whose ``prepare`` is the same code share its
        state per collection (``prepared.py``; ``prepare_hit_rate`` counts it). ``keep_rankings``: fully evaluated
        results keep the ranking the worker rebuilt (``CollectionResult.ranking``), e.g. for TREC run files.
        ``pool``: ``n_workers`` local workers already started (``workers.forked_pool``), which the Evaluator owns."""
        self.topics: list[Topics] = list(topics) if topics is not None else [load_topics(a) for a in addresses]
        self.n_workers = max(1, n_workers or os.cpu_count() or 1)
        if shard_queries is not None and shard_queries < 0:
            raise ValueError("shard_queries must be >= 0")
        self.shard_queries = shard_queries or None
        self.limits = worker_limits(limits, reuse_prepare)
        self.prepare_runs = 0  # finished sandboxed runs, and how many of them reused a prepare() state
        self.prepare_reused = 0
        self.spec = fitness_spec(fitness)
        self.cascade = cascade
        self.seed = seed
        self.k = k
        self.keep_rankings = keep_rankings
        self._reference_spec = reference
        self._reference, self._reference_source = None, None  # its result and code, once measured
        self._reference_running = False
        self._executor = pool
        self._closing = False
        self.layers: tuple[str, ...] = ()
        # Test-only switch: skip static checks and the runtime builtins restriction, to prove the OS layers
        # hold by themselves. Never set this for LLM-written programs.
        self._unsafe_skip_language_checks = False
        for t in self.topics:
            if getattr(t.index, "path", None) is None:
                raise ValueError(f"collection {t.name!r} has no on-disk index; sandboxed workers map indexes from disk")
        self._sizes = {t.name: int(t.index.n_docs) for t in self.topics}
        self._train_idx: list[np.ndarray] = []
        self._val_idx: list[np.ndarray] = []
        self._train_topics: list[Topics] = []
        self._val_topics: list[Topics | None] = []
        for t in self.topics:
            train, val = validation_split(relevant_counts(t.judged), validation, t.name, seed)
            self._train_idx.append(train)
            self._val_idx.append(val)
            self._train_topics.append(t if not len(val) else subset_topics(t, train))
            self._val_topics.append(subset_topics(t, val) if len(val) else None)
        self._samples: list[np.ndarray] = []  # stage-1 sample: positions among the train queries
        self._stage1_topics: list[Topics] = []
        sampling = cascade or CascadeConfig()  # stage-1 fitness is defined (and reported) even without a cascade
        for t in self._train_topics:
            idx = cascade_sample(len(t.queries), t.name, seed, sampling, mean_query_ms(t))
            self._samples.append(idx)
            self._stage1_topics.append(t if len(idx) == len(t.queries) else subset_topics(t, idx))
        # Largest collections first, so the slowest task does not start last.
        self._order = sorted(range(len(self.topics)),
                             key=lambda j: -(self.topics[j].index.n_docs * max(1, len(self.topics[j].queries))))
        stages = [(stage, j, t) for stage, tl in ((1, self._stage1_topics), (2, self.topics)) for j, t in enumerate(tl)]
        self._bounds = {(stage, j): shard_bounds(len(t.queries), self.shard_queries) for stage, j, t in stages}
        # workers get the queries without ids (programs never see them); _record puts the ids back in the rankings
        self._program_queries = {(stage, j): program_queries(t.queries) for stage, j, t in stages}
        #: (candidate name, stage, collection, shard) of every task result recorded by the last evaluate call
        self.last_tasks: list[tuple[str, int, str, int]] = []
        self.task_retries = 0  # tasks re-submitted after their worker failed (since construction)
        self._cluster = None
        self._signatures: list[str] = []
        if cluster is not None:
            from .cluster import ClusterBackend, index_signature

            self._signatures = [index_signature(t.index) for t in self.topics]
            self._cluster = cluster if isinstance(cluster, ClusterBackend) else ClusterBackend(cluster, cluster_retries)
            try:
                self._cluster.warm_up(self._index_specs())
            except BaseException:
                self._cluster.close()
                raise
            self.n_workers = max(1, self._cluster.slots())

    # -- public API ----------------------------------------------------------------------------------
    def evaluate(self, sources: list[str], seed_sources: list[str | None] | None = None,
                 parent_stage1: list[float | None] | None = None, names: list[str] | None = None,
                 starts: list[list[dict[str, str]]] | None = None) -> list[CandidateResult]:
        """Evaluate a batch; each candidate's head/tail must match its seed (when given). Never raises for a
        candidate's behaviour: every outcome is a CandidateResult, in input order. ``starts``: per candidate, the
        sample signatures (``CandidateResult.sample_ranking``) of the programs it started from; one that ranks as
        any of them on the stage-1 sample is not evaluated further (``ranks_as_start``)."""
        n = len(sources)
        seed_sources = list(seed_sources) if seed_sources is not None else [None] * n
        parent_stage1 = list(parent_stage1) if parent_stage1 is not None else [None] * n
        names = list(names) if names is not None else [f"candidate-{i}" for i in range(n)]
        if not (len(seed_sources) == len(parent_stage1) == len(names) == n):
            raise ValueError("sources, seed_sources, parent_stage1 and names must have the same length")
        results: list[CandidateResult | None] = [None] * n
        if (self.spec.latency_exponent > 0 or self.spec.robust) and n:
            self.reference_results()  # measured first, not in the middle of the batch
        runnable = []
        for i, src in enumerate(sources):
            if not self._unsafe_skip_language_checks:
                try:
                    static_check(src, seed_sources[i])
                except ProgramError as e:
                    results[i] = self._rejected(names[i], e.reason, str(e))
                    continue
            runnable.append(_Candidate(i, names[i], src, parent_stage1[i], starts=list(starts[i]) if starts else []))
        for cand, res in zip(runnable, self._run(runnable)):
            results[cand.i] = res
        return results  # type: ignore[return-value]

    def evaluate_trusted(self, source: str, name: str = "trusted") -> CandidateResult:
        """A trusted program (a seed, a baseline): no static checks, no cascade; the reference measured first."""
        if (self.spec.latency_exponent > 0 or self.spec.robust) and not self._reference_running:
            if self.reference_results() and source == self._reference_source:
                return replace(self._reference, name=name)
        cand = _Candidate(0, name, source, None)
        return self._run([cand], use_cascade=False)[0]

    def reference_results(self) -> list[CollectionResult]:
        """Full (train) results of the reference seed, for latency ratios and robust fitness; measured once."""
        if self._reference is None and not self._reference_running:
            spec = self._reference_spec or "bm25"
            src = spec if "\n" in spec else seed_path(spec).read_text(encoding="utf-8")
            self._reference_source, self._reference_running = src, True  # while it runs: nothing to compare with
            try:
                self._reference = self.evaluate_trusted(src, name="reference")
            finally:
                self._reference_running = False
        ref = self._reference
        return ref.suite.collections if ref is not None and ref.suite is not None else []

    def collection_sizes(self) -> dict[str, int]:
        """Documents per collection (the fitness's collection-size rule needs them)."""
        return dict(self._sizes)

    def array_sizes(self) -> dict[str, tuple[int, int, int]]:
        """Collection name -> (documents, terms, postings): the lengths of a program's per-document, per-term and
        per-posting arrays there (repair requests quote them for shape errors)."""
        return {t.name: t.array_sizes for t in self.topics}

    def _reference_metrics(self, which: str) -> dict[str, dict[str, float]] | None:
        """The reference's per-collection metrics on the train queries, the validation queries, or the stage-1
        sample; None while the reference itself is being measured."""
        ref = self._reference
        if ref is None or ref.suite is None or not ref.suite.ok:
            return None
        if which == "validation":
            return {c.name: c.metrics for c in ref.validation.collections} if ref.validation else None
        full = {c.name: c for c in ref.suite.collections}
        if which == "stage1":
            return {t.name: {m: float(np.mean(v[idx])) for m, v in full[t.name].per_query.items()}
                    for t, idx in zip(self.topics, self._samples)}
        return {name: c.metrics for name, c in full.items()}

    def _fitness(self, per: dict[str, dict[str, float]], which: str, ratio: float | None = None) -> float:
        if self.spec.robust and self._reference_running:
            return 1.0  # the reference against itself
        reference = self._reference_metrics(which) if self.spec.robust else None
        return fitness(per, self.spec, ratio, n_docs=self._sizes, reference=reference)

    @property
    def prepare_hit_rate(self) -> float | None:
        """Share of finished sandboxed runs that reused a stored ``prepare()`` state (None before any)."""
        return self.prepare_reused / self.prepare_runs if self.prepare_runs else None

    def close(self) -> None:
        """Stop the workers (and with them any running sandbox) and remove their jail folders. On a cluster:
        cancel what is still queued and disconnect (a Client passed in stays open). An evaluation still running
        in another thread ends with its remaining tasks failed (``sandbox_error``), never in a new pool."""
        self._closing = True
        if self._cluster is not None:
            self._executor = None
            self._cluster.close()
            return
        if self._executor is not None:
            previous = threading.excepthook
            threading.excepthook = _quiet_manager_thread(previous)
            try:
                self._executor.shutdown(wait=True, kill_workers=True)
            finally:
                threading.excepthook = previous
            self._executor = None
            remove_worker_leftovers([t.index.path for t in self.topics])

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort, never blocks
        try:
            self._reset_pool()
        except Exception:
            pass

    # -- internals -----------------------------------------------------------------------------------
    def _pool(self):
        if self._cluster is not None:
            self._executor = self._cluster.executor()
            return self._executor
        if self._executor is None:
            from joblib.externals.loky.process_executor import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(max_workers=self.n_workers, initializer=init_worker,
                                                 env=worker_env())
        return self._executor

    def _reset_pool(self) -> None:
        if self._cluster is not None:  # a failed task does not break a cluster; Dask replaces dead workers
            return
        ex, self._executor = self._executor, None
        if ex is not None:
            try:
                ex.shutdown(wait=False, kill_workers=True)
            except Exception:  # pragma: no cover
                pass

    def _rejected(self, name: str, reason: str, message: str) -> CandidateResult:
        cols = [failed_result(t, reason, message) for t in self.topics]
        return CandidateResult(name, 0, SuiteResult(name, cols, 0.0, self.spec.name), 0.0, None, reason, message)

    def _index_specs(self) -> list[tuple[str, str, str | None]]:
        send = self._cluster is not None and self._cluster.send_paths
        return [(t.name, sig, str(t.index.path) if send else None) for t, sig in zip(self.topics, self._signatures)]

    def _task(self, cand: _Candidate, stage: int, j: int, s: int = 0) -> EvalTask:
        all_queries = self._program_queries[(stage, j)]
        a, b = self._bounds[(stage, j)][s]
        queries = all_queries if (a, b) == (0, len(all_queries)) else all_queries[a:b]
        k = (self.topics[j] if stage == 2 else self._stage1_topics[j]).depth(self.k)
        if self._cluster is None:
            return EvalTask(cand.source, "<candidate>", str(self.topics[j].index.path), queries, k, self.limits,
                         not self._unsafe_skip_language_checks)
        path = str(self.topics[j].index.path) if self._cluster.send_paths else ""
        return EvalTask(cand.source, "<candidate>", path, queries, k, self.limits,
                     not self._unsafe_skip_language_checks, self.topics[j].name, self._signatures[j])

    def _run(self, cands: list[_Candidate], use_cascade: bool = True) -> list[CandidateResult]:
        out: dict[int, CandidateResult] = {}
        futures: dict[cf.Future, tuple[_Candidate, int, int, int, int]] = {}
        pool_of: dict[cf.Future, object] = {}
        self.last_tasks = []
        if self._cluster is not None:
            from .cluster import run_cluster_task as task_fn
        else:
            task_fn = run_local_task

        def submit(cand: _Candidate, stage: int, j: int, s: int, attempt: int = 0) -> None:
            if self._closing:  # close() was called from another thread: no new pool, no new task
                complete(cand, stage, j, s, SandboxResult(None, "sandbox_error", "the evaluator was closed"))
                return
            pool = self._pool()
            try:
                fut = submit_held(pool, task_fn, self._task(cand, stage, j, s))  # no Ctrl-C for a worker it starts
            except RuntimeError as e:  # the pool was shut down meanwhile (close() from another thread)
                if not self._closing:
                    raise
                complete(cand, stage, j, s, SandboxResult(None, "sandbox_error", f"the evaluation pool is gone: {e}"))
                return
            futures[fut] = (cand, stage, j, s, attempt)
            pool_of[fut] = pool
            cand.pending += 1

        def complete(cand: _Candidate, stage: int, j: int, s: int, sres: SandboxResult) -> None:
            """Record one shard's result; when it was the collection's last, merge and measure."""
            parts = cand.shards.get((stage, j))
            if parts is None or parts[s] is not None:  # never count a task twice
                log.error("duplicate result for %s stage %d %s shard %d ignored", cand.name, stage,
                          self.topics[j].name, s)
                return
            parts[s] = sres
            self.last_tasks.append((cand.name, stage, self.topics[j].name, s))
            if sres.ok:
                cand.runs += 1
                cand.reused += sres.prepare_reused
                self.prepare_runs += 1
                self.prepare_reused += sres.prepare_reused
            if all(p is not None for p in parts):
                del cand.shards[(stage, j)]
                self._record(cand, stage, j, merge_shards(parts, self._bounds[(stage, j)], self.limits.output_bytes))

        def start_stage(cand: _Candidate, stage: int) -> None:
            cand.stage = stage
            for j in self._order:
                if stage == 2 and j in cand.stage1 and len(self._samples[j]) == len(self.topics[j].queries):
                    cand.full[j] = cand.stage1[j]  # stage 1 already scored every query of this collection
                    continue
                n_shards = len(self._bounds[(stage, j)])
                cand.shards[(stage, j)] = [None] * n_shards
                for s in range(n_shards):
                    submit(cand, stage, j, s)
            if cand.pending == 0:
                finish_stage(cand)

        def finish_stage(cand: _Candidate) -> None:
            if cand.stage == 1:
                results = [cand.stage1[j] for j in range(len(self.topics))]
                failed = next((r for r in results if not r.ok), None)
                if failed is not None:
                    out[cand.i] = self._final(cand, 1, results, None)
                    return
                fit1 = self._fitness({r.name: r.metrics for r in results}, "stage1")
                if self._start_it_ranks_as(cand) is not None or (
                        self.cascade is not None and fit1 < self.cascade.threshold * (cand.parent or 0.0)):
                    out[cand.i] = self._final(cand, 1, results, fit1)
                    return
                start_stage(cand, 2)
            else:
                results = [cand.full[j] for j in range(len(self.topics))]
                out[cand.i] = self._final(cand, 2, results, None)

        for cand in cands:
            parent = cand.parent
            if use_cascade and self.cascade is not None and parent is not None and parent > 0:
                start_stage(cand, 1)
            else:
                start_stage(cand, 2)

        idle_limit = self.limits.timeout_s + 120.0
        while futures:
            done, _ = cf.wait(list(futures), timeout=idle_limit, return_when=cf.FIRST_COMPLETED)
            if not done:  # nothing finished for far longer than any task may run: the pool is wedged
                log.error("sandbox workers stopped responding; restarting them")
                self._reset_pool()
                for fut in list(futures):
                    cand, stage, j, s, attempt = futures.pop(fut)
                    pool_of.pop(fut, None)
                    fut.cancel()  # on a cluster: drop the queued task
                    cand.pending -= 1
                    complete(cand, stage, j, s, SandboxResult(None, "sandbox_error", "the worker stopped responding"))
                    if cand.pending == 0:
                        finish_stage(cand)
                continue
            for fut in done:
                cand, stage, j, s, attempt = futures.pop(fut)
                pool = pool_of.pop(fut, None)
                cand.pending -= 1
                try:
                    sres = fut.result()
                except Exception as e:  # a worker died (not a candidate: those die in their own child process)
                    if self._cluster is not None:
                        log.warning("evaluation task failed on the cluster (%s: %s)", type(e).__name__, e)
                    elif pool is not None and pool is self._executor and not self._closing:  # not yet replaced
                        log.warning("sandbox worker failed (%s: %s); restarting the pool", type(e).__name__, e)
                        self._reset_pool()
                    if attempt < 1 and not self._closing:
                        self.task_retries += 1
                        submit(cand, stage, j, s, attempt + 1)
                        continue
                    sres = SandboxResult(None, "sandbox_error", f"the evaluation worker failed: {type(e).__name__}: {e}")
                complete(cand, stage, j, s, sres)
                if cand.pending == 0:
                    finish_stage(cand)
        return [out[c.i] for c in cands]

    def _record(self, cand: _Candidate, stage: int, j: int, sres: SandboxResult) -> None:
        topics = self._train_topics[j] if stage == 2 else self._stage1_topics[j]
        if sres.layers and sres.layers != self.layers:
            self.layers = sres.layers
            warn_missing_layers(sres.layers)
        cand.seconds += sres.wall_ms / 1e3
        if sres.output.strip():
            cand.outputs[topics.name] = sres.output
        if not sres.ok:
            res = failed_result(topics, sres.reason, failure_text(sres.message or sres.reason, sres.program_text,
                                                                  sres.output))
        else:
            try:
                ranking = sres.ranking
                ranking.query_ids = [q.id for q in (self.topics[j] if stage == 2 else self._stage1_topics[j]).queries]
                if stage == 2 and self._val_topics[j] is not None:  # one run over all queries, measured apart
                    cand.validation[j] = measure(subset_ranking(ranking, self._val_idx[j]), self._val_topics[j], self.k)
                    ranking = subset_ranking(ranking, self._train_idx[j])
                res = measure(ranking, topics, self.k)
                res.ranking = ranking if self.keep_rankings and stage == 2 else None
                cand.sample_docs[j] = [ranking.doc_idx[i][:TOP] for i in (
                    self._samples[j] if stage == 2 else range(len(ranking.doc_idx)))]
            except Exception as e:  # pragma: no cover - a bug on the trusted side, reported, not raised
                res = failed_result(topics, "measure_error", f"{type(e).__name__}: {e}")
        (cand.stage1 if stage == 1 else cand.full)[j] = res

    def _final(self, cand: _Candidate, stage: int, results: list[CollectionResult], fit1: float | None) -> CandidateResult:
        ok = all(r.ok for r in results)
        ratio = None
        if stage == 2 and ok and self.spec.latency_exponent > 0:
            ratio = latency_ratio(results, self.reference_results())
        suite = SuiteResult(cand.name, results, self._fitness({r.name: r.metrics for r in results}, "train", ratio)
                            if ok else 0.0, self.spec.name, ratio)
        failed = next((r for r in results if not r.ok), None)
        reason = failed.error_reason if failed else None
        detail = f"{failed.name}: {failed.error}" if failed else None
        validation = val_fit = None
        if stage == 2 and ok:
            fit1 = self._stage1_from_full(results)
            val = [cand.validation[j] for j in range(len(self.topics)) if j in cand.validation]
            if val:
                val_fit = self._fitness({r.name: r.metrics for r in val}, "validation", ratio)
                validation = SuiteResult(cand.name, val, val_fit, self.spec.name, ratio)
        latency = None
        if stage == 2 and ok:
            lat = [r.latency_median_ms for r in results if r.latency_median_ms > 0]
            latency = float(np.exp(np.mean(np.log(lat)))) if lat else None
        fit = 0.0 if failed is not None else suite.fitness if stage == 2 else None
        sample = {self.topics[j].name: signature(docs) for j, docs in cand.sample_docs.items()} if ok else {}
        return CandidateResult(cand.name, stage, suite, fit, fit1, reason, detail, latency, dict(cand.outputs),
                               cand.seconds, validation, val_fit, cand.runs, cand.reused, sample,
                               self._start_it_ranks_as(cand) if ok else None)

    def _start_it_ranks_as(self, cand: _Candidate) -> int | None:
        """Which of the candidate's starts it ranks as on every collection's stage-1 sample (None: none, or a
        collection without its sample rankings)."""
        for i, start in enumerate(cand.starts):
            if start and all(j in cand.sample_docs and ranks_as(cand.sample_docs[j], start.get(t.name, ""))
                             for j, t in enumerate(self.topics)):
                return i
        return None

    def _stage1_from_full(self, results: list[CollectionResult]) -> float:
        per = {}
        for j, r in enumerate(results):
            idx = self._samples[j]
            per[r.name] = {m: float(np.mean(v[idx])) for m, v in r.per_query.items()}
        return self._fitness(per, "stage1")


def _quiet_manager_thread(previous):
    """A ``threading.excepthook`` for the moment a pool shuts down: killing a loky pool that still has queued
    tasks (an interrupted run) can make its manager thread trip over its own queue (KeyError in
    ``add_call_item_to_queue``); the pool is being discarded either way, so that traceback is not shown."""
    def hook(args):
        if args.thread is not None and args.thread.name == "ExecutorManagerThread":
            log.debug("ignored while shutting the pool down: %s: %s", args.exc_type.__name__, args.exc_value)
            return
        previous(args)
    return hook


def evaluate_programs_sandboxed(programs: list[tuple[str, str, bool]], addresses: list[str], *, seed_source=None,
                                n_workers=None, limits: Limits = Limits(), fitness: str = "rankevolve", k: int = DEFAULT_K,
                                topics: list[Topics] | None = None, cluster=None, shard_queries: int | None = None,
                                keep_rankings: bool = False, pool=None) -> list[SuiteResult]:
    """Whole programs, each ``(name, source, checked)``, fully evaluated in the sandbox one after another on one pool
    (for the CLI and the report); ``checked``: the static checks first (against ``seed_source``'s head and tail
    when given); ``keep_rankings``, ``cluster``, ``shard_queries``, ``pool``: as for ``Evaluator``."""
    workers = n_workers or os.cpu_count() or 1  # one task per collection: more workers than collections would idle
    workers = workers if shard_queries else min(workers, len(topics) if topics is not None else len(addresses))
    with Evaluator(addresses, n_workers=max(1, workers), limits=limits, fitness=fitness, cascade=None, k=k,
                   topics=topics, cluster=cluster, shard_queries=shard_queries, keep_rankings=keep_rankings,
                   pool=pool) as ev:
        return [(ev.evaluate([src], [seed_source], [None], [name])[0] if checked else
                 ev.evaluate_trusted(src, name=name)).suite for name, src, checked in programs]


def evaluate_program_sandboxed(source: str, addresses, *, name="program", trusted=False, **options) -> SuiteResult:
    """One program in the sandbox; ``trusted`` skips the static checks; ``options``: ``evaluate_programs_sandboxed``."""
    return evaluate_programs_sandboxed([(name, source, not trusted)], addresses, **options)[0]
