"""Scoring one ranking program on collections: ``evaluate(program, suite=..., datasets=...)``, what ``evorank eval``
computes, returned as an ``Evaluation`` (metrics per collection, per-query values, pandas views on request).

By default the program runs as a candidate of a run does: through the static checks and in the sandbox, with the
metrics computed by the trusted side from the rankings it rebuilt. ``sandbox=False`` runs it in this process
(your own trusted code only: it can then do anything you can).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from evorank.evaluators.errors import EvorankError
from evorank.evaluators.evaluate import CollectionResult, SuiteResult

from .runs import require_pandas

if TYPE_CHECKING:  # pragma: no cover
    import pandas


@dataclass
class Evaluation:
    """The outcome of ``evaluate``: ``suite`` is the evaluator's own result (what ``evorank eval --json`` prints);
    ``query_ids`` names, per collection, the queries that ``per_query`` values are aligned with."""

    suite: SuiteResult
    query_ids: dict[str, list[str]]
    sandboxed: bool

    @property
    def program(self) -> str:
        return self.suite.program

    @property
    def fitness(self) -> float:
        """The suite's fitness (0.0 when any collection failed)."""
        return self.suite.fitness

    @property
    def fitness_name(self) -> str:
        return self.suite.fitness_name

    @property
    def latency_ratio(self) -> float | None:
        """Median scoring time relative to the BM25 seed (measured only for the latency-aware fitness)."""
        return self.suite.latency_ratio

    @property
    def ok(self) -> bool:
        """True when the program ran on every collection."""
        return self.suite.ok

    @property
    def collections(self) -> list[CollectionResult]:
        return self.suite.collections

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """{collection: {metric: mean over its queries}} for the collections the program ran on."""
        return {c.name: dict(c.metrics) for c in self.suite.collections if c.ok}

    def means(self) -> dict[str, float]:
        """Each metric's macro mean over the collections."""
        return self.suite.means()

    @property
    def errors(self) -> dict[str, str]:
        """{collection: why the program failed there}."""
        return {c.name: f"{c.error_reason}: {c.error}" for c in self.suite.collections if not c.ok}

    def per_query(self, collection: str | None = None) -> dict[str, dict[str, float]]:
        """{metric: {query id: value}} on one collection (the only one when there is one)."""
        if collection is None:
            if len(self.suite.collections) != 1:
                raise ValueError(f"name the collection: one of {[c.name for c in self.suite.collections]}")
            collection = self.suite.collections[0].name
        found = next((c for c in self.suite.collections if c.name == collection), None)
        if found is None:
            raise KeyError(f"no collection {collection!r} in this evaluation")
        ids = self.query_ids.get(collection, [])
        return {m: dict(zip(ids, map(float, values))) for m, values in found.per_query.items()}

    def to_json(self) -> dict:
        return self.suite.to_json()

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per collection: documents, queries, each metric, median and p95 latency, the error if any."""
        pandas = require_pandas()
        rows = []
        for c in self.suite.collections:
            rows.append({"collection": c.name, "docs": c.n_docs, "queries": c.n_queries, **c.metrics,
                         "latency_median_ms": c.latency_median_ms, "latency_p95_ms": c.latency_p95_ms,
                         "error": c.error_reason})
        return pandas.DataFrame(rows).set_index("collection")

    def per_query_frame(self) -> "pandas.DataFrame":
        """One row per (collection, query id), one column per metric: the values behind the means, for paired
        tests and per-query comparisons."""
        pandas = require_pandas()
        frames = []
        for c in self.suite.collections:
            if c.ok and c.per_query:
                frame = pandas.DataFrame({m: list(v) for m, v in c.per_query.items()})
                frame.insert(0, "query_id", self.query_ids.get(c.name, [None] * len(frame)))
                frame.insert(0, "collection", c.name)
                frames.append(frame)
        if not frames:
            return pandas.DataFrame(columns=["collection", "query_id"]).set_index(["collection", "query_id"])
        return pandas.concat(frames, ignore_index=True).set_index(["collection", "query_id"])


def program_source(program: str | Path) -> tuple[str, str, str, bool]:
    """(label, file name for tracebacks, source, from a run) of what ``evaluate`` accepts: ``RUN:ID`` (or a run
    folder: its best), a program file, a seed name, a shipped example, or the program's source text itself."""
    from evorank.evaluators.program.source import program_path
    from evorank.evolve.inspection.queries import resolve_program_arg

    text = str(program)
    if "\n" in text:
        return "program", "<program>", text, False
    from_run = resolve_program_arg(text)
    if from_run is not None:
        label, source = from_run
        return label, label, source, True
    path = program_path(text)
    return text, str(path), path.read_text(encoding="utf-8"), False


