"""Array levels read from the code, and element-wise operations between levels written with the gather they need."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from evorank.evaluators.program.checks import static_check
from evorank.evolve.llm.mend.array_kinds import (DOC, NUMBER, POSTING, QUERY_POSTING, QUERY_TERM, TERM, TERM_DOC,
                                        levels_before, lift_to_postings, module_levels)

from block_programs import REPO, TinyIndex, TinyQuery, exec_module, program


def run(code: str) -> np.ndarray:
    namespace = exec_module(code)
    index = TinyIndex()
    state = namespace["prepare"](index)
    return namespace["score"](TinyQuery(), index, state)


def test_the_seeds_levels_are_read_from_their_code_and_the_seeds_are_left_alone():
    for name in ("bm25", "ql_dirichlet"):
        code = (REPO / "seeds" / f"{name}.py").read_text()
        assert lift_to_postings(code) is None
        tree = ast.parse(code)
        prepare = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "prepare")
        levels = levels_before(prepare, prepare.end_lineno + 1, module_levels(tree))
        assert levels["td"] == TERM_DOC and levels["tf"] == POSTING and levels["weights"] == POSTING
        if name == "bm25":
            assert (levels["K1"], levels["idf"], levels["norm"]) == (NUMBER, TERM, DOC)
        else:
            assert (levels["MU"], levels["p_collection"], levels["dl"]) == (NUMBER, TERM, POSTING)


PREPARE_MIXED = program(
    "K1, B = 0.9, 0.4\n\n\n"
    "def prepare(index):\n"
    "    td = index.term_doc\n"
    "    idf = np.log1p(index.n_docs / index.df)\n"
    "    norm = K1 * (1 - B + B * index.doc_len / index.avg_doc_len)\n"
    "    tf = td.data\n"
    "    weights = tf / (tf + norm)  # per document meets per posting\n"
    "    weights *= idf\n"
    "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)\n\n\n"
    "def score(query, index, state):\n"
    "    rows = state[query.term_ids]\n"
    "    return np.bincount(rows.indices, weights=rows.data)\n")


def test_per_term_and_per_document_arrays_meeting_postings_are_gathered_to_them():
    with pytest.raises(ValueError, match="broadcast"):
        run(PREPARE_MIXED)
    lift = lift_to_postings(PREPARE_MIXED)
    assert lift is not None
    assert "    weights = tf / (tf + norm[index.term_doc.indices])\n" in lift.source
    assert "    weights *= np.repeat(idf, np.diff(index.term_doc.indptr))\n" in lift.source
    assert "np.bincount(rows.indices, weights=rows.data, minlength=index.n_docs)" in lift.source
    assert lift.description.startswith("brought to the postings: line 13: norm (per document); line 14: idf "
                                       "(per term); line 20: np.bincount(rows.indices, ...)")
    static_check(lift.source)
    scores = run(lift.source)
    # the same as gathering by hand: BM25-like weights, summed over the query's two terms, for all 4 documents
    index = TinyIndex()
    td = index.term_doc
    norm = 0.9 * (1 - 0.4 + 0.4 * index.doc_len / index.avg_doc_len)
    w = np.repeat(np.log1p(index.n_docs / index.df), index.df) * td.data / (td.data + norm[td.indices])
    expected = np.asarray(sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)[[0, 2]].sum(axis=0)).ravel()
    assert np.allclose(scores, expected)
    assert lift_to_postings(lift.source) is None  # nothing left to lift


def test_the_query_rows_postings_take_per_query_term_per_term_and_per_document_arrays():
    code = program(
        "def prepare(index):\n    return index.term_doc\n\n\n"
        "def score(query, index, state):\n"
        "    rows = state[query.term_ids]\n"
        "    idf = np.log1p(index.n_docs / index.df)\n"
        "    w = rows.data * query.qtf * idf / index.doc_len\n"
        "    return np.bincount(rows.indices, weights=w, minlength=index.n_docs)\n")
    lift = lift_to_postings(code)
    assert lift is not None
    assert ("    w = rows.data * np.repeat(query.qtf, np.diff(rows.indptr)) * "
            "np.repeat(idf[query.term_ids], np.diff(rows.indptr)) / index.doc_len[rows.indices]\n") in lift.source
    levels = [QUERY_TERM, TERM, DOC]
    assert [f"({lv})" in lift.description for lv in levels] == [True, True, True]
    assert run(lift.source).shape == (4,)


def test_what_a_function_of_the_block_returns_has_the_level_of_its_return_value():
    """The coordination direction's helper returns per-document counts; a query-row posting times it is gathered
    (``rows.data * matched_terms(query, index).astype(np.float32)`` raises "operands could not be
    broadcast"). A function whose returns differ in level says nothing."""
    helper = ("def matched_terms(query, index):\n    rows = index.term_doc[query.term_ids]\n"
              "    return np.bincount(rows.indices, minlength=index.n_docs)\n\n\n")
    body = ("def prepare(index):\n    return index.term_doc\n\n\n"
            "def score(query, index, state):\n    rows = state[query.term_ids]\n"
            "    weight = matched_terms(query, index).astype(np.float32)\n"
            "    w = rows.data * weight\n"
            "    return np.bincount(rows.indices, weights=w, minlength=index.n_docs)\n")
    code = program(helper + body)
    with pytest.raises(ValueError):
        run(code)
    lift = lift_to_postings(code)
    assert lift is not None and "    w = rows.data * weight[rows.indices]\n" in lift.source
    assert "weight (per document)" in lift.description
    index, query = TinyIndex(), TinyQuery()
    rows = index.term_doc[query.term_ids]
    coord = np.bincount(rows.indices, minlength=index.n_docs)
    expected = np.bincount(rows.indices, weights=rows.data * coord[rows.indices], minlength=index.n_docs)
    assert np.allclose(run(lift.source), expected)
    # scaled by a number made with Python's max
    scaled = body.replace("    w = rows.data * weight\n", "    w = rows.data * 1.0\n    w += 0.5 * weight / max(len(query.term_ids), 1)\n")
    lift = lift_to_postings(program(helper + scaled))
    assert lift is not None and "w += (0.5 * weight / max(len(query.term_ids), 1))[rows.indices]" in lift.source
    run(lift.source)
    mixed = helper.replace("    return np.bincount", "    if len(rows.indices) == 0:\n        return rows.data\n"
                                                     "    return np.bincount")
    assert lift_to_postings(program(mixed + body)) is None


@pytest.mark.parametrize("block", [
    # unknown levels are left alone: a name bound by unpacking a call, an axis reduction, a 2-D sum
    "def prepare(index):\n    a, b = index.postings(0)\n    return a * index.df\n\n\n"
    "def score(query, index, state):\n    return state\n",
    "def prepare(index):\n    td = index.term_doc\n    m = np.max(td.data, axis=0)\n    return td.data * m\n\n\n"
    "def score(query, index, state):\n    return state\n",
    # a per-term array times a per-document one: no level is the postings', so nothing to gather to
    "def prepare(index):\n    return index.df * index.doc_len\n\n\n"
    "def score(query, index, state):\n    return state\n",
])
def test_nothing_is_lifted_where_the_levels_are_unknown_or_neither_side_is_per_posting(block):
    assert lift_to_postings(program(block)) is None


def test_a_function_without_the_index_or_with_it_rebound_is_left_alone():
    code = program("def helper(tf, idf):\n    return tf * idf\n\n\n"
                   "def prepare(index):\n    index = index\n    return index.term_doc.data * index.df\n\n\n"
                   "def score(query, index, state):\n    return state\n")
    assert lift_to_postings(code) is None


def test_a_reply_that_mixes_levels_runs_with_the_gather_and_says_so(tmp_path, tiny_collection, monkeypatch):
    """Through the engine and the scripted server: a reply that multiplies the per-term idf into per-posting
    weights without bringing it to the postings is evaluated with the gather written in, and runs."""
    from evorank.archive import RunStore
    from fake_openai import FakeOpenAI
    from run_helpers import diff, make_config, run_engine

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    reply = diff("    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])",
                 "    weights = idf * tf / (tf + 1.2 * norm[td.indices])", (100, 20))
    with FakeOpenAI([reply]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=1,
                          operator_mix={"diff": 1.0}, repair_rounds=0)
        run_engine(cfg, tiny_collection)
    with RunStore.open(Path(cfg.out), readonly=True) as store:
        [edited] = [p for p in store.programs() if p.operator == "diff"]
    # it ran (with another saturation it ranks the tiny collection as its parent does: a no-op, not an elite)
    assert edited.status == "accepted" or edited.failure_reason == "no_op", (edited.failure_reason,
                                                                            edited.failure_detail)
    assert "    weights = np.repeat(idf, np.diff(index.term_doc.indptr)) * tf / (tf + 1.2 * norm[td.indices])" \
        in edited.code
    assert edited.features["trusted_edits"].startswith("brought to the postings: line ")


def test_the_arguments_of_numpys_element_wise_functions_are_gathered_to_the_postings():
    # np.maximum(tf, saturation_factor * idf) and np.clip(tf, 1e-6, None) in prepare()
    code = program("def prepare(index):\n    td = index.term_doc\n    idf = np.log1p(index.n_docs / index.df)\n"
                   "    tf = np.clip(td.data, 1e-6, None)\n    sat = np.maximum(tf, 1.5 * idf)\n"
                   "    w = np.where(tf > 1, sat, index.doc_len)\n"
                   "    return sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)\n\n\n"
                   "def score(query, index, state):\n    rows = state[query.term_ids]\n"
                   "    return np.bincount(rows.indices, weights=rows.data, minlength=index.n_docs)\n")
    with pytest.raises(ValueError, match="broadcast"):
        run(code)
    lift = lift_to_postings(code)
    assert lift is not None
    assert "sat = np.maximum(tf, np.repeat(1.5 * idf, np.diff(index.term_doc.indptr)))" in lift.source
    assert "w = np.where(tf > 1, sat, index.doc_len[index.term_doc.indices])" in lift.source
    index = TinyIndex()
    td = index.term_doc
    sat = np.maximum(td.data, np.repeat(1.5 * np.log1p(index.n_docs / index.df), index.df))
    w = np.where(td.data > 1, sat, index.doc_len[td.indices])
    expected = np.asarray(sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)[[0, 2]].sum(axis=0)).ravel()
    assert np.allclose(run(lift.source), expected)


