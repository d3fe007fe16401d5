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


def gather(indptr, rows):
    """Positions of the entries of the given rows of a CSR structure, row after row, and each row's length."""
    start, stop = indptr[rows].astype(np.int64), indptr[rows + 1].astype(np.int64)
    length = stop - start
    return np.repeat(start - np.cumsum(length) + length, length) + np.arange(length.sum()), length


def variant_classes(words, index, state):
    """(class, member term) pairs of the words' variant classes: class i is the prefix class P(words[i]), class
    len(words) + i the trigram class T(words[i]). The trigram overlaps of all words are counted at once."""
    _, _, by_prefix, gram_id, gram_terms, n_grams = state
    m = len(words)
    classes, members = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    word_of_gram, grams_of_words, n_word_grams = [], [], []
    for i, word in enumerate(words):
        if len(word) >= PREFIX_LEN and word[:PREFIX_LEN] in by_prefix:
            members.append(by_prefix[word[:PREFIX_LEN]])
            classes.append(np.full(len(members[-1]), i, dtype=np.int64))
        grams = trigrams(word)
        n_word_grams.append(len(grams))
        ids = [gram_id[g] for g in grams if g in gram_id]
        word_of_gram.extend([i] * len(ids))
        grams_of_words.extend(ids)
    at, length = gather(gram_terms.indptr, np.array(grams_of_words, dtype=np.int64))
    key = np.repeat(np.array(word_of_gram, dtype=np.int64), length) * index.n_terms + gram_terms.indices[at]
    pairs, shared = np.unique(key, return_counts=True)  # (word, vocabulary term) pairs sharing a trigram
    word, term = pairs // index.n_terms, pairs % index.n_terms
    dice = 2.0 * shared / (np.array(n_word_grams, dtype=np.float64)[word] + n_grams[term])
    classes.append(m + word[dice >= DICE_MIN])
    members.append(term[dice >= DICE_MIN])
    classes, members = np.concatenate(classes), np.concatenate(members)
    own = np.array([index.term_id(w) for w in words], dtype=np.int64)
    keep = members != own[classes % m]                 # a word is not its own variant
    return classes[keep], members[keep]


def class_bm25(index, classes, members, norm, n_classes):
    """BM25 of every class as one pseudo-term: (document, class, score) for each document containing a member."""
    td = index.term_doc
    at, length = gather(td.indptr, members)            # the members' postings
    key = np.repeat(classes, length) * index.n_docs + td.indices[at]
    keys, slot = np.unique(key, return_inverse=True)
    tf = np.bincount(slot, weights=td.data[at], minlength=len(keys))
    cls, docs = keys // index.n_docs, keys % index.n_docs
    df = np.bincount(cls, minlength=n_classes)
    idf = np.log1p((index.n_docs - df + 0.5) / (df + 0.5))
    return docs, cls, idf[cls] * tf / (tf + norm[docs])


def score(query, index, state):
    """Exact BM25 plus the prefix and trigram classes of every distinct query term, weighted below it."""
    bm25, norm = state[0], state[1]
    rows = bm25[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs).astype(np.float64)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    counts = {}
    for term in query.terms:                           # every analysed query term, in the collection or not
        counts[term] = counts.get(term, 0) + 1
    if counts:
        words = list(counts)
        qtf = np.array([counts[w] for w in words], dtype=np.float64)
        class_weight = np.concatenate([W_PREFIX * qtf, W_TRIGRAM * qtf])
        classes, members = variant_classes(words, index, state)
        docs, cls, part = class_bm25(index, classes, members, norm, 2 * len(words))
        scores += np.bincount(docs, weights=class_weight[cls] * part, minlength=index.n_docs)
        matched[docs[class_weight[cls] > 0]] = True
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
