"""BM25F over the title and body fields (Robertson, Zaragoza & Taylor 2004, "Simple BM25 extension to multiple
weighted fields", CIKM; Zaragoza, Craswell, Taylor, Saria & Robertson 2004, "Microsoft Cambridge at TREC-13:
Web and HARD tracks").

Each field's term frequency is normalised by that field's length, the fields are summed with weights, and the
combined pseudo-frequency is saturated once (not once per field, which would let a term that fills every field
earn more than one saturated term):

    tf~(t,d) = sum over fields f of  W_f * tf_f(t,d) / (1 - B_f + B_f * len_f(d) / avglen_f)
    score(d, q) = sum over query terms t in d of  qtf(t) * idf(t) * tf~(t,d) / (K1 + tf~(t,d))

with idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)) over whole documents, as Lucene's BM25. K1 and B_body
are the BM25 seed's (0.9, 0.4). The papers tune the field weights and per-field B on training data (their web
runs also had an anchor-text field); with no tuned values for these collections, the title gets a moderate
weight of 2 and the seed's B. On a collection without titles every title length is 0 and tf~ is the body's
normalised tf over the whole document: the scores are BM25's (up to rounding).
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9
W_TITLE, B_TITLE = 2.0, 0.4
W_BODY, B_BODY = 1.0, 0.4


def field_norm(field, docs, b):
    """1 - b + b * len_f(d) / avglen_f for the given documents (1 where a field is empty everywhere)."""
    if field.avg_doc_len <= 0:
        return np.ones(len(docs))
    return 1.0 - b + b * field.doc_len[docs] / field.avg_doc_len


def prepare(index):
    """The BM25F weight of every posting, as a term x doc matrix shaped like index.term_doc."""
    td = index.term_doc
    title, body = index.field("title"), index.field("body")
    pseudo_tf = (W_TITLE * title.term_doc.data / field_norm(title, td.indices, B_TITLE)
                 + W_BODY * body.term_doc.data / field_norm(body, td.indices, B_BODY))
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    weights = idf[term_of_posting] * pseudo_tf / (K1 + pseudo_tf)
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    """Sum the precomputed weights of the query terms' postings; unmatched documents get -inf."""
    rows = state[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
