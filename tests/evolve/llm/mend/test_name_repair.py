"""Name repairs: a candidate that reads a name it never defines gets the definition the prompt's programs have."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evorank.evaluators.program.checks import static_check
from evorank.evolve.llm.mend.names import MODULE_IMPORTS, borrow_missing_names

from block_programs import SEEDS, exec_module as run, program


def test_a_constant_of_another_program_is_defined_at_the_top_of_the_block():
    code = program("K1 = 0.9\n\n\ndef prepare(index):\n    return index.df / (MU + K1)\n\n\n"
                   "def score(query, index, state):\n    return state\n")
    fix = borrow_missing_names(code, SEEDS)
    assert fix is not None and fix.names == ("MU",)
    assert "# EVOLVE-BLOCK-START\nMU = 2000.0\n\nK1 = 0.9\n" in fix.source
    assert fix.description == "defined MU from seed ql_dirichlet"
    static_check(fix.source)
    assert run(fix.source)["MU"] == 2000.0


def test_a_value_made_in_prepare_and_read_in_score_is_made_again_where_it_is_needed():
    code = program("def prepare(index):\n    td = index.term_doc\n    tf = td.data\n    return tf\n\n\n"
                   "def score(query, index, state):\n    rows = state[query.term_ids]\n"
                   "    return rows * tf.sum()\n")
    fix = borrow_missing_names(code, SEEDS)
    assert fix is not None and fix.names == ("tf",)
    # tf needs td, which score does not have either: both, in order, before the first statement that reads tf
    assert ("    rows = state[query.term_ids]\n    td = index.term_doc\n    tf = td.data\n"
            "    return rows * tf.sum()\n") in fix.source
    assert fix.description == "defined td from its prepare(), tf from its prepare()"


def test_a_local_of_another_program_is_borrowed_when_what_it_reads_exists():
    code = program("def prepare(index):\n    td = index.term_doc\n    w = np.log1p(td.data)\n"
                   "    return w[term_of_posting]\n\n\ndef score(query, index, state):\n    return state\n")
    fix = borrow_missing_names(code, SEEDS)
    assert fix is not None and "term_of_posting from seed ql_dirichlet prepare()" in fix.description
    lines = fix.source.splitlines()
    assert lines.index("    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))") \
        == lines.index("    return w[term_of_posting]") - 1


@pytest.mark.parametrize("name,attr,line", [("sparse", "csr_matrix", "import scipy.sparse as sparse"),
                                            ("math", "sqrt", "import math")])
def test_an_allowed_module_used_without_its_import_is_imported(name, attr, line):
    code = program(f"def score(query, index, state):\n    return {name}.{attr}(state)\n")
    fix = borrow_missing_names(code, [])
    assert fix is not None and f"# EVOLVE-BLOCK-START\n{line}\n\n" in fix.source
    static_check(fix.source)
    assert MODULE_IMPORTS["np"] == "import numpy as np"


def test_a_missing_name_without_a_definition_stays_missing_and_the_others_are_added():
    # query does not exist in prepare(); a donor defining it elsewhere does not help; MU has a definition
    code = program("def prepare(index):\n    q = query.term_ids\n    return MU * q\n\n\n"
                   "def score(query, index, state):\n    return state\n")
    fix = borrow_missing_names(code, SEEDS)
    assert fix.names == ("MU",) and "MU = " in fix.source and "query" not in fix.description
    # so the program fails on the name nothing defines, not on the one trusted code could add
    nothing = program("def prepare(index):\n    return query.term_ids\n\n\ndef score(query, index, state):\n"
                      "    return state\n")
    assert borrow_missing_names(nothing, SEEDS) is None


def test_names_bound_anywhere_in_the_function_or_in_its_comprehensions_are_not_missing():
    code = program("def score(query, index, state):\n    total = 0.0\n    for t in query.term_ids:\n"
                   "        if t > 0:\n            total += previous\n        previous = t\n"
                   "    return np.array([k * k for k in range(3)]) + total + (lambda x: x)(1)\n")
    assert borrow_missing_names(code, SEEDS) is None


def test_a_definition_that_reads_its_own_name_is_never_borrowed():
    donor = program("def prepare(index):\n    w = w * 2\n    return w\n")
    code = program("def score(query, index, state):\n    return w\n")
    assert borrow_missing_names(code, [("program 7", donor)]) is None


def test_a_program_that_does_not_parse_is_left_to_the_static_check():
    assert borrow_missing_names(program("def score(query, index, state):\n    return (\n"), SEEDS) is None


def test_a_reply_that_uses_a_seeds_constant_runs_with_that_definition(tmp_path, tiny_collection, monkeypatch):
    """Through the engine and the scripted server: a BM25 parent, a reply that takes MU from the
    query-likelihood seed without defining it. The candidate is evaluated with MU borrowed, runs, and says so."""
    from evorank.archive import RunStore
    from fake_openai import FakeOpenAI
    from run_helpers import diff, make_config, run_engine

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    reply = diff("    scores = rows.T @ query.qtf.astype(np.float32)",
                 "    scores = rows.T @ query.qtf.astype(np.float32) * (1.0 + 1.0 / MU)", (100, 20))
    with FakeOpenAI([reply] * 4) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=4,
                          seeds=["bm25", "ql_dirichlet"], operator_mix={"diff": 1.0}, repair_rounds=0)
        run_engine(cfg, tiny_collection)
    with RunStore.open(Path(cfg.out), readonly=True) as store:
        edited = [p for p in store.programs() if p.operator == "diff" and "/ MU)" in p.code]
    assert edited and all(p.status != "failed" for p in edited), [(p.failure_reason, p.failure_detail) for p in edited]
    first = min(edited, key=lambda p: p.id)
    # it ran (a factor common to every document ranks as its parent does: a no-op, not an elite)
    assert (first.status == "accepted" or first.failure_reason == "no_op") and \
        "# EVOLVE-BLOCK-START\nMU = 2000.0\n" in first.code
    assert first.features["trusted_edits"] == "defined MU from seed ql_dirichlet"


def test_a_candidate_nested_too_deeply_to_read_is_left_as_the_model_wrote_it():
    from evorank.evolve.llm.mend import fix_candidate

    deep = program("def score(query, index, state):\n    return MU * (" + " + ".join(["state"] * 20000) + ")\n")
    source, note = fix_candidate(deep, SEEDS)
    assert (source, note) == (deep, None) or note == "defined MU from seed ql_dirichlet"


def test_each_name_is_looked_for_once_per_statement_however_many_donors_define_it(monkeypatch):
    from evorank.evolve.llm.mend import names as name_repair

    # 8 donors define a chain of 60 names that ends in one nothing defines; tried naively, every donor's n0 would
    # retry every donor's n1, and so on (8**depth look-ups)
    chain = "".join(f"    n{i} = n{i + 1} + 1\n" for i in range(60))
    donors = [(f"program {k}", program(f"def prepare(index):\n{chain}    return n0\n")) for k in range(8)]
    code = program("def score(query, index, state):\n    return n0\n")
    calls = []
    original = name_repair._Borrower.borrow

    def counted(self, name, local, out, depth=0):
        calls.append(name)
        return original(self, name, local, out, depth)

    monkeypatch.setattr(name_repair._Borrower, "borrow", counted)
    assert borrow_missing_names(code, donors) is None
    assert len(calls) <= 8 * 6  # each of the names within the depth limit, once per donor that defines it


def test_a_respelled_constant_gets_the_definition_of_the_name_it_respells():
    # `mu` in a program shown the query-likelihood seed's MU
    code = program("def prepare(index):\n    return index.doc_len / (index.doc_len + mu)\n\n\n"
                   "def score(query, index, state):\n    return state\n")
    fix = borrow_missing_names(code, SEEDS)
    assert fix is not None and fix.description == "defined mu from seed ql_dirichlet (spelled MU)"
    assert run(fix.source)["mu"] == 2000.0


def test_a_renamed_constant_in_a_donors_statement_gets_that_constants_definition():
    # the seed's formula with MU renamed sat_threshold, never defined
    code = program(
        "def prepare(index):\n    td = index.term_doc\n"
        "    p_collection = (index.cf + 1.0) / (index.total_tokens + 1.0)\n"
        "    tf = td.data.astype(np.float32)\n"
        "    term_of_posting = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))\n"
        "    dl = index.doc_len[td.indices]\n"
        "    weights = np.log1p(tf / (sat_threshold * p_collection[term_of_posting])) + "
        "np.log(sat_threshold / (dl + sat_threshold))\n"
        "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)\n\n\n"
        "def score(query, index, state):\n    return state\n")
    fix = borrow_missing_names(code, SEEDS)
    assert fix is not None and fix.description == "defined sat_threshold from seed ql_dirichlet (renamed from MU)"
    assert run(fix.source)["sat_threshold"] == 2000.0


def test_a_missing_name_in_a_statement_unlike_any_donors_is_not_taken_for_a_rename():
    # same structure as the seed's statement, but two names differ: no single name to stand in for
    code = program("def prepare(index):\n    td = index.term_doc\n    dl = index.doc_len[td.indices]\n"
                   "    w = np.log1p(td.data / (sat * other[dl])) + np.log(sat / (dl + sat))\n    return w\n\n\n"
                   "def score(query, index, state):\n    return state\n")
    assert borrow_missing_names(code, SEEDS) is None


def test_a_helper_function_called_but_never_copied_is_defined_with_what_it_reads():
    """A donor's module-level function the candidate calls without defining it comes whole, at the top of the
    block, with the donor's constant it reads; the donor's other functions stay out."""
    donor = program("ALPHA = 0.3\n\n\ndef bonus(d):\n    return np.log1p(np.exp(-d) / ALPHA)\n\n\n"
                    "def unused(x):\n    return x\n")
    code = program("def score(query, index, state):\n    return state + bonus(state)\n")
    fix = borrow_missing_names(code, [("direction proximity", donor)])
    assert fix is not None and fix.names == ("bonus",)
    assert fix.description == "defined ALPHA from direction proximity, bonus from direction proximity (function)"
    assert "def unused" not in fix.source and fix.source.index("ALPHA = 0.3") < fix.source.index("def bonus(d):")
    static_check(fix.source)
    assert run(fix.source)["score"](None, None, 1.0) == pytest.approx(1.0 + np.log1p(np.exp(-1.0) / 0.3))


def test_a_helper_function_reading_a_name_nobody_defines_is_not_borrowed():
    donor = program("def bonus(d):\n    return d * UNKNOWN_SCALE\n")
    code = program("def score(query, index, state):\n    return bonus(state)\n")
    assert borrow_missing_names(code, [("program 3", donor)]) is None


def test_a_recursive_helper_is_borrowed_once():
    donor = program("def depth(n):\n    return 0 if n <= 0 else 1 + depth(n - 1)\n")
    code = program("def score(query, index, state):\n    return state + depth(3)\n")
    fix = borrow_missing_names(code, [("program 3", donor)])
    assert fix is not None and fix.source.count("def depth(n):") == 1 and run(fix.source)["score"](0, 0, 1) == 4


def test_a_function_is_never_taken_for_a_respelled_name():
    donor = program("def Bonus(d):\n    return d\n")
    code = program("def score(query, index, state):\n    return bonus(state)\n")
    assert borrow_missing_names(code, [("program 3", donor)]) is None
