"""BM25 as Lucene scores it (k1=0.9, b=0.4): the classic probabilistic ranking function.

score(d, q) = sum over query terms t in d of
    qtf(t) * idf(t) * tf(t,d) / (tf(t,d) + k1 * (1 - b + b * dl(d) / avgdl))
with idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)). Repeated query terms count qtf times
(Pyserini builds a bag-of-words query with each term boosted by its count). Documents that contain
no query term are not retrieved.
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9
B = 0.4


def prepare(index):
    """Precompute the BM25 weight of every posting: a term x doc matrix shaped like index.term_doc."""
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = K1 * (1.0 - B + B * index.doc_len[td.indices] / index.avg_doc_len)
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    weights = idf[term_of_posting] * tf / (tf + norm)
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    """Sum the precomputed weights of the query terms' postings; unmatched documents get -inf."""
    rows = state[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
