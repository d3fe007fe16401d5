"""A local that shadows the helper it is computed from (``x = x(...)``, UnboundLocalError whenever it runs) gets
a name of its own (evolve/llm/mend/scope.py)."""
from __future__ import annotations

import numpy as np
import pytest

from evorank.evaluators.program.checks import static_check
from evorank.evolve.llm.mend import fix_candidate
from evorank.evolve.llm.mend.scope import rename_shadowing_locals

from block_programs import SEEDS, TinyIndex, TinyQuery, exec_module, program

HELPER = ("def boost(index):\n    return np.log1p(index.doc_len)\n\n\n")
SHADOWING = ("def prepare(index):\n    boost = boost(index)\n    return boost * 2.0\n\n\n"
             "def score(query, index, state):\n    return state + 0.0\n")


def test_a_local_named_after_the_module_helper_it_calls_is_renamed_and_then_runs():
    code = program(HELPER + SHADOWING)
    with pytest.raises(UnboundLocalError):
        exec_module(code)["prepare"](TinyIndex())
    fix = rename_shadowing_locals(code, [])
    assert fix is not None
    assert "boost_value = boost(index)" in fix.source and "return boost_value * 2.0" in fix.source
    assert fix.description == "renamed prepare(): boost = boost(...) -> boost_value = boost(...)"
    static_check(fix.source)
    index = TinyIndex()
    assert np.allclose(exec_module(fix.source)["prepare"](index), 2.0 * np.log1p(index.doc_len))


def test_a_helper_the_candidate_never_copied_is_renamed_then_borrowed_from_the_direction():
    """The direction's helper is only in a donor: renamed here, then the names mend brings the helper in."""
    direction = ("direction saturation", program(HELPER))
    code = program(SHADOWING)
    source, note = fix_candidate(code, [direction, *SEEDS])
    assert note is not None and note.startswith("renamed prepare(): boost = boost(...)") and "boost from direction" \
        in note
    static_check(source)
    ns = exec_module(source)
    index = TinyIndex()
    assert np.allclose(ns["score"](TinyQuery(), index, ns["prepare"](index)), 2.0 * np.log1p(index.doc_len))


def test_a_name_nothing_defines_at_module_level_is_left_alone():
    """Renaming would only turn UnboundLocalError into NameError: left for the repair round."""
    assert rename_shadowing_locals(program(SHADOWING), [("seed bm25", SEEDS[0][1])]) is None


@pytest.mark.parametrize("block", [
    # read in an earlier statement (raises there too, but which name it meant is not known)
    HELPER + "def prepare(index):\n    x = boost\n    boost = boost(index)\n    return boost\n",
    # bound before: runs
    HELPER + "def prepare(index):\n    boost = index.doc_len\n    boost = boost * 2\n    return boost\n",
    # a parameter of the same name: runs
    HELPER + "def prepare(index, boost=None):\n    boost = boost or 1.0\n    return boost\n",
    # declared global
    "K = 1.0\n\n\ndef prepare(index):\n    global K\n    K = K + 1.0\n    return K\n",
    # a different name on the left
    HELPER + "def prepare(index):\n    b = boost(index)\n    return b\n",
])
def test_programs_without_the_mistake_are_left_as_they_are(block):
    assert rename_shadowing_locals(program(block), []) is None


def test_every_later_use_follows_the_new_name_and_a_taken_name_is_not_reused():
    block = (HELPER + "def prepare(index):\n    boost_value = 1.0\n    boost = boost(index) + boost_value\n"
             "    for i in range(2):\n        boost = boost + i\n    return boost\n")
    fix = rename_shadowing_locals(program(block), [])
    assert fix is not None
    assert "boost_value2 = boost(index) + boost_value" in fix.source
    assert "boost_value2 = boost_value2 + i" in fix.source and "return boost_value2" in fix.source
    index = TinyIndex()
    assert np.allclose(exec_module(fix.source)["prepare"](index), np.log1p(index.doc_len) + 2.0)


def test_the_seeds_are_unchanged():
    for _, code in SEEDS:
        assert rename_shadowing_locals(code, SEEDS) is None
