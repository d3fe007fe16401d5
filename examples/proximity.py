"""BM25 plus a term-proximity bonus from the minimum distance between two different query terms, MinDist (Tao &
Zhai 2007, "An exploration of proximity measures in information retrieval", SIGIR; their BM25 + pi(Q, D)).

    delta(q, d) = min | pos(t, d) - pos(t', d) |  over occurrences of two different query terms t != t' in d
    score(d, q) = BM25(d, q) + log(1 + exp(-delta(q, d)) / ALPHA)

The paper adds log(ALPHA + exp(-delta)); ours is that minus log(ALPHA), a constant, and a document with fewer
than two different query terms has no pair (delta = infinity) and no bonus. The bonus is convex in delta: it
rewards adjacent terms (log(1 + e^-1 / ALPHA)) far more than terms a few words apart, and vanishes beyond. ALPHA
is a free parameter of the paper's; 0.3 here.

Positions are evorank's (Lucene's): stopwords leave gaps, so in "cost of living" cost and live are 2 apart, and
a title is followed by its body. The smallest distance over all pairs of occurrences is always found between two
neighbours in the document's sequence of query-term occurrences (an occurrence between the two of a closest pair
makes a pair at least as close with one of them), so all query-term pairs are handled at once, from the merged
positional postings.
The BM25 part is the BM25 seed's (Lucene's idf, qtf-weighted, K1 = 0.9, B = 0.4). Only documents containing a
query term are retrieved.
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9
B = 0.4
ALPHA = 0.3


def prepare(index):
    """The BM25 weight of every posting: a term x doc matrix shaped like index.term_doc."""
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = K1 * (1.0 - B + B * index.doc_len[td.indices] / index.avg_doc_len)
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    return sp.csr_matrix((idf[term_of_posting] * tf / (tf + norm), td.indices, td.indptr), shape=td.shape)


def min_pair_distance(query, index):
    """(documents, MinDist) of the documents containing at least two different query terms."""
    terms = query.term_ids
    if len(terms) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    occurrences = [index.positions(t) for t in terms]
    docs = np.concatenate([d for d, _ in occurrences]).astype(np.int64)
    pos = np.concatenate([p for _, p in occurrences]).astype(np.int64)
    label = np.repeat(np.arange(len(terms)), [len(d) for d, _ in occurrences])
    order = np.argsort((docs << 32) + pos, kind="stable")   # every query-term occurrence, in text order per doc
    docs, pos, label = docs[order], pos[order], label[order]
    left = np.flatnonzero((docs[1:] == docs[:-1]) & (label[1:] != label[:-1]))
    if len(left) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    distance = (pos[left + 1] - pos[left]).astype(np.float64)
    pair_docs = docs[left]                             # ascending
    first = np.flatnonzero(np.concatenate([[True], pair_docs[1:] != pair_docs[:-1]]))
    return pair_docs[first], np.minimum.reduceat(distance, first)


def score(query, index, state):
    """BM25 over the query terms' postings plus the MinDist bonus; unmatched documents get -inf."""
    rows = state[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs).astype(np.float64)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    docs, delta = min_pair_distance(query, index)
    scores[docs] += np.log1p(np.exp(-delta) / ALPHA)
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
