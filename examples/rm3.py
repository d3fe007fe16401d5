"""RM3 pseudo-relevance feedback on BM25 (relevance model: Lavrenko & Croft 2001, "Relevance-based language
models", SIGIR; RM3, its interpolation with the query: Abdul-Jaleel et al. 2004, "UMass at TREC 2004: Novelty
and HARD"), in the form Anserini runs it (first pass BM25, feedback documents weighted by their scores).

Two passes inside ``score``:

1. BM25 (the seed: Lucene's idf, K1 = 0.9, B = 0.4, qtf-weighted); F = the FB_DOCS best documents (ties by
   lower document number, as evorank ranks).
2. Relevance model over F's terms, each feedback document weighted by its first-pass score s(d):

       rm(w) = sum over d in F of s(d) * tf(w, d) / dl(d)

   keep the FB_TERMS terms with the largest rm(w) (ties by lower term id) and scale them to sum 1.
3. Interpolate with the query, itself scaled to sum 1:  q'(w) = ORIG_WEIGHT * qtf(w) / |q| + (1 - ORIG_WEIGHT) * rm(w)
4. Second pass: score(d) = sum over w of q'(w) * BM25(w, d), over the whole collection; documents containing
   none of the weighted terms are not retrieved.

FB_DOCS = 10, FB_TERMS = 10 and ORIG_WEIGHT = 0.5 are Anserini's RM3 defaults. Unlike Anserini, no feedback term
is filtered out (Anserini drops some by form). A query without any term in the collection retrieves nothing.
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9
B = 0.4
FB_DOCS = 10
FB_TERMS = 10
ORIG_WEIGHT = 0.5


def prepare(index):
    """The BM25 weight of every posting: a term x doc matrix shaped like index.term_doc."""
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = K1 * (1.0 - B + B * index.doc_len[td.indices] / index.avg_doc_len)
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    return sp.csr_matrix((idf[term_of_posting] * tf / (tf + norm), td.indices, td.indptr), shape=td.shape)


def weighted_bm25(state, terms, weights, n_docs):
    """sum over terms of weight * BM25(term, d) (a term listed twice counts twice); -inf for documents containing
    none of the terms."""
    rows = state[terms]
    scores = np.bincount(rows.indices, weights=rows.data * np.repeat(weights, np.diff(rows.indptr)), minlength=n_docs)
    matched = np.bincount(rows.indices, minlength=n_docs) > 0
    return np.where(matched, scores, -np.inf)


def best(values, n):
    """Indices of the n largest finite values, largest first, ties by lower index."""
    cand = np.flatnonzero(np.isfinite(values))
    vals = values[cand]
    if len(cand) > n:                                  # only the n best (and those tied with the n-th) are sorted
        keep = vals >= np.partition(vals, len(vals) - n)[len(vals) - n]
        cand, vals = cand[keep], vals[keep]
    order = np.lexsort((cand, -vals))
    return cand[order[:n]]


def score(query, index, state):
    """BM25, a relevance model from the top FB_DOCS documents, and BM25 with the expanded, interpolated query."""
    first = weighted_bm25(state, query.term_ids, query.qtf, index.n_docs)
    feedback = best(first, FB_DOCS)
    if len(feedback) == 0:
        return first
    fb = index.doc_term[feedback]                      # the feedback documents' term vectors, in rank order
    per_entry = np.diff(fb.indptr)
    p_term = fb.data / np.repeat(index.doc_len[feedback], per_entry)
    candidates, slot = np.unique(fb.indices, return_inverse=True)
    rm = np.bincount(slot, weights=np.repeat(first[feedback], per_entry) * p_term, minlength=len(candidates))
    keep = best(rm, FB_TERMS)
    terms = np.concatenate([query.term_ids, candidates[keep]])
    weights = np.concatenate([ORIG_WEIGHT * query.qtf / query.qtf.sum(),
                              (1.0 - ORIG_WEIGHT) * rm[keep] / rm[keep].sum()])
    return weighted_bm25(state, terms, weights, index.n_docs)
# EVOLVE-BLOCK-END
