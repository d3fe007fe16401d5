"""A helper's name reused for its result: ``bm25_plus = bm25_plus(index)`` inside a function gets a local name of
its own, from trusted code, before the candidate is evaluated.

Python makes a name local to a whole function as soon as the function assigns it anywhere, so a statement that
reads a module-level function (or constant) and stores the result under the same name reads the local before
anything was stored: ``UnboundLocalError`` whenever that statement runs. A small model (such as
Qwen2.5-Coder-1.5B) does this with the direction helpers the prompt provides, and the proposal fails with
``UnboundLocalError: cannot access local variable ...``. What it meant has one reading: call
the helper, keep its result. So the local gets a new name (``bm25_plus_value``) in that statement's target and
every later use in the function, and the read on the statement's right-hand side stays the module's name (then
borrowed by :mod:`~evorank.evolve.llm.mend.names` when the candidate never copied the helper).

Rewritten only when all of these hold, for a function of the EVOLVE-BLOCK and a name ``N``:

- the function's first mention of ``N`` (in source order) is an assignment ``N = <expression reading N>``, so the
  statement raises whenever it runs (an earlier binding would be an earlier mention);
- ``N`` is not a parameter of the function, nor declared ``global``/``nonlocal``, nor bound by a function nested
  in it;
- ``N`` is defined at module level, by the candidate or by a program the prompt showed (``donors``): otherwise
  the read would only become a NameError.

The new name is ``N_value`` (``N_value2``, ... when taken). Every other read and write of ``N`` in the function
is renamed with it, so the program means what it meant before, except that the one read which raised now reads
the module's ``N``. Code is parsed, never run; nothing else is touched.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from evorank.evaluators.program.source import ProgramError, split_block
from evorank.threadsafe_ast import parse_ast

from .bindings import bound_names, defined_names


@dataclass(frozen=True)
class ScopeFix:
    """A program with its self-shadowing locals renamed, and one line saying which."""

    source: str
    description: str


def _module_names(code: str) -> set[str]:
    try:
        return set().union(*(defined_names(s) for s in parse_ast(code).body))
    except SyntaxError:
        return set()


def _shadowed(function: ast.FunctionDef, module: set[str]) -> list[tuple[str, ast.Assign]]:
    """(name, statement) for each module name whose first mention in ``function`` is an assignment reading it."""
    params = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    declared = {n for s in ast.walk(function) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
    nested = set()
    for n in ast.walk(function):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)) and n is not function:
            nested |= bound_names(n) | ({n.name} if hasattr(n, "name") else set())
    first: dict[str, ast.Name] = {}
    for n in sorted((n for n in ast.walk(function) if isinstance(n, ast.Name)),
                    key=lambda n: (n.lineno, n.col_offset)):
        first.setdefault(n.id, n)
    out = []
    for stmt in ast.walk(function):
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            continue
        name = stmt.targets[0].id
        if name in params or name in declared or name in nested or name not in module:
            continue
        reads = [n for n in ast.walk(stmt.value) if isinstance(n, ast.Name) and n.id == name]
        # the function's first mention is this statement (its target comes first in the text, but the right-hand
        # side runs first): the read happens before anything in the function bound the name
        if reads and (first[name] is stmt.targets[0] or first[name] in reads):
            out.append((name, stmt))
    return out


def rename_shadowing_locals(code: str, donors: list[tuple[str, str]]) -> ScopeFix | None:
    """``code`` with every local that shadows the module name it is computed from renamed (module docstring), or
    None when there is none. ``donors``: (label, code) of the programs the prompt showed; their module-level
    names count as defined (``names`` borrows them)."""
    try:
        first, last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    module = _module_names(code).union(*(_module_names(d) for _, d in donors))
    lines = code.split("\n")
    edits: list[tuple[int, int, int, str]] = []  # (line, byte column, byte length, new text)
    notes = []
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and first <= function.lineno <= last):
            continue
        taken = bound_names(function) | module
        for name, stmt in _shadowed(function, module):
            new, k = f"{name}_value", 2
            while new in taken:
                new, k = f"{name}_value{k}", k + 1
            taken.add(new)
            keep = {id(n) for n in ast.walk(stmt.value) if isinstance(n, ast.Name) and n.id == name}
            for n in ast.walk(function):
                if isinstance(n, ast.Name) and n.id == name and id(n) not in keep:
                    edits.append((n.lineno, n.col_offset, len(name.encode("utf-8")), new))
            notes.append(f"{function.name}(): {name} = {name}(...) -> {new} = {name}(...)"
                         if isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)
                         and stmt.value.func.id == name else f"{function.name}(): local {name} -> {new}")
    if not edits:
        return None
    for line, col, length, text in sorted(edits, reverse=True):
        raw = lines[line - 1].encode("utf-8")
        lines[line - 1] = (raw[:col] + text.encode("utf-8") + raw[col + length:]).decode("utf-8")
    return ScopeFix("\n".join(lines), "renamed " + ", ".join(notes))