def evaluate(program: str | Path, *, suite: str | None = None, datasets: str | list[str] | None = None,
             sandbox: bool = True, fitness: str = "rankevolve", k: int = 1000, workers: int | None = None,
             timeout_s: float | None = None, memory_mb: int | None = None, cluster: str | None = None,
             shard_queries: int | None = None, runs_out: str | Path | None = None,
             log: Callable[[str], None] | None = None, progress: bool = False) -> Evaluation:
    """Score a ranking program on a suite and/or collections, as ``evorank eval`` does.

    ``program``: a program file, a seed name (``bm25``, ``ql_dirichlet``), a shipped example (``examples/rm3.py``),
    a program of a run (``"runs/x:best"``, ``"runs/x:42"``), or the program's source text. ``suite``: a named
    suite (``evorank datasets``); ``datasets``: collection addresses (a list, or comma-separated). ``sandbox``: run
    it through the static checks and in the jail (default), or in this process (``False``: trusted code only).
    ``fitness``: rankevolve, latency-aware or robust. ``runs_out``: also write a TREC run file per collection
    (needs ``sandbox=False``: the rankings must be in this process). ``cluster``/``shard_queries``: evaluate on a
    Dask cluster, as ``evorank eval --cluster``. Raises ``EvorankError`` for what cannot be done, with what to do."""
    from evorank.evaluators.data.suites import resolve_collections
    from evorank.evaluators.evaluate import evaluate_on, latency_ratio, load_topics, summarize, write_trec_run
    from evorank.evaluators.index.index import safe_name
    from evorank.evaluators.metrics import fitness_spec
    from evorank.evaluators.parallel import Limits, evaluate_program_sandboxed
    from evorank.evaluators.program.source import compile_program, load_program

    if isinstance(datasets, (list, tuple)):
        datasets = ",".join(datasets)
    addresses = resolve_collections(suite, datasets)
    if shard_queries and not cluster:
        raise EvorankError("shard_queries splits the sandboxed evaluation tasks of a cluster; give a cluster too")
    if cluster and not sandbox:
        raise EvorankError("a cluster always evaluates in the sandbox on its workers; leave sandbox on")
    if runs_out and sandbox:
        raise EvorankError("writing TREC run files needs the rankings in this process, and this evaluation runs in "
                           "the sandbox; if you have read the code and trust it, evaluate it with sandbox=False")
    label, code_name, source, from_run = program_source(program)
    if from_run and not sandbox:
        raise EvorankError(f"{label} is a program of a run, and a run's programs run only in the sandbox; "
                           "leave sandbox on")
    topics = [load_topics(a, progress=progress, log=log) for a in addresses]
    query_ids = {t.name: list(t.judged.query_ids) for t in topics}
    if sandbox:
        result = evaluate_program_sandboxed(source, addresses, name=label, fitness=fitness, k=k, trusted=False,
                                            topics=topics, cluster=cluster, shard_queries=shard_queries or None,
                                            n_workers=workers,
                                            limits=Limits(timeout_s=timeout_s or Limits.timeout_s,
                                                          memory_mb=memory_mb or None))
        return Evaluation(result, query_ids, True)
    compiled = compile_program(source, name=code_name)
    spec = fitness_spec(fitness)
    bm25 = load_program("bm25") if (spec.latency_exponent or spec.robust) else None
    results, bm25_results = [], []
    for address, t in zip(addresses, topics):
        res, ranking = evaluate_on(compiled, t, k=k)
        results.append(res)
        if bm25 is not None:
            bm25_results.append(evaluate_on(bm25, t, k=k)[0])
        if runs_out and ranking is not None:
            write_trec_run(Path(runs_out) / f"{safe_name(address)}.run", ranking, t, tag=Path(label).stem)
    ratio = latency_ratio(results, bm25_results) if spec.latency_exponent else None
    return Evaluation(summarize(label, results, spec, ratio, reference=bm25_results or None), query_ids, False)
