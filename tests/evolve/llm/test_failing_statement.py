"""Statement repairs: finding the statement a failure names, and putting a reply's corrected lines in its place."""
from __future__ import annotations

import pytest

from evorank.evolve.llm.failing_statement import MARKER, failing_statement, marked_context, names_hint
from evorank.evolve.llm.replies import ReplyError, apply_statement_fix

PROGRAM = '''import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9


def prepare(index):
    idf = np.log1p(index.df)
    return sp.csr_matrix(
        (idf, index.term_doc.indices, index.term_doc.indptr))


def score(query, index, state):
    rows = state[query.term_ids]
    for t in query.term_ids:
        rows = rows * 1.0
    total = rows.sum(axis=0)
    return np.asarray(total).ravel()
# EVOLVE-BLOCK-END
'''


def detail(line, stage="score() on query '1'", error="ValueError"):
    return f"beir/x: {stage} raised {error} at line {line}\nprogram's error message (untrusted text):\n~~~~\nboom\n~~~~"


def test_the_statement_around_the_failing_line_with_its_function_and_the_names_before_it():
    st = failing_statement(PROGRAM, detail(18))
    assert (st.first, st.last, st.simple, st.context_first, st.context_last) == (18, 18, True, 14, 19)
    assert {"np", "sp", "K1", "prepare", "query", "index", "state", "rows", "t"} <= set(st.visible)
    assert "total" not in st.visible and "idf" not in st.visible  # later, or another function's
    assert "\n".join(PROGRAM.splitlines()[st.first - 1:st.last]).strip() == "total = rows.sum(axis=0)"
    shown = marked_context(PROGRAM, st)
    assert shown.startswith("def score(") and f"    total = rows.sum(axis=0)  {MARKER}" in shown
    assert shown.count(MARKER) == 1


def test_a_line_inside_a_multi_line_statement_names_the_whole_statement():
    st = failing_statement(PROGRAM, detail(11, "prepare()"))
    assert (st.first, st.last) == (10, 11)


@pytest.mark.parametrize("line", [2, 40])  # outside the block; past the end
def test_no_statement_repair_for_a_line_outside_the_block(line):
    assert failing_statement(PROGRAM, detail(line)) is None


def test_a_compound_header_is_the_failing_statement_but_cannot_be_replaced_alone():
    st = failing_statement(PROGRAM, detail(16))
    assert (st.first, st.last, st.simple) == (16, 16, False) and st.context_first == 14
    assert f"    for t in query.term_ids:  {MARKER}" in marked_context(PROGRAM, st)
    with pytest.raises(ReplyError) as e:
        apply_statement_fix(PROGRAM, 16, 16, "```python\nfor t in []:\n```", MARKER, alone=False)
    assert e.value.reason == "no_code"
    whole = f"```python\ndef score(query, index, state):  {MARKER}\n    return np.zeros(index.n_docs)\n```"
    source, applied = apply_statement_fix(PROGRAM, 16, 16, whole, MARKER, alone=False)
    assert applied == "full" and "return np.zeros(index.n_docs)" in source and MARKER not in source


def test_no_statement_without_a_line_or_for_a_program_that_does_not_parse():
    assert failing_statement(PROGRAM, "beir/x: score() on query '1' raised ValueError\n~~~~\nat line 18\n~~~~") is None
    assert failing_statement(PROGRAM.replace("K1 = 0.9", "K1 = ("), detail(18)) is None


def test_the_names_hint_says_which_name_is_missing_only_when_it_is_an_identifier():
    st = failing_statement(PROGRAM, detail(18))
    hint = names_hint(st, detail(18).replace("boom", "name 'idf' is not defined"))
    assert hint.startswith("`idf` does not exist there.") and "prepare() reaches score() only inside the state" in hint
    assert not names_hint(st, detail(18).replace("boom", "name 'a b' is not defined")).startswith("`")


def test_the_corrected_lines_replace_the_statement_indented_like_it():
    st = failing_statement(PROGRAM, detail(11, "prepare()"))
    reply = f"Here:\n```python\nw = idf[:3]  {MARKER}\nreturn sp.csr_matrix(w)\n```\n"
    source, applied = apply_statement_fix(PROGRAM, st.first, st.last, reply, MARKER)
    assert applied == "statement"
    assert "    idf = np.log1p(index.df)\n    w = idf[:3]\n    return sp.csr_matrix(w)\n\n\ndef score" in source
    assert MARKER not in source and source.count("\n") == PROGRAM.count("\n")


def test_a_reply_with_whole_functions_or_a_diff_is_applied_as_such():
    st = failing_statement(PROGRAM, detail(18))
    whole = "```python\ndef score(query, index, state):\n    return np.zeros(index.n_docs)\n```"
    source, applied = apply_statement_fix(PROGRAM, st.first, st.last, whole, MARKER)
    assert applied == "full" and "return np.zeros(index.n_docs)" in source and "total" not in source
    d = "<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 1.2\n>>>>>>> REPLACE"
    source, applied = apply_statement_fix(PROGRAM, st.first, st.last, d, MARKER)
    assert applied == "diff" and "K1 = 1.2" in source and "total = rows.sum(axis=0)" in source


@pytest.mark.parametrize("reply, reason", [
    (f"```python\n    total = rows.sum(axis=0)   {MARKER}\n```", "no_change"),
    ("I am not sure what to change.", "no_code"),
    ("```python\ntotal = rows.sum(", "truncated"),
    ("```python\n\n```", "no_code"),
])
def test_replies_that_give_no_new_statement(reply, reason):
    st = failing_statement(PROGRAM, detail(18))
    with pytest.raises(ReplyError) as e:
        apply_statement_fix(PROGRAM, st.first, st.last, reply, MARKER)
    assert e.value.reason == reason
