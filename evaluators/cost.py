"""What evaluating a program on a collection costs, estimated from the index and the analysed queries.

The model is the BM25 seed's (the reference every evolved program is compared with): ``prepare`` touches every
posting once; ``score`` touches, per query, each of its terms' rows (a fixed cost per term), the postings of those
rows, and a few arrays the size of the collection (the score vector, the matched mask, top-k). The constants are
CPU time of the seed on the development machine (2 cores; a query's cost is the least of three runs, its
``prepare``'s the first, with the pages not yet touched), fitted with ``bench/cost_fit.py`` on the dev collections
and on the BEIR half of ``bench/paper12.py``'s stand-in of the paper's 12-set suite, and checked on its BRIGHT half
(paragraph-long queries), which they were not fitted on (bench/RESULTS.md); they give the order of magnitude an
evolved program will cost, and the ratio between collections, which is what the cascade and ``evorank datasets``
use them for. On a loaded machine the wall time is longer than this CPU time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: BM25 seed, fitted: ``prepare`` per posting (a few float32 passes over the postings, first touch included)
PREPARE_NS_PER_POSTING = 20.0
#: ``score`` + top-k per document of the collection (score vector, matched mask, top-k scan)
QUERY_NS_PER_DOC = 11.4
#: ``score`` per posting of the query's terms (row gather, sparse matrix-vector products)
QUERY_NS_PER_POSTING = 1.9
#: ``score`` per distinct query term in the collection (its row of the weight matrix)
QUERY_US_PER_TERM = 0.13
#: ``score`` per query, fixed (Python calls, small arrays)
QUERY_FIXED_MS = 0.16


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
    terms = np.array([float(len(q.term_ids)) for q in queries])
    return (QUERY_FIXED_MS + terms * QUERY_US_PER_TERM / 1e3
            + (index.n_docs * QUERY_NS_PER_DOC + touched * QUERY_NS_PER_POSTING) / 1e6)


def estimate_cost(index, queries) -> EvalCost:
    """Estimated cost of evaluating the BM25 seed on ``index`` with ``queries`` (analysed, ``ranking.Query``)."""
    return EvalCost(index.term_doc.nnz * PREPARE_NS_PER_POSTING / 1e9, query_cost_ms(index, queries))
