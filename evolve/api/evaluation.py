"""Scoring one ranking program on collections: ``evaluate(program, suite=..., datasets=...)``, what ``evorank eval``
computes (the command prints what this returns), as an ``Evaluation``: metrics per collection, per-query values,
optionally a paired comparison with another program, pandas views on request.

Every program runs as a candidate of a run does, in the sandbox, with the metrics computed on the trusted side from
the rankings it rebuilt; ``sandbox=False`` runs your own file in this process instead, and is refused for a run's
programs and the files a run or ``evorank export`` wrote.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from evorank.evaluators.errors import EvorankError, check_output_path

from .runs import require_pandas

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from evorank.evaluators.evaluate import CollectionResult, SuiteResult


@dataclass
class EvalProgram:
    """A program to evaluate: its display name, its text (read, never run here unless the user says it is their
    own), the file name tracebacks show, and ``run_output``: why it is a run's output (which only ever runs in the
    sandbox), or None."""

    label: str
    source: str
    code_name: str
    run_output: str | None
    tag: str  # the TREC run tag


def _tag(text: str) -> str:
    return re.sub(r"[^\w.#@:-]+", "_", text).strip("_")[:64] or "evorank"


def eval_program(text: str | Path) -> EvalProgram:
    """Resolve ``RUN:ID``, a file, a seed name, a shipped example, or the program's source text itself (anything
    holding a line break); reads files, runs nothing."""
    from evorank.evaluators.program.source import program_path
    from evorank.evolve.inspection.export import embedded_program, run_output_mark
    from evorank.evolve.inspection.queries import resolve_program_arg, run_folder_of

    text = str(text)
    if "\n" in text:
        mark = run_output_mark(text)
        return EvalProgram("program", text, "<program>", f"a run's output (its text says {mark!r})" if mark else None,
                           "program")
    from_run = resolve_program_arg(text)  # RUN:ID (runs/x:best): code a proposer wrote
    if from_run is not None:
        label, source = from_run
        return EvalProgram(label, source, label, f"program {label} of a run", _tag(label))
    path = program_path(text)
    source = path.read_text(encoding="utf-8")
    run_dir = run_folder_of(path)
    mark = run_output_mark(source)
    if mark is not None:  # an exported module: its support code is for users; the ranking program is scored
        source = embedded_program(source) or source
    why = (f"a file inside the run folder {run_dir}" if run_dir is not None else
           f"a run's output (its text says {mark!r})" if mark else None)
    return EvalProgram(text, source, str(path), why, _tag(Path(text).stem))


def comparison_json(suite: "SuiteResult", reference: "SuiteResult") -> dict:
    """Per-collection differences from a reference program (same queries, same collection-size rule)."""
    from evorank.evaluators.metrics import collection_fitness, fitness_spec
    from evorank.evaluators.significance import COMPARED_METRICS

    spec = fitness_spec("rankevolve")
    refs = {c.name: c for c in reference.collections}
    rows = {}
    for c in suite.collections:
        r = refs.get(c.name)
        if not (c.ok and r is not None and r.ok):
            continue
        ours, theirs = collection_fitness(c.metrics, spec, c.n_docs), collection_fitness(r.metrics, spec, r.n_docs)
        rows[c.name] = {"fitness": ours, "reference_fitness": theirs, "ratio": ours / theirs if theirs else None,
                        **{f"{m}_delta": c.metrics[m] - r.metrics[m] for m in COMPARED_METRICS}}
    return {"program": reference.program, "reference_fitness": reference.fitness, "collections": rows}


@dataclass
class Evaluation:
    """The outcome of ``evaluate``. ``suite`` is the evaluator's own result; ``query_ids`` names, per collection, the
    queries the per-query values are aligned with; ``reference`` and ``significance`` are the compared program's
    result and the paired test (``evorank.evaluators.significance``), None without ``compare``."""

    suite: "SuiteResult"
    query_ids: dict[str, list[str]]
    sandboxed: bool
    reference: "SuiteResult | None" = None
    significance: Any = None

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
    def collections(self) -> list["CollectionResult"]:
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
        """What ``evorank eval --json`` prints."""
        out = self.suite.to_json()
        if self.reference is not None:
            out["compare"] = {**comparison_json(self.suite, self.reference),
                              "significance": self.significance.to_json()}
        return out

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per collection: documents, queries, each metric, median and p95 latency, the error if any."""
        pandas = require_pandas()
        rows = [{"collection": c.name, "docs": c.n_docs, "queries": c.n_queries, **c.metrics,
                 "latency_median_ms": c.latency_median_ms, "latency_p95_ms": c.latency_p95_ms, "error": c.error_reason}
                for c in self.suite.collections]
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


