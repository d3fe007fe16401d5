"""Evaluate a ranking program on collections: rank (program code) then measure (trusted code).

``load_topics`` does everything that does not depend on the program (load collection, index,
analyse queries, map judgements) once; ``evaluate_on`` then costs only the program's own time plus
the metric computation. The evolution loop keeps ``Topics`` alive across thousands of candidates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evorank.evaluators.data.collections import load_collection
from .errors import ProgramError
from evorank.evaluators.index.index import get_index
from .metrics import (FitnessSpec, Judgements, evaluate_ranking, fitness, fitness_spec, judgements, macro_means,
                      without_excluded)
from evorank.evaluators.program.ranking import DEFAULT_K, Query, Ranking, make_queries, rank


@dataclass
class Topics:
    """Everything about one collection that evaluation needs besides the program."""

    name: str
    index: object
    queries: list[Query]
    judged: Judgements
    warnings: list[str] = field(default_factory=list)

    @property
    def array_sizes(self) -> tuple[int, int, int]:
        """(documents, terms, postings): the lengths of a program's per-document, per-term and per-posting arrays
        on this collection."""
        return int(self.index.n_docs), int(self.index.n_terms), int(self.index.term_doc.nnz)

    def depth(self, k: int = DEFAULT_K) -> int:
        """How many documents a program ranks per query so that ``k`` are left once each query's excluded
        documents are removed (``metrics``: BRIGHT's rule); ``k`` on collections without exclusions."""
        return k + self.judged.max_excluded


_judgements_read = False  # set once a collection's judgements are in this process (workers.fork_is_safe)


def judgements_read() -> bool:
    """Whether this process has read any collection's judgements (``load_topics``)."""
    return _judgements_read


def load_topics(address: str, progress: bool = False, log=None) -> Topics:
    global _judgements_read
    _judgements_read = True
    coll = load_collection(address)
    index = get_index(coll, progress=progress, log=log)
    queries = make_queries(coll.queries, index)
    judged = judgements(coll.qrels, [q.id for q in queries], index, coll.settings.min_relevance, coll.excluded)
    warnings = list(coll.warnings)
    warnings.extend(index.build_warnings)
    if judged.unknown_docs:
        warnings.append(
            f"{judged.unknown_docs} judgement(s) name documents that are not in the corpus; "
            "they count as relevant-but-unretrievable (as in trec_eval)"
        )
    return Topics(address, index, queries, judged, warnings)


@dataclass
class CollectionResult:
    """Outcome of one program on one collection. ``error_reason`` is set when the program failed."""

    name: str
    n_docs: int
    n_queries: int
    metrics: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    latency_median_ms: float = float("nan")
    latency_p95_ms: float = float("nan")
    prepare_ms: float = float("nan")
    error_reason: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    ranking: Ranking | None = field(default=None, repr=False)  # kept only on request (TREC run files)
    excluded: int = 0  # (query, document) exclusions of the evaluated queries (BRIGHT's rule, ``metrics``)
    excluded_ranked: int = 0  # of which the program ranked, and were removed before the metrics

    @property
    def ok(self) -> bool:
        return self.error_reason is None


@dataclass
class SuiteResult:
    program: str
    collections: list[CollectionResult]
    fitness: float
    fitness_name: str
    latency_ratio: float | None = None  # vs the BM25 seed measured in the same run

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.collections)

    def means(self) -> dict[str, float]:
        return macro_means({c.name: c.metrics for c in self.collections if c.ok})

    def to_json(self) -> dict:
        return {
            "program": self.program,
            "fitness": self.fitness,
            "fitness_preset": self.fitness_name,
            "latency_ratio_vs_bm25": self.latency_ratio,
            "macro_mean": self.means(),
            "collections": [
                {
                    "name": c.name,
                    "n_docs": c.n_docs,
                    "n_queries": c.n_queries,
                    "metrics": c.metrics,
                    "latency_median_ms": _num(c.latency_median_ms),
                    "latency_p95_ms": _num(c.latency_p95_ms),
                    "prepare_ms": _num(c.prepare_ms),
                    "excluded_documents": {"judged": c.excluded, "removed_from_rankings": c.excluded_ranked},
                    "error_reason": c.error_reason,
                    "error": c.error,
                    "warnings": c.warnings,
                }
                for c in self.collections
            ],
        }


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def measure(ranking: Ranking, topics: Topics, k: int = DEFAULT_K) -> CollectionResult:
    """Metrics and latency of a ranking of ``topics.depth(k)`` documents per query (trusted side: the judgements
    live here only)."""
    per_query = evaluate_ranking(ranking, topics.judged, k)
    _, removed = without_excluded(ranking, topics.judged, k)
    return CollectionResult(
        name=topics.name,
        n_docs=topics.index.n_docs,
        n_queries=len(topics.queries),
        metrics={m: float(v.mean()) for m, v in per_query.items()},
        per_query=per_query,
        latency_median_ms=float(np.median(ranking.latency_ms)) if len(ranking.latency_ms) else float("nan"),
        latency_p95_ms=float(np.percentile(ranking.latency_ms, 95)) if len(ranking.latency_ms) else float("nan"),
        prepare_ms=ranking.prepare_ms,
        warnings=list(topics.warnings),
        excluded=topics.judged.n_excluded,
        excluded_ranked=removed,
    )


