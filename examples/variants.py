"""BM25 with vocabulary variants of the query terms: a prefix class and a character-trigram class per query term,
each scored as one BM25 pseudo-term and weighted below the exact term.

Stemming conflates only the variants its rules know; corpus-based stemming (Xu & Croft 1998, "Corpus-based
stemming using cooccurrence of word variants", ACM TOIS 16(1)) builds conflation classes from the vocabulary
itself, starting from aggressive string-based classes, and character n-grams match morphological variants
without any rules (McNamee & Mayfield 2004, "Character n-gram tokenization for European language text
retrieval", Information Retrieval 7; string similarity by n-gram Dice coefficient: Adamson & Boreham 1974).
Here, for a query term q (analysed; present in the collection or not):

    P(q) = { v != q in the vocabulary : len(q) >= PREFIX_LEN and v starts with q[:PREFIX_LEN] }
    T(q) = { v != q : Dice(trigrams(q), trigrams(v)) >= DICE_MIN },   trigrams of "#" + s + "#" (as sets)

A class C is scored as one pseudo-term, as a synonym set is: tf(C, d) = sum of tf(v, d) over v in C,
df(C) = documents containing any v in C, and

    score(d, q) = sum over distinct query terms q of qtf(q) * ( BM25(q, d) + W_PREFIX * BM25(P(q), d)
                                                                          + W_TRIGRAM * BM25(T(q), d) )

with BM25(C, d) = idf(df(C)) * tf(C,d) / (tf(C,d) + K1 * (1 - B + B * dl(d) / avgdl)) and Lucene's idf, K1 = 0.9,
B = 0.4 (the BM25 seed). Documents matching no query term and no variant are not retrieved. The papers give no
weight for the variant channels; 0.3 keeps them well below the exact term.
"""
import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9
B = 0.4
PREFIX_LEN = 5
DICE_MIN = 0.7
W_PREFIX = 0.3
W_TRIGRAM = 0.3


def trigrams(term):
    padded = "#" + term + "#"
    return sorted({padded[i:i + 3] for i in range(len(padded) - 2)})


def prepare(index):
    """BM25 weights, document normalisers, the prefix classes and a trigram -> terms inverted list."""
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = K1 * (1.0 - B + B * index.doc_len / max(index.avg_doc_len, 1e-12))  # avgdl is 0 if all docs are empty
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    bm25 = sp.csr_matrix((idf[term_of_posting] * tf / (tf + norm[td.indices]), td.indices, td.indptr), shape=td.shape)
    by_prefix = {}
    gram_id = {}
    gram_rows, gram_cols, n_grams = [], [], []
    for t, s in enumerate(index.terms):
        if len(s) >= PREFIX_LEN:
            by_prefix.setdefault(s[:PREFIX_LEN], []).append(t)
        grams = trigrams(s)
        n_grams.append(len(grams))
        for g in grams:
            gram_rows.append(gram_id.setdefault(g, len(gram_id)))
            gram_cols.append(t)
    by_prefix = {p: np.array(ts, dtype=np.int64) for p, ts in by_prefix.items()}
    gram_terms = sp.csr_matrix((np.ones(len(gram_rows)), (gram_rows, gram_cols)), shape=(len(gram_id), index.n_terms))
    return bm25, norm, by_prefix, gram_id, gram_terms, np.array(n_grams, dtype=np.float64)


def similar_terms(term, gram_id, gram_terms, n_grams):
    """Terms whose trigram sets have a Dice coefficient of at least DICE_MIN with the term's."""
    grams = trigrams(term)
    ids = [gram_id[g] for g in grams if g in gram_id]
    if not ids:
        return np.zeros(0, dtype=np.int64)
    lists = [gram_terms.indices[gram_terms.indptr[g]:gram_terms.indptr[g + 1]] for g in ids]
    cand, shared = np.unique(np.concatenate(lists), return_counts=True)
    dice = 2.0 * shared / (len(grams) + n_grams[cand])
    return cand[dice >= DICE_MIN]


def class_bm25(index, terms, norm):
    """BM25 of a class of terms as one pseudo-term: (documents, scores) of the documents containing any of them."""
    rows = index.term_doc[terms]
    docs, inverse = np.unique(rows.indices, return_inverse=True)
    tf = np.bincount(inverse, weights=rows.data, minlength=len(docs))
    idf = np.log1p((index.n_docs - len(docs) + 0.5) / (len(docs) + 0.5))
    return docs, idf * tf / (tf + norm[docs])


def score(query, index, state):
    """Exact BM25 plus the prefix and trigram classes of every distinct query term, weighted below it."""
    bm25, norm, by_prefix, gram_id, gram_terms, n_grams = state
    rows = bm25[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs).astype(np.float64)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    counts = {}
    for term in query.terms:
        counts[term] = counts.get(term, 0) + 1
    for term, qtf in counts.items():
        own = index.term_id(term)
        prefix = by_prefix.get(term[:PREFIX_LEN], np.zeros(0, dtype=np.int64)) if len(term) >= PREFIX_LEN else []
        for weight, cls in ((W_PREFIX, prefix), (W_TRIGRAM, similar_terms(term, gram_id, gram_terms, n_grams))):
            cls = np.asarray(cls, dtype=np.int64)
            cls = cls[cls != own]
            if weight <= 0 or len(cls) == 0:
                continue
            docs, part = class_bm25(index, cls, norm)
            scores[docs] += qtf * weight * part
            matched[docs] = True
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
