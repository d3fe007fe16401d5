"""The offline mutator's view of a program: its EVOLVE-BLOCK as an AST, and what every part shares.

A parent is split into head, block and tail (:func:`evorank.evaluators.program.source.split_block`); only
the block is parsed with :mod:`ast` and edited, and :func:`format_block` writes it back with
:func:`ast.unparse`, so a child is always ``head + new block + tail`` with the parent's head and tail
byte-identical.

Also here, because the point edits, the crossover and the checks all use them: the result type
(:class:`Mutation`), the "this edit does not apply" signal (:class:`NoEdit`), the test hook
:data:`DEBUG`, and small helpers for numeric literals and one-line descriptions.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.source import split_block
from evorank.threadsafe_ast import parse_ast

CROSSOVER_OPERATOR = "offline:crossover"


@dataclass
class DebugFlags:
    """Test hooks of the offline mutator.

    ``strict``: an unexpected exception while analysing or editing (an analysis bug) propagates
    instead of counting as "this edit does not apply".
    """

    strict: bool = False


DEBUG = DebugFlags()


@dataclass
class Mutation:
    """One proposed child program."""

    source: str  # full program text: parent head + new block + parent tail
    operator: str  # one of OPERATORS, or "offline:a+b" when several point edits of different kinds were applied
    description: str  # one line, human readable, e.g. "B: 0.4 -> 0.55"

    @property
    def archive_operator(self) -> str:
        """The value for ``ProgramRecord.operator``: ``crossover`` or ``offline``."""
        return "crossover" if self.operator.startswith(CROSSOVER_OPERATOR) else "offline"


class NoEdit(Exception):
    """This edit kind does not apply to this program (or this draw); try another."""


@dataclass
class ParsedProgram:
    """A program split around its EVOLVE-BLOCK, with the block parsed."""

    head: str
    tail: str
    tree: ast.Module
    np: str | None  # the numpy alias the head imports (usually "np")
    outer_names: frozenset[str]  # names bound outside the block (imports, definitions in head/tail)


def parse_program(source: str, what: str = "parent") -> ParsedProgram:
    """Split ``source`` and parse its block. Raises ValueError (naming ``what``) when the program has
    no usable EVOLVE-BLOCK or the block does not parse."""
    try:
        parts = split_block(source)
    except ProgramError as e:
        raise ValueError(f"{what} program has no usable EVOLVE-BLOCK: {e}") from None
    try:
        tree = parse_ast(parts.block)
    except SyntaxError as e:
        raise ValueError(f"the EVOLVE-BLOCK of the {what} program does not parse: line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"the EVOLVE-BLOCK of the {what} program does not parse: {type(e).__name__}: {e}") from None
    np_alias, outer = None, set()
    for text in (parts.head, parts.tail):
        try:
            outer_tree = parse_ast(text)
        except SyntaxError:
            continue
        for node in ast.walk(outer_tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    bound = a.asname or a.name.split(".")[0]
                    outer.add(bound)
                    if isinstance(node, ast.Import) and a.name == "numpy":
                        np_alias = bound
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node in outer_tree.body:
                outer.add(node.name)
            elif isinstance(node, ast.Assign) and node in outer_tree.body:
                outer.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return ParsedProgram(parts.head, parts.tail, tree, np_alias, frozenset(outer))


def format_block(tree: ast.Module) -> str:
    """The block's text: one statement per line, two blank lines around functions and classes."""
    out: list[str] = []
    prev = None
    for stmt in tree.body:
        text = ast.unparse(stmt)
        if prev is not None:
            big = isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) or isinstance(prev, (ast.FunctionDef, ast.ClassDef))
            out.append("\n\n\n" if big else "\n")
        out.append(text)
        prev = stmt
    return "".join(out) + "\n"


def short_text(node_or_text, limit: int = 90) -> str:
    """An expression (or text) on one line, cut to ``limit`` characters, for descriptions."""
    text = node_or_text if isinstance(node_or_text, str) else ast.unparse(node_or_text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def names_in(tree: ast.AST) -> set[str]:
    """Every variable name read or written anywhere in ``tree``."""
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


# -- numeric literals ----------------------------------------------------------------------------

def is_num_const(node) -> bool:
    """``node`` is an int or float literal (not a bool)."""
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def signed_const(node) -> float | None:
    """The value of a numeric literal or of ``-literal``; None for anything else."""
    if is_num_const(node):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and is_num_const(node.operand):
        return -float(node.operand.value)
    return None


def number_node(v: float) -> ast.expr:
    """A float literal for ``v``, written ``-literal`` when negative (as a parser would produce it)."""
    v = float(v)
    return ast.UnaryOp(ast.USub(), ast.Constant(-v)) if v < 0 else ast.Constant(v)


def round_sig(v: float, digits: int = 4) -> float:
    """``v`` rounded to ``digits`` significant digits."""
    return float(f"{v:.{digits}g}")


def fmt_number(v: float) -> str:
    """A number as it appears in descriptions (``%g``)."""
    return f"{float(v):g}"
