"""Ranking programs: source text with an EVOLVE-BLOCK, compiled into ``prepare``/``score`` callables.

The contract shown to programs (and to the LLM) is ``contract.md`` beside this file.
This module only loads code; it does not make it safe to run (see ``evaluators.sandbox.runner``).
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evorank.evaluators.errors import ProgramError

BLOCK_START = "# EVOLVE-BLOCK-START"
BLOCK_END = "# EVOLVE-BLOCK-END"


def contract_text() -> str:
    """The Index/Query documentation, exactly as shown to the LLM."""
    return (resources.files("evorank.evaluators.program") / "contract.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class BlockSplit:
    """A program cut into the fixed text before the block, the evolvable block, and the text after."""

    head: str
    block: str
    tail: str

    def join(self, block: str | None = None) -> str:
        return self.head + (self.block if block is None else block) + self.tail

    def line_range(self) -> tuple[int, int]:
        """The first and last line of the block in the program (1-based, inclusive; markers excluded)."""
        first = self.head.count("\n") + 1
        return first, first + self.block.count("\n") - 1


def split_block(source: str) -> BlockSplit:
    """Split at the markers (the marker lines belong to head and tail). Raises ProgramError if absent."""
    start, end = source.find(BLOCK_START), source.find(BLOCK_END)
    if start < 0 or end < 0 or end < start or source.count(BLOCK_START) != 1 or source.count(BLOCK_END) != 1:
        raise ProgramError(
            "no_evolve_block",
            f"a ranking program needs exactly one '{BLOCK_START}' line followed by one '{BLOCK_END}' line",
        )
    head_end = source.index("\n", start) + 1 if "\n" in source[start:] else len(source)
    tail_start = source.rfind("\n", 0, end) + 1
    return BlockSplit(source[:head_end], source[head_end:tail_start], source[tail_start:])


def seed_path(name: str) -> Path:
    """Path of a shipped seed program by name (``bm25``, ``ql_dirichlet``)."""
    seeds = resources.files("evorank.seeds")
    p = Path(str(seeds / f"{name}.py"))
    if not p.is_file():
        known = sorted(x.name[:-3] for x in seeds.iterdir() if x.name.endswith(".py") and x.name != "__init__.py")
        raise ProgramError("unknown_seed", f"unknown seed {name!r}; shipped seeds: {', '.join(known)}")
    return p


@dataclass
class Program:
    """A compiled ranking program."""

    name: str
    source: str
    prepare: Callable[[Any], Any] | None
    score: Callable[[Any, Any, Any], np.ndarray]


def compile_source(source: str, name: str):
    """The module's code object; a syntax error becomes ``ProgramError("syntax_error")`` naming the line."""
    try:
        # dont_inherit: the program is compiled under its own __future__ imports only, not this module's
        # (``annotations`` would turn every annotation into a string that typing evaluates with eval).
        return compile(source, name, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise ProgramError("syntax_error", f"{name}, line {e.lineno}: {e.msg}") from None


def entry_points(namespace: dict) -> tuple[Callable[[Any], Any] | None, Callable[[Any, Any, Any], np.ndarray]]:
    """(prepare or None, score) from an executed program's namespace, or the contract error."""
    score = namespace.get("score")
    prepare = namespace.get("prepare")
    if not callable(score):
        raise ProgramError("missing_score", "the program defines no function score(query, index, state)")
    if prepare is not None and not callable(prepare):
        raise ProgramError("bad_prepare", "prepare must be a function prepare(index) -> state")
    return prepare, score


def compile_program(source: str, name: str = "<program>") -> Program:
    """Execute the module text in a fresh namespace and pick up ``prepare``/``score``."""
    code = compile_source(source, name)
    module = types.ModuleType("ranking_program")
    module.__file__ = name
    # dataclasses (and pickling) look the defining module up in sys.modules while the body runs.
    previous = sys.modules.get(module.__name__)
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
    except Exception as e:
        raise ProgramError(f"exception:{type(e).__name__}", f"importing the program raised {type(e).__name__}: {e}") from None
    finally:
        if previous is None:
            sys.modules.pop(module.__name__, None)
        else:
            sys.modules[module.__name__] = previous
    prepare, score = entry_points(module.__dict__)
    return Program(name, source, prepare, score)


def program_path(path: str | Path) -> Path:
    """The file of a program: ``path`` itself; for a bare seed name (``bm25``) the shipped seed; and for
    ``examples/<name>.py`` that does not exist relative to the current folder, the shipped example program
    (``importlib.resources.files("evorank.examples")``), so ``evorank eval examples/bm25f.py`` works anywhere."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and "/" not in str(path):
        p = seed_path(str(path))
    elif not p.exists() and len(p.parts) == 2 and p.parts[0] == "examples" and p.suffix == ".py":
        shipped = Path(str(resources.files("evorank.examples") / p.name))
        if shipped.is_file():
            p = shipped
    if not p.is_file():
        raise ProgramError("missing_file", f"program file {p} does not exist")
    return p


def load_program(path: str | Path) -> Program:
    """Compile a program file; a bare seed name (``bm25``) means the shipped seed."""
    p = program_path(path)
    return compile_program(p.read_text(encoding="utf-8"), name=str(p))
