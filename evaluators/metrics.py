"""Metrics, computed in the trusted process, and fitness.

The four metrics follow trec_eval's definitions (and ranx's, which tests use as the reference):
nDCG@10 with linear gains and a log2(rank + 1) discount over every positive grade (Järvelin &
Kekäläinen, 2002), Recall@k and MAP@k (average precision cut at k, divided by the number of
relevant documents) with "relevant" meaning a grade at or above the collection's threshold.

They work from the judgements, which are few, not from the rankings, which are long: each ranking
fills a reusable document -> rank table (one array assignment per query, no loop over documents),
the judged documents' ranks are read from it, and the metrics follow from a few vectorised
operations over the judgements. Measured on SciFact/NFCorpus/NPL with BM25's rankings this is about
3x faster than ranx's compiled kernels once they are warm (7 vs 20 ms for 300 queries x 1,000
results), and it avoids ranx's import (about 3 s: pandas, matplotlib, scipy.stats) and numba's
first-use compilation (about 40 s), which every one-shot ``evorank eval`` paid. A ranking that names the same
document twice for one query is refused (``ValueError``): it is never produced by trusted code, so
it can only be a forgery, and counting the repeats would inflate recall.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METRICS = ("ndcg@10", "recall@100", "recall@1000", "map@1000")
_CUTOFFS = {"ndcg@10": 10, "recall@100": 100, "recall@1000": 1000, "map@1000": 1000}


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


def evaluate_ranking(ranking, judged: Judgements) -> dict[str, np.ndarray]:
    """Per-query metric values (arrays aligned with ``ranking.query_ids``); each ranking is taken in the order
    given (best first). Raises ValueError when a ranking names a document twice."""
    if list(ranking.query_ids) != list(judged.query_ids):
        raise ValueError("ranking and judgements cover different queries")
    n_q = len(judged.query_ids)
    out = {m: np.zeros(n_q) for m in METRICS}
    if n_q == 0:
        return out
    # Every judgement as one row (query, document, grade), grades descending within a query; then the rank
    # at which each judged document was retrieved (-1: not retrieved), found through a reusable
    # document -> rank table that each ranking fills and clears again.
    lengths = np.fromiter((len(a) for a in judged.arrays), dtype=np.int64, count=n_q)
    jq = np.repeat(np.arange(n_q), lengths)
    rows = np.concatenate(judged.arrays) if lengths.sum() else np.zeros((0, 2))
    jdoc, jgrade = rows[:, 0].astype(np.int64), rows[:, 1]
    jrank = np.full(len(jdoc), -1, dtype=np.int64)
    size = 1 + max((int(d.max()) for d in ranking.doc_idx if len(d)), default=0)
    size = max(size, 1 + int(jdoc.max()) if len(jdoc) else 0)
    rank_of = np.full(size, -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    all_positions = np.arange(max((len(d) for d in ranking.doc_idx), default=0))
    known = jdoc >= 0  # documents outside the corpus have negative numbers and are never retrieved
    lookup = np.where(known, jdoc, 0)
    for q, docs in enumerate(ranking.doc_idx):
        if not len(docs):
            continue
        positions = all_positions[:len(docs)]
        rank_of[docs] = positions
        if (rank_of[docs] != positions).any():  # a later copy of a document overwrote an earlier one
            raise ValueError(f"query {judged.query_ids[q]!r}: a ranking names the same document twice")
        a, b = starts[q], starts[q + 1]
        jrank[a:b] = rank_of[lookup[a:b]]
        rank_of[docs] = -1
    jrank[~known] = -1
    retrieved = jrank >= 0
    relevant = jgrade >= judged.min_relevance
    n_relevant = np.bincount(jq, weights=relevant, minlength=n_q)

    # nDCG@10: every positive grade is a gain; the ideal ranking is the judgements in grade order
    hit = retrieved & (jrank < _CUTOFFS["ndcg@10"])
    dcg = np.bincount(jq[hit], weights=jgrade[hit] / np.log2(jrank[hit] + 2.0), minlength=n_q)
    ideal_rank = np.arange(len(jq)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    top = ideal_rank < _CUTOFFS["ndcg@10"]
    idcg = np.bincount(jq[top], weights=jgrade[top] / np.log2(ideal_rank[top] + 2.0), minlength=n_q)
    out["ndcg@10"] = np.divide(dcg, idcg, out=np.zeros(n_q), where=idcg > 0)
    for metric in ("recall@100", "recall@1000"):
        hits = np.bincount(jq[retrieved & relevant & (jrank < _CUTOFFS[metric])], minlength=n_q)
        out[metric] = np.divide(hits, n_relevant, out=np.zeros(n_q), where=n_relevant > 0)
    # MAP@1000: precision at the rank of each relevant document retrieved within the cut-off, summed, over
    # the number of relevant documents
    hit = retrieved & relevant & (jrank < _CUTOFFS["map@1000"])
    hq, hr = jq[hit], jrank[hit]
    order = np.lexsort((hr, hq))
    hq, hr = hq[order], hr[order]
    nth = np.arange(len(hq)) - np.searchsorted(hq, hq)  # 0-based count of earlier hits of the same query
    precision_sum = np.bincount(hq, weights=(nth + 1) / (hr + 1.0), minlength=n_q)
    out["map@1000"] = np.divide(precision_sum, n_relevant, out=np.zeros(n_q), where=n_relevant > 0)
    return out


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
