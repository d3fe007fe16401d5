"""Attribute repairs: an index or query attribute the contract lacks, rewritten to the one thing it can mean."""
from __future__ import annotations

import numpy as np

from evorank.evolve.llm.mend.attributes import contract_attributes, mend_attributes
from evorank.evolve.llm.mend import fix_candidate

from block_programs import SEEDS, TinyIndex, exec_module as run, program


def test_the_attribute_lists_are_the_contracts():
    attrs = contract_attributes()
    assert {"n_docs", "doc_len", "avg_doc_len", "term_doc", "posting_positions", "postings"} <= attrs["index"]
    assert {"term_ids", "qtf", "token_ids"} <= attrs["query"]
    assert "idf" not in attrs["index"]


def test_a_misspelt_attribute_with_one_close_contract_attribute_gets_it():
    # a near miss of the contract's name, AttributeError whenever it runs
    code = program("def prepare(index):\n    return index.postings_positions[:3]\n")
    fix = mend_attributes(code, [])
    assert fix is not None and fix.description == "rewrote index.postings_positions -> index.posting_positions"
    assert list(run(fix.source)["prepare"](TinyIndex())) == [0, 1, 2]


def test_a_name_that_is_not_close_enough_is_left_alone():
    # idf / df: 0.8, a different quantity; no program defines idf here
    code = program("def prepare(index):\n    return index.idf\n")
    assert mend_attributes(code, []) is None


def test_a_programs_own_value_read_through_index_is_that_value():
    code = program("MU, K1 = 2000.0, 0.9\n\n\ndef prepare(index):\n    return index.MU\n")
    fix = mend_attributes(code, [])
    assert fix is not None and "index.MU -> MU" in fix.description
    assert run(fix.source)["prepare"](TinyIndex()) == 2000.0


def test_a_per_term_array_called_through_index_is_indexed_and_borrowed_from_prepare():
    # index.idf(query.term_ids) in score, idf made in the seed's prepare()
    code = program("def prepare(index):\n    return index.term_doc\n\n\n"
                   "def score(query, index, state):\n    w = index.idf(query.term_ids)\n"
                   "    return state[query.term_ids].T @ w\n")
    source, note = fix_candidate(code, SEEDS)
    assert note is not None and "index.idf(...) -> idf[...]" in note and "idf from seed bm25 prepare()" in note
    ns = run(source)
    index = TinyIndex()

    class Query:
        term_ids = np.array([1])

    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    assert np.allclose(ns["score"](Query, index, ns["prepare"](index)), index.term_doc[[1]].T @ idf[[1]])


def test_a_number_of_the_index_subscripted_is_the_number():
    # index.avg_doc_len[td.indices]: a float subscripted, TypeError whenever it runs
    code = program("def prepare(index):\n    td = index.term_doc\n    return td.data - index.avg_doc_len[td.indices]\n")
    fix = mend_attributes(code, [])
    assert fix is not None and fix.description == "rewrote index.avg_doc_len[...] (a number)"
    index = TinyIndex()
    assert np.allclose(run(fix.source)["prepare"](index), index.term_doc.data - index.avg_doc_len)


def test_the_length_of_a_number_of_the_index_is_the_number():
    # 1.0 / np.sqrt(len(index.n_docs)), a TypeError whenever it runs
    code = program("def prepare(index):\n    return index.term_doc.data / np.sqrt(len(index.n_docs))\n")
    fix = mend_attributes(code, [])
    assert fix is not None and fix.description == "rewrote len(index.n_docs) (a number)"
    index = TinyIndex()
    assert np.allclose(run(fix.source)["prepare"](index), index.term_doc.data / np.sqrt(index.n_docs))
    # the length of an array of the index is left alone
    assert mend_attributes(program("def prepare(index):\n    return len(index.doc_len) + 0 * index.n_docs\n"), []) is None


def test_contract_attributes_and_code_outside_the_block_are_never_touched():
    code = ("import numpy as np\nX = object()\n\n# EVOLVE-BLOCK-START\n"
            "def prepare(index):\n    return index.doc_len * index.avg_doc_len + index.term_doc.sum()\n"
            "# EVOLVE-BLOCK-END\n")
    assert mend_attributes(code, []) is None
    for seed in SEEDS:
        assert mend_attributes(seed[1], SEEDS) is None


def test_non_ascii_text_before_an_edit_keeps_the_rewrite_in_place():
    code = program("def prepare(index):\n    s = 'é→x'; return index.postings_positions\n")
    fix = mend_attributes(code, [])
    assert fix is not None and "s = 'é→x'; return index.posting_positions\n" in fix.source


def test_a_module_named_twice_through_its_short_name_is_named_once():
    # sp.sparse.csr_matrix, refused by the static check as module 'scipy.sparse' attribute 'sparse'
    code = program("def prepare(index):\n    return sp.sparse.csr_matrix(index.term_doc)\n")
    fix = mend_attributes(code, [])
    assert fix is not None and fix.description == "rewrote sp.sparse -> sp"
    assert "    return sp.csr_matrix(index.term_doc)\n" in fix.source
    assert mend_attributes(program("def prepare(index):\n    return sp.csr_matrix(index.term_doc)\n"), []) is None
