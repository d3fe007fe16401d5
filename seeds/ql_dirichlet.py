"""Query likelihood with Dirichlet smoothing as Lucene's LMDirichletSimilarity scores it (mu=2000).

score(d, q) = sum over query terms t in d of
    qtf(t) * max(0, ln(1 + tf(t,d) / (mu * p(t|C))) + ln(mu / (dl(d) + mu)))
with the collection model p(t|C) = (cf(t) + 1) / (total_tokens + 1). Each term's contribution is
clamped at 0, and only documents containing at least one query term are retrieved, as in Lucene.
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
MU = 2000.0


def prepare(index):
    """Precompute every posting's clamped per-term log-likelihood ratio: a term x doc matrix."""
    td = index.term_doc
    p_collection = (index.cf + 1.0) / (index.total_tokens + 1.0)
    tf = td.data.astype(np.float64)
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    dl = index.doc_len[td.indices]
    weights = np.log1p(tf / (MU * p_collection[term_of_posting])) + np.log(MU / (dl + MU))
    return sp.csr_matrix((np.maximum(weights, 0.0), td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    """Sum the clamped weights of the query terms' postings; unmatched documents get -inf."""
    rows = state[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    # float64 even for a query with no term in the vocabulary (numpy's bincount of nothing is int64, and a later
    # `scores += <floats>` would raise)
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs).astype(np.float64, copy=False)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
