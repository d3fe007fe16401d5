"""Statement repairs: a program that raised at a known line is fixed where it failed, in a short request.

Asked to fix a whole EVOLVE-BLOCK at the end of a long conversation, small models mostly send the block back as it
was: Qwen2.5-Coder-1.5B on ``quick`` returned it unchanged in 10 of 16 repair requests and fixed none of the other
6 (``bench/llm_funnel.py``, bench/RESULTS.md). A statement repair is a fresh, short request: the one function the
program failed in, the failing statement marked, and the facts the error is about (array lengths for a shape
error, the names that exist for a NameError). The reply is that function corrected, or the statement alone, whose
lines then replace the statement's (:func:`evorank.evolve.llm.replies.apply_statement_fix`).

Everything here is read from trusted data: the line number from the trusted first line of the failure detail
(``<collection>: score() ... raised ValueError at line 48``, written by the evaluator) and the text from the
archived code of the failed program, parsed, never run.
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from evorank.evaluators.program.source import ProgramError, split_block
from evorank.threadsafe_ast import parse_ast

from .replies import defined_names

#: Appended to the failing statement's first line where it is shown; removed again from a reply that copies it.
MARKER = "# <-- FAILS HERE"

_AT_LINE = re.compile(r" at line (\d+)$")


@dataclass(frozen=True)
class FailingStatement:
    """The innermost statement that contains the failing line, inside the EVOLVE-BLOCK."""

    first: int  # its first and last line in the program (1-based, inclusive); for the header of an ``if``,
    last: int   # ``for``, ... (``simple`` False) the header's line only
    simple: bool  # not a compound statement: a reply may replace it alone
    context_first: int  # the top-level definition it lies in (or the statement itself): what a prompt shows
    context_last: int
    visible: tuple[str, ...]  # names that exist when it runs: module level, parameters, assigned earlier


def failing_line(detail: str | None) -> int | None:
    """The line number in the trusted first line of a failure detail, or None."""
    m = _AT_LINE.search((detail or "").partition("\n")[0])
    return int(m.group(1)) if m else None


def _block_lines(code: str) -> tuple[int, int] | None:
    try:
        return split_block(code).line_range()
    except ProgramError:
        return None


def _assigned(nodes, before: int) -> set[str]:
    """Names bound by ``nodes`` on lines before ``before`` (assignments, loop targets, imports, definitions)."""
    names = set()
    for node in nodes:
        for n in ast.walk(node):
            if getattr(n, "lineno", before) >= before:
                continue
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                names.add(n.id)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(n.name)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in n.names)
            elif isinstance(n, ast.arg):
                names.add(n.arg)
    return names


def failing_statement(code: str, detail: str | None) -> FailingStatement | None:
    """The statement a failure names, when it lies inside the EVOLVE-BLOCK of ``code``; None otherwise (then the
    whole block is the thing to repair)."""
    line, block = failing_line(detail), _block_lines(code)
    if line is None or block is None or not block[0] <= line <= block[1]:
        return None
    try:
        tree = parse_ast(code)
    except SyntaxError:
        return None
    around = [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and n.lineno <= line <= (n.end_lineno or 0)]
    if not around:
        return None
    stmt = min(around, key=lambda n: (n.end_lineno - n.lineno, -n.lineno))
    simple = not (hasattr(stmt, "body") or hasattr(stmt, "orelse"))  # else the line is a compound's header
    top = next(n for n in tree.body if n.lineno <= line <= n.end_lineno)
    first = min([top.lineno] + [d.lineno for d in getattr(top, "decorator_list", [])])
    is_function = isinstance(top, ast.FunctionDef)
    module_names = {n for s in tree.body if s is not top for n in defined_names(s)}
    local = _assigned(top.body if is_function else [], stmt.lineno)
    params = {a.arg for a in ast.walk(top.args) if isinstance(a, ast.arg)} if is_function else set()
    return FailingStatement(stmt.lineno, stmt.end_lineno if simple else line, simple, first, top.end_lineno,
                            tuple(sorted(module_names | local | params)))


def marked_context(code: str, st: FailingStatement) -> str:
    """The top-level definition around the failing statement, its first line marked with :data:`MARKER`."""
    lines = code.splitlines()
    shown = lines[st.context_first - 1:st.context_last]
    i = st.first - st.context_first
    shown[i] = f"{shown[i]}  {MARKER}"
    return "\n".join(shown)


def undefined_name(detail: str | None) -> str | None:
    """The name a NameError names, from the program's fenced message (only used to say which name is missing
    when it is an identifier: the program's text never reaches a prompt unfenced otherwise)."""
    m = re.search(r"name '([A-Za-z_]\w{0,60})' is not defined", detail or "")
    return m.group(1) if m else None


def names_hint(st: FailingStatement, detail: str | None) -> str:
    """For a NameError: which names exist where the statement runs, and how a value crosses from prepare to
    score."""
    missing = undefined_name(detail)
    what = f"`{missing}` does not exist there. " if missing else ""
    names = [n for n in st.visible if not hasattr(builtins, n)]
    return (f"{what}Names that exist where the marked statement runs: {', '.join(names) or '(none)'}. Compute "
            "a missing value in this function (in score() from query, index and state: a value made in "
            "prepare() reaches score() only inside the state prepare returns).\n")
