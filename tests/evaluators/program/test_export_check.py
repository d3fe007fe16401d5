"""The exportable subset (evaluators/program/export_check.py): every program evorank ships or writes itself stays
within it, and what an exported scorer must not do is refused with its line and rule."""
import importlib
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evorank.evaluators.program.checks import check_source
from evorank.evaluators.program.export_check import MODULE_MEMBERS, verify_exportable
from evorank.evaluators.program.payload import MAX_LITERAL_CHARS, over_budget
from evorank.evaluators.program.source import contract_text, seed_path, split_block
from evorank.evolve.llm.prompts import PromptTemplates
from evorank.evolve.offline.mutator import mutate
from evorank.evolve.offline.splice import SPLICE_WEIGHTS, splice
from evorank.threadsafe_ast import parse_ast

REPO = Path(__file__).resolve().parents[3]
BM25 = seed_path("bm25").read_text(encoding="utf-8")
QL = seed_path("ql_dirichlet").read_text(encoding="utf-8")
SPLIT = split_block(BM25)


def with_block(block: str) -> str:
    return SPLIT.join(textwrap.dedent(block).lstrip("\n"))


def shipped_programs() -> dict[str, str]:
    """Every program evorank ships or writes itself: seeds, examples, each direction's program, the offline
    mutator's splices (every kind and form, on both seeds) and a walk of its point edits and splices."""
    programs = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "seeds").glob("*.py")
                if p.name != "__init__.py"}
    programs |= {f"examples/{p.name}": p.read_text(encoding="utf-8") for p in (REPO / "examples").glob("*.py")
                 if p.name != "__init__.py"}
    for name, direction in PromptTemplates.load().directions().items():
        programs[f"direction {name}"] = SPLIT.join(direction.program_block.rstrip("\n") + "\n")
    for seed_name, seed in (("bm25", BM25), ("ql", QL)):
        for op in SPLICE_WEIGHTS:
            for k in range(4):  # the draws cover each kind's forms
                programs[f"{seed_name} {op} {k}"] = splice(seed, np.random.default_rng(k), op).source
        rng, source = np.random.default_rng(7), seed
        for step in range(25):
            mutation = mutate(source, rng)
            if mutation is not None:
                source = mutation.source
                programs[f"{seed_name} walk {step}"] = source
    return programs


@pytest.fixture(scope="module")
def shipped():
    return shipped_programs()


