"""Seeds against brute-force per-document reference implementations, and against Pyserini."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.index.index import build_arrays, Index
from evorank.evaluators.program.source import load_program, split_block
from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.ranking import make_queries, plain_scores, score_buffer, top_k

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "theta", "kappa", "lambda", "zeta"]


def bm25_reference(query_terms, doc_terms, all_docs, k1=0.9, b=0.4):
    n = len(all_docs)
    avgdl = sum(len(d) for d in all_docs) / n
    s, matched = 0.0, False
    for t in set(query_terms):
        qtf = query_terms.count(t)
        tf = doc_terms.count(t)
        if tf == 0:
            continue
        matched = True
        df = sum(1 for d in all_docs if t in d)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        s += qtf * idf * tf / (tf + k1 * (1 - b + b * len(doc_terms) / avgdl))
    return s if matched else -math.inf


def ql_reference(query_terms, doc_terms, all_docs, mu=2000.0):
    total = sum(len(d) for d in all_docs)
    s, matched = 0.0, False
    for t in set(query_terms):
        qtf = query_terms.count(t)
        tf = doc_terms.count(t)
        if tf == 0:
            continue
        matched = True
        cf = sum(d.count(t) for d in all_docs)
        pc = (cf + 1) / (total + 1)
        s += qtf * max(0.0, math.log(1 + tf / (mu * pc)) + math.log(mu / (len(doc_terms) + mu)))
    return s if matched else -math.inf


def _index_from_terms(docs: list[list[str]]) -> Index:
    arrays, doc_ids, terms, _, _ = build_arrays(((f"d{i}", " ".join(d)) for i, d in enumerate(docs)))
    meta = {"n_docs": len(doc_ids), "n_terms": len(terms), "total_tokens": int(arrays["doc_len"].sum()),
            "_terms": terms, "_doc_ids": doc_ids}
    return Index("random", arrays, meta)


collections = st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=30), min_size=1, max_size=25)
queries = st.lists(st.sampled_from(WORDS + ["unseen"]), min_size=1, max_size=6)


# A collection of empty documents has average length 0: the BM25 seed's per-document length normalisation
# is then 0/0 (NaN) for documents that have no posting to use it, as in Lucene; numpy warns about the division.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@pytest.mark.parametrize("seed,reference", [("bm25", bm25_reference), ("ql_dirichlet", ql_reference)])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=collections, query=queries)
def test_seed_equals_bruteforce(seed, reference, docs, query):
    # The analyzer stems; these words are their own stems, so terms survive analysis unchanged.
    index = _index_from_terms(docs)
    program = load_program(seed)
    (q,) = make_queries([("q", " ".join(query))], index)
    state = program.prepare(index)
    got = program.score(q, index, state)
    expected = np.array([reference(query, d, docs) for d in docs])
    assert got.shape == (len(docs),)
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=1e-6)


def test_top_k_breaks_ties_by_doc_number_even_at_the_cut():
    scores = np.array([1.0, 3.0, 2.0, 3.0, -np.inf, 2.0, 2.0, 0.5])
    idx, vals = top_k(scores, k=4)
    assert idx.tolist() == [1, 3, 2, 5] and vals.tolist() == [3.0, 3.0, 2.0, 2.0]
    idx, _ = top_k(scores, k=100)
    assert idx.tolist() == [1, 3, 2, 5, 6, 0, 7]  # -inf never retrieved
    assert top_k(np.full(5, -np.inf), 10)[0].size == 0


def test_seeds_keep_fixed_parts_outside_block():
    for name in ("bm25", "ql_dirichlet"):
        src = load_program(name).source
        parts = split_block(src)
        assert "def score" in parts.block and "import numpy" in parts.head and parts.tail.strip() == "# EVOLVE-BLOCK-END"
        assert parts.join() == src


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset,address", [("scifact", "beir/scifact/test"), ("nfcorpus", "beir/nfcorpus/test")])
def test_bm25_matches_pyserini_flat(shared_env, reference_scores, dataset, address):
    ref = reference_scores["bm25-flat"][dataset]
    result, _ = evaluate_on(load_program("bm25"), load_topics(address))
    assert abs(result.metrics["ndcg@10"] - ref["nDCG@10"]) <= 0.005, result.metrics
    assert abs(result.metrics["recall@100"] - ref["R@100"]) <= 0.01, result.metrics


@pytest.mark.shared_data
def test_ql_dirichlet_matches_lucene_on_scifact(shared_env):
    result, _ = evaluate_on(load_program("ql_dirichlet"), load_topics("beir/scifact/test"))
    assert abs(result.metrics["ndcg@10"] - 0.6663) <= 0.01, result.metrics


def test_plain_scores_validates_the_copy_and_reuses_the_buffer():
    buffer = score_buffer(4)
    program_scores = np.array([1, 2, 3, 4], dtype=np.int32)
    got = plain_scores(program_scores, 4, buffer)
    assert got is buffer and got.dtype == np.float64 and got.tolist() == [1.0, 2.0, 3.0, 4.0]
    program_scores[0] = 9  # the program keeping its array changes nothing already copied
    assert buffer[0] == 1.0
    assert plain_scores(np.array([True, False, True, False]), 4, buffer).tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ProgramError, match="2 NaN"):
        plain_scores(np.array([np.nan, -np.inf, np.nan, 1.0], dtype=np.float32), 4, buffer)
    with pytest.raises(ProgramError) as e:
        plain_scores(np.array([-np.inf, np.inf, 0.0, 1.0]), 4, buffer)
    assert e.value.reason == "invalid_scores:inf"
    assert plain_scores(np.full(4, -np.inf), 4, buffer).tolist() == [-np.inf] * 4  # nothing retrieved is valid
    assert plain_scores(np.zeros(0), 0).size == 0
    with pytest.raises(ProgramError) as e:
        plain_scores(np.zeros(4, dtype=np.complex128), 4, buffer)
    assert e.value.reason == "invalid_scores:dtype"


def test_query_likelihood_scores_are_float_for_a_query_without_a_vocabulary_term():
    """numpy's bincount of nothing is int64: the seed casts, so a program adding float evidence in place
    (``scores += ...``) runs on such queries."""
    from types import SimpleNamespace
    from block_programs import TinyIndex, exec_module

    seed = load_program("ql_dirichlet").source
    anchor = "    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0\n"
    assert anchor in seed
    ns = exec_module(seed.replace(anchor, "    scores += 0.5 * np.ones(index.n_docs)\n" + anchor))
    index = TinyIndex()
    state = ns["prepare"](index)
    query = SimpleNamespace(term_ids=np.zeros(0, dtype=np.int64), qtf=np.zeros(0))
    scores = ns["score"](query, index, state)
    assert scores.dtype == np.float64 and np.all(np.isneginf(scores))