def evaluate(program: str | Path | EvalProgram, *, suite: str | None = None,
             datasets: str | list[str] | None = None, sandbox: bool = True, checked: bool = False,
             compare: str | Path | EvalProgram | None = None, fitness: str = "rankevolve", k: int = 1000,
             workers: int | None = None, timeout_s: float | None = None, memory_mb: int | None = None,
             cluster: str | None = None, shard_queries: int | None = None, runs_out: str | Path | None = None,
             log: Callable[[str], None] | None = None, progress: bool = False,
             fork_workers: bool = False) -> Evaluation:
    """Score a ranking program on a suite and/or collections, as ``evorank eval`` does.

    ``program``: a program file, a seed name (``bm25``, ``ql_dirichlet``), a shipped example (``examples/rm3.py``),
    a program of a run (``"runs/x:best"``, ``"runs/x:42"``), or the program's source text. ``suite``: a named suite
    (``evorank datasets``); ``datasets``: collection addresses (a list, or comma-separated). ``sandbox``: in the jail
    (default), or ``False`` for your own file in this process (refused for a run's programs and outputs).
    ``checked``: the static checks ``run`` applies, also for your own file (always for a run's programs).
    ``compare``: also evaluate this program on the same queries and test the difference per query (paired
    randomization test, bootstrap CI, t-test; ``significance``). ``fitness``: rankevolve, latency-aware or robust.
    ``runs_out``: also write a TREC run file per collection. ``cluster``/``shard_queries``: evaluate on a Dask
    cluster. ``fork_workers``: fork the sandbox workers from this process instead of starting fresh interpreters (fast
    for a one-shot command; the command line does); done only while the process runs one thread and has read no
    judgements (``workers.fork_is_safe``), else fresh workers start. Raises ``EvorankError`` with what to do when
    something cannot be done."""
    from evorank.evaluators.data.suites import resolve_collections

    if isinstance(datasets, (list, tuple)):
        datasets = ",".join(datasets)
    if shard_queries and not cluster:
        raise EvorankError("--shard-queries splits the sandboxed evaluation tasks of --cluster; use it with --cluster")
    addresses = resolve_collections(suite, datasets)
    if runs_out:
        check_output_path(runs_out, folder=True, what="--runs-out")
    prog = program if isinstance(program, EvalProgram) else eval_program(program)
    baseline = None if compare is None else compare if isinstance(compare, EvalProgram) else eval_program(compare)
    if not sandbox:
        for p in (prog, baseline):
            if p is not None and p.run_output:
                raise EvorankError(f"--in-process refused: {p.label} is {p.run_output}, and a run's programs run "
                                   "only in the sandbox; drop --in-process")
        if cluster:
            raise EvorankError("--cluster always evaluates in the sandbox on the workers; drop --in-process")
    pool = None
    if fork_workers and sandbox and not cluster:  # before any judgement is read; they load while collections do
        import evorank.evaluators.parallel  # noqa: F401  (what the workers run, loaded before they fork)
        from evorank.evaluators.workers import forked_pool

        workers = workers or max(1, min(os.cpu_count() or 1, len(addresses)))
        pool = forked_pool(workers)
    programs = [p for p in (prog, baseline) if p is not None]
    try:
        from evorank.evaluators.evaluate import load_topics

        topics = [load_topics(a, progress=progress, log=log) for a in addresses]
        if sandbox:
            result, reference = _sandboxed(programs, topics, checked=checked, fitness=fitness, k=k, workers=workers,
                                           pool=pool, cluster=cluster, shard_queries=shard_queries,
                                           timeout_s=timeout_s, memory_mb=memory_mb, keep_rankings=bool(runs_out))
        else:
            result, reference = _in_process(programs, topics, fitness=fitness, k=k, keep_rankings=bool(runs_out))
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)  # after an error; the Evaluator has closed it otherwise
    if runs_out:
        from evorank.evaluators.evaluate import write_trec_run
        from evorank.evaluators.index.index import safe_name

        for c, t in zip(result.collections, topics):
            if c.ranking is not None:
                write_trec_run(Path(runs_out) / f"{safe_name(t.name)}.run", c.ranking, t, tag=prog.tag, k=k)
    significance = None
    if reference is not None:
        from evorank.evaluators.significance import compare as paired_comparison

        both = [(c, r) for c, r in zip(result.collections, reference.collections) if c.ok and r.ok]
        significance = paired_comparison({c.name: c.per_query for c, _ in both}, {r.name: r.per_query for _, r in both},
                                         program=prog.label, baseline_name=baseline.label)
    return Evaluation(result, {t.name: list(t.judged.query_ids) for t in topics}, sandbox, reference, significance)


def _in_process(programs: list[EvalProgram], topics, *, fitness: str, k: int, keep_rankings: bool):
    """Your own files: compiled and run in this process, without the jail."""
    from evorank.evaluators.evaluate import evaluate_on, latency_ratio, summarize
    from evorank.evaluators.metrics import fitness_spec
    from evorank.evaluators.program.source import compile_program, load_program

    spec = fitness_spec(fitness)
    bm25 = load_program("bm25") if (spec.latency_exponent or spec.robust) else None
    bm25_results = [evaluate_on(bm25, t, k=k)[0] for t in topics] if bm25 is not None else []
    suites = []
    for p in programs:
        compiled = compile_program(p.source, name=p.code_name)
        results = []
        for t in topics:
            res, ranking = evaluate_on(compiled, t, k=k)
            res.ranking = ranking if keep_rankings else None
            results.append(res)
        ratio = latency_ratio(results, bm25_results) if spec.latency_exponent else None
        suites.append(summarize(p.label, results, spec, ratio, reference=bm25_results or None))
    return suites[0], (suites[1] if len(suites) > 1 else None)


def _sandboxed(programs: list[EvalProgram], topics, *, checked: bool, fitness: str, k: int, workers, pool, cluster,
               shard_queries, timeout_s, memory_mb, keep_rankings: bool):
    """Every program in the jail (on local workers or a cluster), as ``run`` does; a run's programs and ``checked``
    also go through the static checks first. Rankings come back as the plain data the worker validated, so
    per-query metrics and run files are computed here from that data."""
    from evorank.evaluators.parallel import Limits, evaluate_programs_sandboxed

    suites = evaluate_programs_sandboxed(
        [(p.label, p.source, bool(p.run_output or checked)) for p in programs], [t.name for t in topics],
        fitness=fitness, k=k, topics=topics, cluster=cluster, shard_queries=shard_queries or None,
        limits=Limits(timeout_s=timeout_s or Limits.timeout_s, memory_mb=memory_mb or None),
        keep_rankings=keep_rankings, n_workers=workers, pool=pool)
    return suites[0], (suites[1] if len(suites) > 1 else None)
