"""The cascade: a candidate is first scored on a fixed, seeded sample of each collection's queries, and only one
whose sample fitness reaches ``threshold`` x its parent's gets the full evaluation (which scores every query, so
full metrics never depend on the cascade). ``Evaluator`` (:mod:`evorank.evaluators.parallel`) runs both stages;
this module says how large the sample is, which queries it holds and what a query is estimated to cost.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from .cost import query_cost_ms


@dataclass(frozen=True)
class CascadeConfig:
    """Stage 1 scores min(all, max(min_queries, ceil(fraction x n))) queries per collection (a sample seeded
    by collection name and the evaluator's seed), and on costly collections fewer: no more than fit in
    ``stage1_ms`` of estimated scoring time (``cost.query_cost_ms``, the BM25 seed's cost model), but never
    fewer than ``min_queries``. A candidate goes on to the full evaluation when its stage-1 fitness is at least
    ``threshold`` x its parent's stage-1 fitness."""

    fraction: float = 0.2
    min_queries: int = 20
    threshold: float = 0.9
    stage1_ms: float | None = 2000.0


def cascade_sample(n_queries: int, collection: str, seed: int = 0, cascade: CascadeConfig = CascadeConfig(),
                   query_ms: float | None = None) -> np.ndarray:
    """Sorted indices of the stage-1 queries of a collection (deterministic in name, seed and size).
    ``query_ms``: the estimated cost of one query, which caps the sample at ``cascade.stage1_ms``."""
    size = min(n_queries, max(cascade.min_queries, math.ceil(cascade.fraction * n_queries)))
    if cascade.stage1_ms and query_ms and query_ms > 0:
        size = min(size, max(cascade.min_queries, int(cascade.stage1_ms // query_ms)))
    if size >= n_queries:
        return np.arange(n_queries)
    digest = hashlib.sha256(f"{collection}|{seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return np.sort(rng.choice(n_queries, size=size, replace=False))


def mean_query_ms(topics) -> float | None:
    """Estimated scoring cost of one of the collection's queries (None for a stand-in index without statistics)."""
    try:
        return float(query_cost_ms(topics.index, topics.queries).mean()) if topics.queries else None
    except (AttributeError, TypeError, IndexError):
        return None
