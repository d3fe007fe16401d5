"""Metrics (computed with ranx, in the trusted process) and fitness.

ranx compiles its metrics with numba; we point numba at a persistent cache folder before ranx is
imported so the ~40 s compile is paid once per machine, not per process. Rankings are handed to
ranx as numba typed lists of ``[doc number, score]`` arrays, already in rank order, which skips
ranx's dict conversion (the slow part for 1,000 results x 1,000 queries).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

METRICS = ("ndcg@10", "recall@100", "recall@1000", "map@1000")


def _ensure_numba_cache() -> None:
    if "NUMBA_CACHE_DIR" not in os.environ:
        from .index import cache_root

        path = cache_root() / "numba"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)


@dataclass
class Judgements:
    """Qrels of one collection in index numbering. Judged documents missing from the corpus get
    distinct negative numbers: they still count in recall denominators, as in trec_eval."""

    query_ids: list[str]
    arrays: list[np.ndarray]  # per query: float64 (n, 2) [[doc number, grade]], grade descending
    min_relevance: int
    unknown_docs: int = 0


def judgements(qrels: dict[str, dict[str, int]], query_ids: list[str], index, min_relevance: int = 1) -> Judgements:
    number = {d: i for i, d in enumerate(index.doc_ids)}
    unknown = 0
    arrays = []
    for qid in query_ids:
        rows = []
        for doc, grade in qrels[qid].items():
            i = number.get(doc)
            if i is None:
                unknown += 1
                i = -unknown
            rows.append((float(i), float(grade)))
        a = np.array(rows, dtype=np.float64).reshape(-1, 2)
        arrays.append(a[np.argsort(-a[:, 1], kind="stable")])
    return Judgements(list(query_ids), arrays, min_relevance, unknown)


def metric_names(min_relevance: int) -> dict[str, str]:
    """Our metric name -> ranx metric string. Binary metrics use the collection's threshold."""
    lvl = f"-l{min_relevance}" if min_relevance > 1 else ""
    return {m: (m if m.startswith("ndcg") else f"{m}{lvl}") for m in METRICS}


def evaluate_ranking(ranking, judged: Judgements) -> dict[str, np.ndarray]:
    """Per-query metric values (arrays aligned with ``ranking.query_ids``)."""
    _ensure_numba_cache()
    from numba.core.errors import NumbaTypeSafetyWarning
    from numba.typed import List as TypedList
    from ranx import evaluate

    if ranking.query_ids != judged.query_ids:
        raise ValueError("ranking and judgements cover different queries")
    run = TypedList()
    for idx, scores in zip(ranking.doc_idx, ranking.scores):
        if len(idx) == 0:  # ranx needs at least one row; a document number no judgement uses
            run.append(np.array([[-1e18, 0.0]]))
        else:
            run.append(np.column_stack([idx.astype(np.float64), scores]))
    qrels = TypedList(judged.arrays)
    names = metric_names(judged.min_relevance)
    with warnings.catch_warnings():
        # ranx's own kernels trip numba's uint64->int64 notice; nothing we pass is affected.
        warnings.simplefilter("ignore", category=NumbaTypeSafetyWarning)
        out = evaluate(qrels, run, list(names.values()), return_mean=False)
    if len(names) == 1:
        out = {next(iter(names.values())): out}
    return {ours: np.asarray(out[theirs], dtype=np.float64) for ours, theirs in names.items()}


# -- fitness ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FitnessSpec:
    """Fitness = sum of weight x macro-mean metric; 0 if any collection failed.

    ``latency_exponent`` > 0 discounts programs slower than the BM25 seed measured in the same run:
    fitness x (bm25_latency / latency) ** latency_exponent when that ratio is below 1 (no bonus for
    being faster). With the ``latency-aware`` preset's 0.05, a 15x slower scorer loses 12.7%.
    """

    name: str = "rankevolve"
    weights: dict[str, float] = field(default_factory=lambda: {"recall@100": 0.8, "ndcg@10": 0.2})
    latency_exponent: float = 0.0


PRESETS = {
    "rankevolve": FitnessSpec(),
    "latency-aware": FitnessSpec(name="latency-aware", latency_exponent=0.05),
}


def fitness_spec(name_or_spec) -> FitnessSpec:
    if isinstance(name_or_spec, FitnessSpec):
        return name_or_spec
    if name_or_spec not in PRESETS:
        raise ValueError(f"unknown fitness preset {name_or_spec!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name_or_spec]


def macro_means(per_collection: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over collections of each metric's per-collection mean."""
    metrics = {m for v in per_collection.values() for m in v}
    return {m: float(np.mean([v[m] for v in per_collection.values() if m in v])) for m in sorted(metrics)}


def fitness(per_collection: dict[str, dict[str, float]] | None, spec: FitnessSpec, latency_ratio: float | None = None) -> float:
    """Fitness from per-collection mean metrics; ``None`` or an empty dict (a failure) gives 0."""
    if not per_collection:
        return 0.0
    means = macro_means(per_collection)
    value = sum(w * means[m] for m, w in spec.weights.items())
    if spec.latency_exponent and latency_ratio is not None and latency_ratio > 1.0:
        value *= latency_ratio ** (-spec.latency_exponent)
    return float(value)