def evaluate_on(program, topics: Topics, k: int = DEFAULT_K) -> tuple[CollectionResult, Ranking | None]:
    """Rank in this process (trusted programs only: seeds, your own files) and measure."""
    try:
        ranking = rank(program, topics.index, topics.queries, topics.depth(k))
    except ProgramError as e:
        return failed_result(topics, e.reason, str(e)), None
    return measure(ranking, topics, k), ranking


def failed_result(topics: Topics, reason: str, message: str) -> CollectionResult:
    return CollectionResult(
        topics.name, topics.index.n_docs, len(topics.queries), error_reason=reason, error=message,
        warnings=list(topics.warnings),
    )


def latency_ratio(results: list[CollectionResult], reference: list[CollectionResult]) -> float | None:
    """Geometric mean over collections of median latency relative to the reference program's."""
    ref = {r.name: r.latency_median_ms for r in reference if r.ok}
    ratios = [
        r.latency_median_ms / ref[r.name]
        for r in results
        if r.ok and r.name in ref and ref[r.name] > 0 and r.latency_median_ms > 0
    ]
    return float(np.exp(np.mean(np.log(ratios)))) if ratios else None


def summarize(program_name: str, results: list[CollectionResult], spec: FitnessSpec | str,
              ratio: float | None = None, reference: list[CollectionResult] | None = None) -> SuiteResult:
    """The suite's fitness from per-collection results (the collection-size rule applied); ``reference``: the
    reference program's results on the same queries, which a robust fitness compares against."""
    spec = fitness_spec(spec)
    ok = all(r.ok for r in results)
    ref = {r.name: r.metrics for r in reference} if reference else None
    fit = fitness({r.name: r.metrics for r in results}, spec, ratio, n_docs={r.name: r.n_docs for r in results},
                  reference=ref) if ok else 0.0
    return SuiteResult(program_name, results, fit, spec.name, ratio)


def subset_ranking(ranking: Ranking, idx) -> Ranking:
    """The rankings of the queries at positions ``idx`` (latencies kept per query)."""
    idx = [int(i) for i in idx]
    return Ranking([ranking.query_ids[i] for i in idx], [ranking.doc_idx[i] for i in idx],
                   [ranking.scores[i] for i in idx], np.asarray(ranking.latency_ms)[idx], ranking.prepare_ms)


def subset_topics(topics: Topics, idx) -> Topics:
    """The same collection restricted to the queries at positions ``idx``."""
    return Topics(topics.name, topics.index, [topics.queries[i] for i in idx], topics.judged.subset(idx),
                  list(topics.warnings))


def write_trec_run(path: Path, ranking: Ranking, topics: Topics, tag: str = "evorank", k: int = DEFAULT_K) -> None:
    """TREC run format: ``qid Q0 docid rank score tag``; the k best of each query without its excluded documents,
    i.e. the ranking the metrics were computed from."""
    doc_ids = topics.index.doc_ids
    path.parent.mkdir(parents=True, exist_ok=True)
    excluded = topics.judged.excluded or [()] * len(ranking.query_ids)
    with open(path, "w", encoding="utf-8") as f:
        for qid, idx, scores, ex in zip(ranking.query_ids, ranking.doc_idx, ranking.scores, excluded):
            if len(ex):
                keep = ~np.isin(idx, ex)
                idx, scores = idx[keep], scores[keep]
            for r, (d, s) in enumerate(zip(idx[:k], scores[:k]), 1):
                f.write(f"{qid} Q0 {doc_ids[d]} {r} {s:.6f} {tag}\n")
