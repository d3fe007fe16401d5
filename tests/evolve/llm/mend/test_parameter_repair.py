"""A helper copied without a parameter its body still reads (NameError whenever it runs) gets the parameter back,
with the default of the helper it copies (evolve/llm/mend/parameters.py)."""
from __future__ import annotations

import numpy as np
import pytest

from evorank.evaluators.program.checks import static_check
from evorank.evolve.llm.directions import Direction
from evorank.evolve.llm.mend.parameters import restore_dropped_parameters
from evorank.evolve.llm.prompts import PromptTemplates
from evorank.evolve.llm.mend import fix_candidate
from evorank.evolve.llm.proposer import direction_donor

from block_programs import SEEDS, TinyIndex, exec_module, program

HELPER = "def boost(index, scale=2.0, floor=-1):\n    return scale * np.log1p(index.doc_len) + floor\n\n\n"
DONOR = ("direction prior", program(HELPER))
CALLER = "def prepare(index):\n    return boost(index)\n\n\ndef score(query, index, state):\n    return state + 0.0\n"


def test_a_dropped_parameter_is_given_back_with_the_donors_default_and_the_program_runs():
    code = program("def boost(index):\n    return scale * np.log1p(index.doc_len) + floor\n\n\n" + CALLER)
    with pytest.raises(NameError):
        exec_module(code)["prepare"](TinyIndex())
    fix = restore_dropped_parameters(code, [DONOR, *SEEDS])
    assert fix is not None
    assert "def boost(index, floor=-1, scale=2.0):" in fix.source
    assert fix.description == "gave back boost(): floor, scale (parameter of boost in direction prior)"
    static_check(fix.source)
    index = TinyIndex()
    assert np.allclose(exec_module(fix.source)["prepare"](index), 2.0 * np.log1p(index.doc_len) - 1)


@pytest.mark.parametrize("signature, expected", [
    ("def boost():", "def boost(scale=2.0):"),
    ("def boost(index, k=1):", "def boost(index, k=1, scale=2.0):"),
    ("def boost(index: object):", "def boost(index: object, scale=2.0):"),
])
def test_the_parameter_goes_after_the_last_one_whatever_the_signature(signature, expected):
    code = program(f"{signature}\n    return scale\n\n\n")
    fix = restore_dropped_parameters(code, [DONOR])
    assert fix is not None and expected in fix.source
    static_check(fix.source)


@pytest.mark.parametrize("block", [
    # bound in the function: runs (or fails for another reason)
    "def boost(index):\n    scale = 3.0\n    return scale * index.doc_len\n",
    # a module constant of that name: runs
    "scale = 3.0\n\n\ndef boost(index):\n    return scale * index.doc_len\n",
    # the donor's function of another name
    "def lift(index):\n    return scale * index.doc_len\n",
    # *args/**kwargs: where the parameter would go is not plain
    "def boost(index, **options):\n    return scale * index.doc_len\n",
    # a name the donor's signature does not have
    "def boost(index):\n    return weight * index.doc_len\n",
])
def test_programs_that_run_or_have_no_single_reading_are_left_alone(block):
    assert restore_dropped_parameters(program(block), [DONOR, *SEEDS]) is None


def test_a_default_that_is_not_a_literal_is_not_copied():
    donor = ("direction x", program("def boost(index, scale=np.pi):\n    return scale\n"))
    assert restore_dropped_parameters(program("def boost(index):\n    return scale\n"), [donor]) is None


def test_the_variants_helper_copied_without_length_runs_after_the_mend():
    """A reply that copies ``variant_terms`` with ``length`` dropped (NameError when it runs); with the variants
    direction as the first donor the candidate gets ``length=5`` back and nothing else."""
    variants = PromptTemplates.load().directions()["variants"]
    copied = variants.code.replace("def variant_terms(query, classes, length=5):",
                                   "def variant_terms(query, classes):")
    assert copied != variants.code
    code = program(copied + "\n\n" + variants.example)
    source, note = fix_candidate(code, [direction_donor(variants), *SEEDS])
    assert note == "gave back variant_terms(): length (parameter of variant_terms in direction variants)"
    assert "def variant_terms(query, classes, length=5):" in source
    static_check(source)


def test_the_first_donor_defining_the_function_gives_the_default():
    first = ("direction a", program("def boost(index, scale=5.0):\n    return scale\n"))
    fix = restore_dropped_parameters(program("def boost(index):\n    return scale\n"), [first, DONOR])
    assert fix is not None and "scale=5.0" in fix.source and "direction a" in fix.description


def test_a_direction_without_code_donates_nothing():
    empty = direction_donor(Direction("none", "prose only"))
    assert restore_dropped_parameters(program("def boost(index):\n    return scale\n"), [empty]) is None

