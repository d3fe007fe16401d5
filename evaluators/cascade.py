"""The cascade: a candidate is first scored on a fixed, seeded sample of each collection's queries, and only one
whose sample fitness reaches ``threshold`` x its parent's gets the full evaluation (which scores every query, so
full metrics never depend on the cascade). ``Evaluator`` (:mod:`evorank.evaluators.parallel`) runs both stages;
this module says how large the sample is, which queries it holds and what a query is estimated to cost.

The same sample finds a no-op (a change that runs but ranks every query as the
program it started from) before it costs a full evaluation: a program's *sample signature* holds, per sample query,
how many documents the top of its ranking has (at most :data:`TOP`) and a digest of their numbers, in order. A
candidate ranks as a program (:func:`ranks_as`) when, on every sample query of every collection, its ranking starts
with exactly the documents of that program's top: the same top, or the same top followed by documents the other
program did not retrieve at all (adding one constant to every document's score, ``-inf`` ones included, only
appends documents at the tail). Rankings are compared by document numbers, never by scores, so float rounding
(float32 against float64, a constant added) does not make two rankings differ.

:func:`metrics_alike` is the same judgement from metrics alone, for programs archived without a signature: equal
within ``1e-6`` at cutoffs up to :data:`TOP`, within ``1e-3`` for the rest (a few documents appended at the tail
move Recall@1000 and MAP@1000 a little).
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
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

#: How much of each ranking is compared: the top 100 documents (nDCG@10 and Recall@100 depend on no more).
TOP = 100
_CUTOFF = re.compile(r"@(\d+)$")


def _digest(docs: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(docs, dtype="<i8").tobytes(), digest_size=6).hexdigest()


def signature(doc_lists: Sequence[np.ndarray], top: int = TOP) -> str:
    """The sample signature of one collection: ``"n:digest"`` per query (``doc_lists``: document numbers, best
    first), separated by spaces."""
    return " ".join(f"{min(top, len(d))}:{_digest(np.asarray(d)[:top])}" for d in doc_lists)


def ranks_as(doc_lists: Sequence[np.ndarray], other: str) -> bool:
    """Whether rankings ``doc_lists`` (of the same queries, in the same order) start, for every query, with exactly
    the top that signature ``other`` describes."""
    entries = other.split()
    if len(entries) != len(doc_lists):
        return False
    for docs, entry in zip(doc_lists, entries):
        n, _, digest = entry.partition(":")
        if not n.isdigit() or len(docs) < int(n) or _digest(np.asarray(docs)[:int(n)]) != digest:
            return False
    return True


def metrics_alike(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    """Whether two programs' per-collection metrics say they rank alike (see the module docstring); False when
    either has none or they were measured on different collections or metrics."""
    if not a or not b or set(a) != set(b):
        return False
    for coll, ma in a.items():
        mb = b[coll]
        if set(ma) != set(mb):
            return False
        for name, va in ma.items():
            vb = mb[name]
            if va is None or vb is None:
                return False
            m = _CUTOFF.search(name)
            tol = 1e-6 if m and int(m.group(1)) <= TOP else 1e-3
            if abs(va - vb) > tol:
                return False
    return True
