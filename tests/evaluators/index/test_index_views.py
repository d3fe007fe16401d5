"""The vocabulary views (evaluators/index/views.py): prefix groups and character n-grams equal a brute-force
computation from the term strings (non-Latin letters, one-letter terms, repeated n-grams); built once and cached
beside the index, memory-mapped and read-only; built in memory where there is no folder (inside the sandbox);
the sizes a program names are found in its text; a program reading them runs in the sandbox."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from evorank.evaluators.index.build import build_arrays, write_index
from evorank.evaluators.index.index import Index, load_index
from evorank.evaluators.index.views import preload, views_named
from evorank.evaluators.program.ranking import make_queries
from evorank.evaluators.sandbox.runner import Limits, run_sandboxed

WORDS = ("protein proteins proteomic prot a ab banana bananas bandana nation national nationality über übermensch "
         "naïve 東京 東京都 aaaa aaaaa x").split()


def index_of(docs, folder=None) -> Index:
    arrays, doc_ids, terms, _, has_titles = build_arrays(docs)
    if folder is not None:
        write_index(folder, "views", "fp", arrays, doc_ids, terms, [], has_titles)
        return load_index(folder)
    meta = {"n_docs": len(doc_ids), "n_terms": len(terms), "total_tokens": int(arrays["doc_len"].sum()),
            "_terms": terms, "_doc_ids": doc_ids}
    return Index("views", arrays, meta)


def random_docs(seed: int):
    rnd = random.Random(seed)
    return [(f"d{i}", "", " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 12)))) for i in range(30)]


def grams(term: str, n: int) -> list[str]:
    padded = f"#{term}#"
    return [padded[i:i + n] for i in range(len(padded) - n + 1)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("on_disk", [False, True])
def test_views_equal_brute_force(seed, on_disk, tmp_path):
    index = index_of(random_docs(seed), tmp_path / "index" if on_disk else None)
    terms = index.terms
    for n in (1, 3, 5):
        pg = index.prefix_groups(n)
        by_prefix: dict[str, list[int]] = {}
        for t, s in enumerate(terms):
            if len(s) >= n:
                by_prefix.setdefault(s[:n], []).append(t)
        assert list(pg.prefixes) == sorted(by_prefix) and pg.members.shape == (len(by_prefix), index.n_terms)
        for g, prefix in enumerate(pg.prefixes):
            assert pg.members[g].indices.tolist() == by_prefix[prefix]
            assert pg.group_of(prefix + "zz") == g and all(pg.group[t] == g for t in by_prefix[prefix])
        assert [int(pg.group[t]) for t, s in enumerate(terms) if len(s) < n] == [-1] * sum(len(s) < n for s in terms)
        assert pg.group_of("q" * (n - 1)) == -1 and pg.group_of("qqqqqqqq") == -1
        assert pg.group_of(["zzzzzzzz", terms[0]]).tolist() == [-1, pg.group_of(terms[0])]
    for n in (2, 3, 4):
        cg = index.char_ngrams(n)
        all_grams = sorted({g for s in terms for g in grams(s, n)})
        assert list(cg.grams) == all_grams
        for t, s in enumerate(terms):
            row = cg.term_grams[t]
            counts = Counter(grams(s, n))
            assert {all_grams[g]: v for g, v in zip(row.indices, row.data)} == counts
        assert (cg.gram_terms != cg.term_grams.T).nnz == 0
        word = "proteinase"
        assert cg.grams_of(word) == tuple(sorted(set(grams(word, n))))
        assert [all_grams[i] for i in cg.ids(word)] == [g for g in cg.grams_of(word) if g in set(all_grams)]
        assert [a.tolist() for a in cg.ids([word, "qqq"])] == [cg.ids(word).tolist(), cg.ids("qqq").tolist()]
    with pytest.raises(ValueError, match="prefix_groups"):
        index.prefix_groups(0)
    with pytest.raises(ValueError, match="char_ngrams"):
        index.char_ngrams(3.0)


def test_views_are_cached_beside_the_index_and_read_only(tmp_path):
    folder = tmp_path / "index"
    index = index_of(random_docs(0), folder)
    cg = index.char_ngrams(3)
    assert index.char_ngrams(3) is cg  # kept in memory
    built = sorted(p.name for p in (folder / "views").iterdir())
    assert built == ["ngram-3-v1"]
    stamp = {p.name: p.stat().st_mtime_ns for p in (folder / "views" / "ngram-3-v1").iterdir()}
    again = load_index(folder).char_ngrams(3)  # a fresh load maps the cached files, building nothing
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "views" / "ngram-3-v1").iterdir()} == stamp
    assert (again.term_grams != cg.term_grams).nnz == 0 and list(again.grams) == list(cg.grams)
    for a in (again.term_grams.data, again.term_grams.indices, again.grams):
        with pytest.raises(ValueError):
            a[0] = a[0]


def test_the_sizes_a_program_names_are_found_in_its_text():
    source = ("LEN = 4\nN = 3\nN = 2\n\ndef prepare(index):\n    a = index.prefix_groups(LEN)\n"
              "    b = index.char_ngrams(N)\n    c = index.prefix_groups(6)\n    d = index.char_ngrams(k)\n"
              "    return index.prefix_groups(99)\n")
    assert views_named(source) == [("ngram", 2), ("ngram", 3), ("prefix", 4), ("prefix", 6)]
    assert views_named("def prepare(index:\n") == []


PROGRAM = '''import numpy as np

# EVOLVE-BLOCK-START
N = 3


def prepare(index):
    return np.diff(index.char_ngrams(N).term_grams.indptr).astype(np.float64)


def score(query, index, state):
    s = np.zeros(index.n_docs)
    groups = index.prefix_groups(4)
    for t in query.term_ids:
        docs, tf = index.postings(t)
        s[docs] += tf * state[t] + (groups.group[t] >= 0)
    return np.where(s > 0, s, -np.inf)
# EVOLVE-BLOCK-END
'''


def test_a_program_reads_the_views_in_the_sandbox(tmp_path):
    """Preloaded by the worker (as ``tasks.run_local_task`` does) or not (then built inside the jail, in memory),
    the views give the sandboxed program the rankings it gets in this process."""
    from evorank.evaluators.program.ranking import rank
    from evorank.evaluators.program.source import compile_program

    index = index_of(random_docs(1), tmp_path / "index")
    queries = make_queries([("q1", "proteins national"), ("q2", "banana über")], index)
    expected = rank(compile_program(PROGRAM), index, queries, 10)
    cold = run_sandboxed(PROGRAM, load_index(tmp_path / "index"), queries, 10, Limits(timeout_s=30))
    warm_index = load_index(tmp_path / "index")
    preload(warm_index, PROGRAM)
    assert sorted(warm_index._views) == [("ngram", 3), ("prefix", 4)]
    warm = run_sandboxed(PROGRAM, warm_index, queries, 10, Limits(timeout_s=30))
    for res in (cold, warm):
        assert res.ok, (res.reason, res.message)
        for a, b in zip(res.ranking.doc_idx, expected.doc_idx):
            assert np.array_equal(a, b)


def test_the_contracts_adjacency_examples(tmp_path):
    """contract.md's two bigram examples, run as written: adjacent positions ("cost of living" is no `cost live`
    pair, the stopword leaves a gap) and adjacent tokens (it is one: stopwords are not tokens)."""
    docs = [("d0", "", "cost of living"), ("d1", "", "living cost cost living"), ("d2", "", "the cost living"),
            ("d3", "", "cost")]
    index = index_of(docs)
    a, b = index.term_id("cost"), index.term_id("live")
    da, pa = index.positions(a)
    db, pb = index.positions(b)
    hits = np.isin((da.astype(np.int64) << 32) + pa + 1, (db.astype(np.int64) << 32) + pb)
    positional = np.bincount(da[hits], minlength=index.n_docs)
    docs_ab = np.intersect1d(index.postings(a)[0], index.postings(b)[0])
    ptr = index.doc_token_ptr
    n = ptr[docs_ab + 1] - ptr[docs_ab]
    tok = np.repeat(ptr[docs_ab] - np.cumsum(n) + n, n) + np.arange(n.sum())
    t = index.doc_tokens[tok]
    doc = np.repeat(docs_ab, n)
    hits = (t[:-1] == a) & (t[1:] == b) & (doc[:-1] == doc[1:])
    token_order = np.bincount(doc[:-1][hits], minlength=index.n_docs)
    assert positional.tolist() == [0, 1, 1, 0] and token_order.tolist() == [1, 1, 1, 0]
    (q,) = make_queries([("q", "cost of living cost living")], index)
    by_tokens = [(x, y) for x, y in zip(q.token_ids, q.token_ids[1:]) if x >= 0 and y >= 0]
    by_positions = [(x, y) for x, y, px, py in zip(q.token_ids, q.token_ids[1:], q.positions, q.positions[1:])
                    if x >= 0 and y >= 0 and py == px + 1]
    assert by_tokens == [(a, b), (b, a), (a, b)] and by_positions == [(b, a), (a, b)]
