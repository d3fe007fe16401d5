"""What evaluating a program on a collection costs, estimated from the index and the analysed queries.

The model is the BM25 seed's (the reference every evolved program is compared with): ``prepare`` touches every
posting once; ``score`` touches the postings of the query's terms and a few arrays the size of the collection
(the score vector, the matched mask, top-k). Constants were fitted on the development machine
(``bench/scale.py``, 2 cores, synthetic collections from 100k to 3M documents); they give the order of magnitude
an evolved program will cost, and the ratio between collections, which is what the cascade and
``evorank datasets`` use them for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: BM25 seed, fitted: ``prepare`` per posting (five float64 arrays of the postings, first touch included)
PREPARE_NS_PER_POSTING = 60.0
#: ``score`` + top-k per document of the collection (score vector, matched mask, top-k scan)
QUERY_NS_PER_DOC = 4.0
#: ``score`` per posting of the query's terms (row gather, weights, bincount)
QUERY_NS_PER_POSTING = 40.0
#: ``score`` per query, fixed (Python calls, small arrays)
QUERY_FIXED_MS = 0.05


@dataclass(frozen=True)
class EvalCost:
    """Estimated seconds of one full evaluation of the BM25 seed, and of each query."""

    prepare_s: float
    query_ms: np.ndarray  # per query

    @property
    def mean_query_ms(self) -> float:
        return float(self.query_ms.mean()) if len(self.query_ms) else 0.0

    @property
    def total_s(self) -> float:
        return self.prepare_s + float(self.query_ms.sum()) / 1e3


def query_cost_ms(index, queries) -> np.ndarray:
    """Estimated milliseconds of ``score`` + top-k for each query."""
    df = np.asarray(index.df)
    touched = np.array([float(df[q.term_ids].sum()) if len(q.term_ids) else 0.0 for q in queries])
    return QUERY_FIXED_MS + (index.n_docs * QUERY_NS_PER_DOC + touched * QUERY_NS_PER_POSTING) / 1e6


def estimate_cost(index, queries) -> EvalCost:
    """Estimated cost of evaluating the BM25 seed on ``index`` with ``queries`` (analysed, ``ranking.Query``)."""
    return EvalCost(index.term_doc.nnz * PREPARE_NS_PER_POSTING / 1e9, query_cost_ms(index, queries))
