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

The classes come from the index's views of its vocabulary (``index.prefix_groups``, ``index.char_ngrams``: built
once per index, memory-mapped). ``prepare`` adds the term frequencies of each prefix group once (a groups x
documents matrix no larger than the postings), so a prefix class is its group's row less the query term's own
postings; a trigram class is found from the trigrams' term lists and its members' postings are summed per query.
The state is plain sparse matrices and arrays, which candidates with the same ``prepare`` share.
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


def prepare(index):
    """BM25 weights, and for every term of the vocabulary the BM25 weights of its prefix class and of its trigram
    class (terms x documents, like the postings); the prefix groups' term frequencies and the document
    normalisers serve query words the collection does not have."""
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = K1 * (1.0 - B + B * index.doc_len / max(index.avg_doc_len, 1e-12))  # avgdl is 0 if all docs are empty
    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    bm25 = sp.csr_matrix((idf[term_of_posting] * tf / (tf + norm[td.indices]), td.indices, td.indptr), shape=td.shape)
    groups = index.prefix_groups(PREFIX_LEN)
    group_tf = (groups.members @ td).tocsr()          # groups x documents: the group's summed tf
    group_tf.sort_indices()
    members = np.flatnonzero(groups.group >= 0)
    own_group = sp.csr_matrix((np.ones(len(members), dtype=np.float32), (members, groups.group[members])),
                              shape=(index.n_terms, group_tf.shape[0]))
    mine = sp.csr_matrix((np.ones(len(members), dtype=np.float32), (members, members)), shape=(index.n_terms,) * 2)
    prefix_tf = own_group @ group_tf - mine @ td       # P(t): its group less t itself
    return bm25, norm, group_tf, class_bm25(prefix_tf, norm), class_bm25(trigram_neighbours(index) @ td, norm)


def class_bm25(class_tf, norm):
    """terms x documents: BM25 of each term's class as one pseudo-term, from the class's summed tf."""
    m = class_tf.tocsr()
    m.eliminate_zeros()
    m.sort_indices()
    df = np.diff(m.indptr)
    idf = np.log1p((m.shape[1] - df + 0.5) / (df + 0.5))
    tf = m.data.astype(np.float64)
    return sp.csr_matrix((idf[np.repeat(np.arange(m.shape[0]), df)] * tf / (tf + norm[m.indices]), m.indices, m.indptr),
                         shape=m.shape)


def trigram_neighbours(index):
    """terms x terms, 1 where Dice(trigrams(t), trigrams(v)) >= DICE_MIN and v != t. Such a v shares at least
    need = ceil(c * len(t)) of t's trigrams, c = DICE_MIN / (2 - DICE_MIN), so k = min(3, need) of t's
    len - need + k rarest ones (prefix filtering): only terms sharing k of those are checked."""
    view = index.char_ngrams(3)
    grams = view.term_grams
    size = np.diff(grams.indptr)                       # distinct trigrams per term
    row = np.repeat(np.arange(index.n_terms), size)
    order = np.lexsort((np.diff(view.gram_terms.indptr)[grams.indices], row))  # each term's trigrams, rarest first
    c = DICE_MIN / (2.0 - DICE_MIN)
    need = np.ceil(c * size - 1e-9)
    k = np.minimum(3, need)
    first = np.arange(len(order)) - np.repeat(grams.indptr[:-1], size) < np.repeat(size - need + k, size)
    rare = sp.csr_matrix((np.ones(int(first.sum())), (row[order][first], grams.indices[order][first])),
                         shape=grams.shape)
    has = sp.csr_matrix((np.ones(len(view.gram_terms.data)), view.gram_terms.indices, view.gram_terms.indptr),
                        shape=view.gram_terms.shape)
    cand = (rare @ has).tocoo()
    t, v = cand.row.astype(np.int64), cand.col.astype(np.int64)
    ok = (cand.data >= k[t]) & (t != v) & (size[v] >= c * size[t] - 1e-9) & (c * size[v] <= size[t] + 1e-9)
    t, v = t[ok], v[ok]
    binary = sp.csr_matrix((np.ones(len(grams.data)), grams.indices, grams.indptr), shape=grams.shape)
    shared = np.asarray(binary[t].multiply(binary[v]).sum(axis=1)).ravel()
    similar = 2.0 * shared / (size[t] + size[v]) >= DICE_MIN
    return sp.csr_matrix((np.ones(int(similar.sum()), dtype=np.float32), (t[similar], v[similar])),
                         shape=(index.n_terms, index.n_terms))


