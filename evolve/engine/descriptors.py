"""MAP-Elites descriptors: what makes two programs different enough that the archive keeps both.

A program's cell on an island's grid comes from these features (``RunConfig.descriptors`` picks them):

- ``evidence``: how many of the new kinds of index evidence it reads (term strings, positions, fields,
  pseudo-relevance feedback, the query's own words; ``evidence.evidence_kinds``), from its AST;
  bins 0, 1, 2, 3+. A program that adds a proximity channel does not compete with BM25's constant tweaks.
- ``balance``: where its gains over the BM25 seed come from, recall or precision: the mean over
  collections of R@100 / BM25's R@100, minus the same for nDCG@10. Positive: it retrieves more of the
  relevant documents; negative: it ranks the top better. Adaptive bins around 0.
- ``complexity``: the size of its EVOLVE-BLOCK's syntax tree (log scale, adaptive bins).
- ``work``: the work ``score`` does per query relative to the BM25 seed, estimated from its syntax tree
  (``evidence.query_work``; log scale, adaptive bins), so cheap scorers survive as elites beside costly ones.
- ``latency_ratio``: the measured median time per query relative to the BM25 seed (log scale, adaptive
  bins). Not a default: it depends on the machine's load, so a grid that uses it (and with it the parents
  drawn from the grid) differs between two runs of the same seed (``config.not_reproducible``).

Adaptive dimensions start with one edge and gain more as the archive fills (``archive.features.refine``,
applied every ``regrid_every`` placements): bins follow the values actually seen, and re-binning never
loses an elite.
"""
from __future__ import annotations

import numpy as np

from evorank.archive import FeatureDim, GridSpec

from .evidence import evidence_kinds, query_work

DESCRIPTORS = ("evidence", "balance", "complexity", "work", "latency_ratio")
#: the first edge of the ``work`` axis (adaptive: more edges follow the values seen)
WORK_EDGES = (2.0,)


def grid_for(descriptors, complexity_edges, latency_edges, metric: str | None = None) -> GridSpec:
    """The grid of a new run from the chosen descriptors (and initial edges of the adaptive log axes)."""
    dims = {
        "evidence": FeatureDim("evidence", (1.0, 2.0, 3.0)),
        "balance": FeatureDim("balance", (0.0,), adaptive=True, max_bins=6),
        "complexity": FeatureDim("complexity", tuple(complexity_edges), log=True, adaptive=True, max_bins=6),
        "work": FeatureDim("work", WORK_EDGES, log=True, adaptive=True, max_bins=5),
        "latency_ratio": FeatureDim("latency_ratio", tuple(latency_edges), log=True, adaptive=True, max_bins=5),
    }
    unknown = [d for d in descriptors if d not in dims]
    if unknown:
        raise ValueError(f"unknown descriptor(s) {', '.join(unknown)}; choose from {', '.join(DESCRIPTORS)}")
    chosen = [dims[d] for d in descriptors]
    if metric:
        chosen.append(FeatureDim(metric, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)))
    return GridSpec(tuple(chosen))


def balance(metrics: dict[str, dict[str, float]], reference: dict[str, dict[str, float]] | None) -> float | None:
    """Mean relative R@100 minus mean relative nDCG@10 against the reference (None without one)."""
    if not reference:
        return None
    recall, ndcg = [], []
    for coll, m in metrics.items():
        ref = reference.get(coll, {})
        if ref.get("recall@100"):
            recall.append(m.get("recall@100", 0.0) / ref["recall@100"])
        if ref.get("ndcg@10"):
            ndcg.append(m.get("ndcg@10", 0.0) / ref["ndcg@10"])
    if not recall or not ndcg:
        return None
    return float(np.mean(recall) - np.mean(ndcg))


def describe(code: str, metrics: dict[str, dict[str, float]], reference: dict[str, dict[str, float]] | None) -> dict:
    """The descriptor features of one evaluated program (``evidence_kinds`` kept too, for reports)."""
    kinds = sorted(evidence_kinds(code))
    out = {"evidence": float(len(kinds)), "evidence_kinds": kinds, "work": query_work(code)}
    b = balance(metrics, reference)
    if b is not None:
        out["balance"] = b
    return out