def test_a_loop_reading_a_per_document_array_at_posting_positions_becomes_one_gathered_operation():
    # `for doc_idx in range(len(w)): w[doc_idx] *= norm[doc_idx]` in prepare() and again in score()
    code = program("def prepare(index):\n    td = index.term_doc\n    w = td.data * 1.0\n"
                   "    norm = 1.0 + index.doc_len / index.avg_doc_len\n"
                   "    for i in range(len(w)):\n        w[i] *= norm[i]\n"
                   "    return sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)\n\n\n"
                   "def score(query, index, state):\n    rows = state[query.term_ids]\n    w = rows.data * 1.0\n"
                   "    dl = index.doc_len\n"
                   "    for j in range(len(w)):\n        w[j] = w[j] / dl[j] + 1.0\n"
                   "    return np.bincount(rows.indices, weights=w, minlength=index.n_docs)\n")
    with pytest.raises(IndexError):
        run(code)
    lift = lift_to_postings(code)
    assert lift is not None and lift.description.count("a loop written as one operation") == 2
    assert "    w *= norm[index.term_doc.indices]\n    return" in lift.source
    assert "    w = w / dl[rows.indices] + 1.0\n    return" in lift.source
    static_check(lift.source)
    index = TinyIndex()
    td = index.term_doc
    w = td.data * (1.0 + index.doc_len / index.avg_doc_len)[td.indices]
    rows = sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)[[0, 2]]
    expected = np.bincount(rows.indices, weights=rows.data / index.doc_len[rows.indices] + 1.0, minlength=4)
    assert np.allclose(run(lift.source), expected)


@pytest.mark.parametrize("loop", [
    "    for i in range(len(w)):\n        w[i] *= tf[i]\n",  # both per posting: runs as written
    "    for i in range(len(norm)):\n        w[i] *= norm[i]\n",  # over the per-document array's length
    "    for i in range(len(w)):\n        w[i] *= norm[i] * i\n",  # the position itself is used
    "    for i in range(len(w)):\n        w[i] *= norm[i]\n        w[i] += 1\n",  # more than one statement
])
def test_other_loops_are_left_alone(loop):
    code = program("def prepare(index):\n    td = index.term_doc\n    tf = td.data\n    w = td.data * 1.0\n"
                   "    norm = 1.0 + index.doc_len / index.avg_doc_len\n" + loop +
                   "    return sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)\n\n\n"
                   "def score(query, index, state):\n    rows = state[query.term_ids]\n"
                   "    return np.bincount(rows.indices, weights=rows.data, minlength=index.n_docs)\n")
    assert lift_to_postings(code) is None
