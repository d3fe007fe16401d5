"""The index's and the query's term strings, token order, positions and fields equal a brute-force computation
from the raw text, on random small collections (titles or not, stopwords, repeats, possessives, long tokens)."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from evorank.evaluators.index.analyzer import STOPWORDS, Analyzer, tokenize
from evorank.evaluators.index.index import load_index
from evorank.evaluators.index.build import build_arrays, write_index
from evorank.evaluators.program.ranking import make_queries

WORDS = ("apple apples running runner ran the of and a bank banks banking river's rivers stream u.s.a "
         "3.14 h2o covid19 snake_case data databases base based").split() + ["x" * 300]


def random_docs(seed: int, n: int = 40):
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        title = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 4))) if rnd.random() < 0.6 else ""
        body = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 30)))
        docs.append((f"d{i}", title, body))
    return docs


def brute_tokens(text: str, analyzer: Analyzer) -> list[tuple[str, int]]:
    """(term, position) of every kept token: each tokenizer token takes a position, stopwords are dropped."""
    out = []
    for pos, tok in enumerate(tokenize(text)):
        if tok and tok not in STOPWORDS:
            out.append((analyzer.stem(tok), pos))
    return out


def make_index(docs, folder) -> Index:
    """Built, written and loaded (memory-mapped) as a collection's index is."""
    arrays, doc_ids, terms, warnings, has_titles = build_arrays(docs)
    write_index(folder, "random", "fp", arrays, doc_ids, terms, warnings, has_titles)
    return load_index(folder)


@pytest.mark.parametrize("seed", range(5))
def test_index_evidence_equals_brute_force(seed, tmp_path):
    docs = random_docs(seed)
    index = make_index(docs, tmp_path / "index")
    analyzer = Analyzer()
    per_doc, titles = [], []
    for _, title, body in docs:
        whole = brute_tokens(f"{title} {body}" if title else body, analyzer)
        per_doc.append(whole)
        titles.append(len(brute_tokens(title, analyzer)) if title else 0)
    # vocabulary: first-occurrence order, term_id round trip
    vocab = list(dict.fromkeys(t for toks in per_doc for t, _ in toks))
    assert index.terms == tuple(vocab) and index.n_terms == len(vocab)
    assert all(index.term_id(t) == i for i, t in enumerate(vocab)) and index.term_id("zzz-absent") == -1
    # token order and positions, per document
    for d, toks in enumerate(per_doc):
        ids, pos = index.doc_token_list(d)
        assert ids.tolist() == [vocab.index(t) for t, _ in toks] and pos.tolist() == [p for _, p in toks]
        assert index.doc_len[d] == len(toks)
    assert index.doc_token_ptr[-1] == len(index.doc_tokens) == index.total_tokens
    # positional postings aligned with term_doc
    td = index.term_doc
    for t, term in enumerate(vocab):
        expect = sorted((d, p) for d, toks in enumerate(per_doc) for tt, p in toks if tt == term)
        docs_t, pos_t = index.positions(t)
        assert list(zip(docs_t.tolist(), pos_t.tolist())) == expect
        for k in range(td.indptr[t], td.indptr[t + 1]):
            d = td.indices[k]
            ptr = index.posting_position_ptr
            assert index.posting_positions[ptr[k]:ptr[k + 1]].tolist() == [p for tt, p in per_doc[d] if tt == term]
            assert td.data[k] == ptr[k + 1] - ptr[k]
    # fields: title occurrences per posting, title and body lengths, per-field matrices
    title_counts = [Counter(t for t, _ in toks[:n]) for toks, n in zip(per_doc, titles)]
    for t, term in enumerate(vocab):
        for k in range(td.indptr[t], td.indptr[t + 1]):
            assert index.title_tf[k] == title_counts[td.indices[k]][term]
    assert index.title_len.tolist() == titles
    assert index.has_titles == any(title for _, title, _ in docs)
    title, body = index.field("title"), index.field("body")
    dense = td.toarray()
    assert np.array_equal(title.term_doc.toarray() + body.term_doc.toarray(), dense)
    assert np.array_equal(body.doc_len, index.doc_len - index.title_len)
    assert title.avg_doc_len == pytest.approx(np.mean(titles))
    # everything a program sees is read-only
    for a in (index.doc_tokens, index.doc_positions, index.posting_positions, index.doc_token_ptr,
              index.posting_position_ptr, index.title_tf, body.term_doc.data, body.doc_len):
        with pytest.raises(ValueError):
            a[0] = a[0]


@pytest.mark.parametrize("seed", range(3))
def test_query_evidence_equals_brute_force(seed, tmp_path):
    docs = random_docs(seed)
    index = make_index(docs, tmp_path / "index")
    analyzer = Analyzer()
    rnd = random.Random(100 + seed)
    texts = [" ".join(rnd.choice(WORDS + ["zebra", "unicorns", "The"]) for _ in range(rnd.randint(0, 8)))
             for _ in range(20)]
    for q, text in zip(make_queries([(f"q{i}", t) for i, t in enumerate(texts)], index), texts):
        toks = brute_tokens(text, analyzer)
        assert q.words == tuple(tokenize(text))  # lower-cased, before stopping and stemming
        assert q.terms == tuple(t for t, _ in toks)
        assert q.positions.tolist() == [p for _, p in toks]
        assert q.token_ids.tolist() == [index.term_id(t) for t, _ in toks]
        known = [index.term_id(t) for t, _ in toks if index.term_id(t) >= 0]
        assert q.term_ids.tolist() == list(dict.fromkeys(known))
        assert q.qtf.tolist() == [known.count(t) for t in dict.fromkeys(known)]