def test_every_shipped_and_generated_program_is_exportable_and_well_within_the_literal_budget(shipped):
    assert len(shipped) > 80
    for name, source in shipped.items():
        assert verify_exportable(source) == [], (name, verify_exportable(source)[:3])
        assert check_source(source).ok, (name, check_source(source).violations[:3])
        # a long offline lineage (channels spliced in, constants tuned) carries more than one program does
        assert over_budget(parse_ast(source), MAX_LITERAL_CHARS // (2 if " walk " in name else 4)) is None, name


def test_the_contract_states_the_literal_budget_and_the_subset():
    text = " ".join(contract_text().split())
    assert f"at most {MAX_LITERAL_CHARS} characters of literal numbers and strings" in text
    assert "Keep programs exportable" in text and "functools.lru_cache" in text


def test_every_allowed_module_member_exists():
    """The lists name what the installed numpy/scipy have (a stale name would be refused as unknown anyway)."""
    for module, members in MODULE_MEMBERS.items():
        mod = importlib.import_module(module)
        assert [m for m in sorted(members) if not hasattr(mod, m)] == [], module


def rules(block: str) -> list[str]:
    return [v.reason for v in verify_exportable(with_block(block))]


@pytest.mark.parametrize("block, rule", [
    # the four escape families
    ("""
     import functools
     import heapq
     def prepare(index):
         def f():
             pass
         functools.update_wrapper(f, heapq.nlargest, assigned=(), updated=("_" * 2 + "globals" + "_" * 2,))
         return None
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:module functools.update_wrapper"),
    ("""
     from functools import wraps
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:import functools.wraps"),
    ("""
     def __getattr__(name):
         return name
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:name __getattr__"),
    ("""
     class Raw:
         pass
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:construct ClassDef"),
    ("""
     def score(query, index, state):
         cls = type("R", (), {})
         return np.zeros(index.n_docs)
     """, "export:name type"),
    ("""
     import dataclasses
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:import dataclasses"),
    ("""
     def score(query, index, state):
         return np.frombuffer(bytes(8 * index.n_docs))
     """, "export:module numpy.frombuffer"),
    ("""
     def score(query, index, state):
         return np.ndarray((index.n_docs,), buffer=bytes(8 * index.n_docs))
     """, "export:module numpy.ndarray"),
    # builtins, attributes, modules
    ("""
     def score(query, index, state):
         return getattr(np, "zeros")(index.n_docs)
     """, "export:name getattr"),
    ("""
     def score(query, index, state):
         print(id(index))
         return np.zeros(index.n_docs)
     """, "export:name print"),
    ("""
     def score(query, index, state):
         index.n_docs = 3
         return np.zeros(index.n_docs)
     """, "export:attribute n_docs"),
    ("""
     def score(query, index, state):
         s = np.zeros(index.n_docs)
         s.tofile("/tmp/x")
         return s
     """, "export:attribute tofile"),
    ("""
     def score(query, index, state):
         return np.zeros(index.n_docs) + len(index._vocab)
     """, "export:attribute _vocab"),
    ("""
     def score(query, index, state):
         m = np
         return m.zeros(index.n_docs)
     """, "export:module np"),
    ("""
     def score(query, np, state):
         return np.zeros(3)
     """, "export:name np"),
    ("""
     import math as np
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:import np"),
    ("""
     import os
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:import os"),
    ("""
     def score(query, index, state):
         return np.load("x.npy")
     """, "export:module numpy.load"),
    ("""
     def score(query, index, state):
         return np.zeros(index.n_docs) + len(UNDEFINED)
     """, "export:name UNDEFINED"),
    ("""
     def score(query, index, state):
         return np.zeros(index.n_docs) + len("_" + "_class")
     """, None),
    ("""
     def score(query, index, state):
         return np.zeros(index.n_docs) + len("__class__")
     """, "export:string"),
    ("""
     @staticmethod
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:decorator staticmethod"),
    ("""
     import functools
     @functools.lru_cache(maxsize=None)
     def weight(n):
         return 1.0 / n
     def score(query, index, state):
         return np.zeros(index.n_docs) + weight(3)
     """, None),
    ("""
     async def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:construct AsyncFunctionDef"),
    # sparse matrices: only the forms whose indices are in range
    ("""
     def prepare(index):
         td = index.term_doc
         return sp.csr_matrix((td.data, td.indices + 5, td.indptr), shape=td.shape)
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:sparse csr_matrix"),
    ("""
     def prepare(index):
         td = index.term_doc
         return sp.csr_matrix((td.data, td.indices, td.indptr), shape=(1, 1))
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:sparse csr_matrix"),
    ("""
     def prepare(index):
         triple = (index.term_doc.data, index.term_doc.indices, index.term_doc.indptr)
         return sp.csr_matrix(triple, shape=index.term_doc.shape)
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:sparse csr_matrix"),
    ("""
     def prepare(index):
         m = index.term_doc.copy()
         m.indices[0] = 10 ** 6
         return m
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:sparse write"),
    ("""
     def prepare(index):
         m = index.term_doc.copy()
         np.add.at(m.indices, 0, 10 ** 6)
         np.multiply(m.indptr, 2, out=m.indptr)
         m.indices.sort()
         return m
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, "export:sparse write"),
    ("""
     def prepare(index):
         td = index.term_doc
         rows = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
         a = sp.csr_matrix((td.data * 2.0, td.indices, td.indptr), shape=td.shape)
         b = sp.csr_matrix((td.data, (rows, td.indices)), shape=td.shape)
         return a + b
     def score(query, index, state):
         return np.zeros(index.n_docs)
     """, None),
])
def test_outside_the_subset_is_refused_with_line_and_rule(block, rule):
    found = rules(block)
    if rule is None:
        assert found == []
    else:
        assert rule in found, found
        first = next(v for v in verify_exportable(with_block(block)) if v.reason == rule)
        assert first.line > SPLIT.head.count("\n") and str(first).startswith(f"line {first.line}: ")


def test_literal_payload_is_bounded():
    table = ", ".join(str(1000 + i) for i in range(300))
    block = f"""
    RELEVANT = [{table}]
    def score(query, index, state):
        s = np.zeros(index.n_docs)
        s[np.asarray(RELEVANT) % index.n_docs] = 1.0
        return s
    """
    assert "export:literals" in rules(block)
    assert [v.reason for v in check_source(with_block(block), BM25).violations] == ["too_large:literals"]


def test_hidden_characters_are_refused():
    assert "export:control_character" in rules("B_NOTE = 0.3  # \u202e ; B = 0.95 \u2069\n")
    assert "export:control_character" in rules("# \x1b[2J\x1b[1;32mverified\x1b[0m\n")


def test_deep_or_huge_text_is_a_violation_not_an_exception():
    assert rules("x = " + "-" * 5000 + "1\n") == ["export:too_complex"]
    assert rules("x = " + "+".join(["1"] * 300) + "\n") == ["export:too_complex"]
    assert [v.reason for v in verify_exportable("x = 1\n" * 40_000)] == ["export:too_complex"]
    assert [v.reason for v in verify_exportable("def f(:\n")] == ["export:syntax"]