def gather(indptr, rows):
    """Positions of the entries of the given rows of a CSR structure, row after row, and each row's length."""
    start, stop = indptr[rows].astype(np.int64), indptr[rows + 1].astype(np.int64)
    length = stop - start
    return np.repeat(start - np.cumsum(length) + length, length) + np.arange(length.sum()), length


def new_word_classes(words, new, index, group_tf, norm):
    """(class, document, weight) of the classes of words the collection does not have (positions ``new``): the
    prefix class is the whole prefix group, the trigram class the terms whose trigrams are similar enough, found
    at once for all of them (words x trigrams times trigrams x terms)."""
    m = len(words)
    group = index.prefix_groups(PREFIX_LEN).group_of([words[i] for i in new])
    pos, length = gather(group_tf.indptr, group[group >= 0])
    cls = [np.repeat(np.array(new, dtype=np.int64)[group >= 0], length)]
    docs, tf = [group_tf.indices[pos]], [group_tf.data[pos].astype(np.float64)]
    view = index.char_ngrams(3)
    ids = view.ids([words[i] for i in new])
    rows = np.repeat(np.arange(len(new)), [len(i) for i in ids])
    word_grams = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(ids))), shape=(len(new), len(view.grams)))
    has = sp.csr_matrix((np.ones(len(view.gram_terms.data)), view.gram_terms.indices, view.gram_terms.indptr),
                        shape=view.gram_terms.shape)      # distinct trigrams: counts replaced by 1
    shared = (word_grams @ has).tocoo()
    n_word_grams = np.array([len(view.grams_of(words[i])) for i in new], dtype=np.float64)
    similar = 2.0 * shared.data / (n_word_grams[shared.row] + np.diff(view.term_grams.indptr)[shared.col]) >= DICE_MIN
    word, term = np.array(new, dtype=np.int64)[shared.row[similar]], shared.col[similar].astype(np.int64)
    pos, length = gather(index.term_doc.indptr, term)     # the members' postings
    keys, slot = np.unique(np.repeat(m + word, length) * index.n_docs + index.term_doc.indices[pos],
                           return_inverse=True)
    cls.append(keys // index.n_docs)
    docs.append(keys % index.n_docs)
    tf.append(np.bincount(slot, weights=index.term_doc.data[pos], minlength=len(keys)))
    cls, docs, tf = np.concatenate(cls), np.concatenate(docs), np.concatenate(tf)
    df = np.bincount(cls, minlength=2 * m)
    idf = np.log1p((index.n_docs - df + 0.5) / (df + 0.5))
    return cls, docs, idf[cls] * tf / (tf + norm[docs])


def score(query, index, state):
    """Exact BM25 plus the prefix and trigram classes of every distinct query term, weighted below it."""
    bm25, norm, group_tf, prefix_bm25, trigram_bm25 = state
    at, length = gather(bm25.indptr, query.term_ids)
    docs = bm25.indices[at]
    scores = np.bincount(docs, weights=bm25.data[at] * np.repeat(query.qtf, length), minlength=index.n_docs)
    scores = scores.astype(np.float64)                 # bincount of no entries is int64
    matched = np.bincount(docs, minlength=index.n_docs) > 0
    counts = {}
    for term in query.terms:                           # every analysed query term, in the collection or not
        counts[term] = counts.get(term, 0) + 1
    if counts:
        words = list(counts)
        m = len(words)
        qtf = np.array([counts[w] for w in words], dtype=np.float64)
        class_weight = np.concatenate([W_PREFIX * qtf, W_TRIGRAM * qtf])
        own = np.array([index.term_id(w) for w in words], dtype=np.int64)
        known = np.flatnonzero(own >= 0)
        p_at, p_length = gather(prefix_bm25.indptr, own[known])
        t_at, t_length = gather(trigram_bm25.indptr, own[known])
        cls = np.concatenate([np.repeat(known, p_length), np.repeat(m + known, t_length)])
        docs = np.concatenate([prefix_bm25.indices[p_at], trigram_bm25.indices[t_at]])
        part = np.concatenate([prefix_bm25.data[p_at], trigram_bm25.data[t_at]])
        if len(known) < m:                             # classes of words the collection does not have
            more = new_word_classes(words, [i for i in range(m) if own[i] < 0], index, group_tf, norm)
            cls, docs, part = (np.concatenate([a, b]) for a, b in zip((cls, docs, part), more))
            order = np.argsort(cls, kind="stable")     # class by class, as the classes are numbered
            cls, docs, part = cls[order], docs[order], part[order]
        scores += np.bincount(docs, weights=class_weight[cls] * part, minlength=index.n_docs)
        matched[docs[class_weight[cls] > 0]] = True
    return np.where(matched, scores, -np.inf)
# EVOLVE-BLOCK-END
