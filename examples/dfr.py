"""PL2: the divergence-from-randomness model with Poisson randomness, Laplace after-effect and normalisation 2
(Amati & van Rijsbergen 2002, "Probabilistic models of information retrieval based on measuring the divergence
from randomness", ACM TOIS 20(4)), as Terrier implements it (PL2 with Normalisation2).

    tfn(t,d) = tf(t,d) * log2(1 + C * avgdl / dl(d))                       (normalisation 2)
    lambda(t) = cf(t) / N                                                  (mean occurrences per document)
    score(d, q) = sum over query terms t in d of  qtw(t) / (tfn + 1) *
                  ( tfn * log2(tfn / lambda) + (lambda - tfn) * log2(e) + 0.5 * log2(2 * pi * tfn) )

The bracket is -log2 of the Poisson probability of tfn occurrences (Stirling's formula for tfn!), the factor
1 / (tfn + 1) is the Laplace after-effect. qtw(t) = qtf(t) / (largest qtf of the query), Terrier's query term
weight (a factor common to all documents: it does not change the ranking). C = 1 is Terrier's default. Only
documents containing a query term are retrieved; a very common term (lambda > tfn) can contribute a negative
amount, as in Terrier.
"""
import math

import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
C = 1.0


def prepare(index):
    """The PL2 weight of every posting: a term x doc matrix shaped like index.term_doc."""
    td = index.term_doc
    tf = td.data.astype(np.float64)
    dl = index.doc_len[td.indices]
    tfn = tf * np.log2(1.0 + C * index.avg_doc_len / dl)
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    lam = index.cf[term_of_posting] / index.n_docs
    information = (tfn * np.log2(tfn / lam) + (lam - tfn) * math.log2(math.e)
                   + 0.5 * np.log2(2.0 * math.pi * tfn))
    return sp.csr_matrix((information / (tfn + 1.0), td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    """Sum the precomputed weights of the query terms' postings, times qtf / max qtf; unmatched documents get -inf."""
    rows = state[query.term_ids]
    qtw = query.qtf / query.qtf.max() if len(query.qtf) else query.qtf
    weights = rows.data * np.repeat(qtw, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
