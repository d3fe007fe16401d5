"""BM25 as Lucene scores it (k1=0.9, b=0.4): the classic probabilistic ranking function.

score(d, q) = sum over query terms t in d of
    qtf(t) * idf(t) * tf(t,d) / (tf(t,d) + k1 * (1 - b + b * dl(d) / avgdl))
with idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)). Repeated query terms count qtf times
(Pyserini builds a bag-of-words query with each term boosted by its count). Documents that contain
no query term are not retrieved.

Weights in float32, as Lucene (and bm25s): half the memory traffic of float64. The length normalisation is per
document, gathered to the postings inside the formula, and tf is the index's own float32 array, so two float32
arrays per posting are alive at the peak (docs/scale.md). Said here, outside the block, so rewrites need not copy it.
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9
B = 0.4


def prepare(index):
    """Precompute the BM25 weight of every posting (float32): a term x doc matrix shaped like index.term_doc."""
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5)).astype(np.float32)
    norm = (K1 * (1.0 - B + B * index.doc_len / index.avg_doc_len)).astype(np.float32)
    tf = td.data
    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    """Sum the precomputed weights of the query terms' postings, each term counted qtf times (a sparse
    matrix-vector product in float32); documents without a posting of a query term get -inf."""
    rows = state[query.term_ids]
    scores = rows.T @ query.qtf.astype(np.float32)
    matched = rows.T @ np.ones(len(query.term_ids), dtype=np.float32) > 0
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
