"""A ``score`` that unpacks the state another program's ``prepare`` returns, next to a ``prepare`` that returns one
matrix: the candidate gets that program's ``prepare``, from trusted code, before it is evaluated.

The complete programs the prompt shows (the direction's ``prepare`` and ``score``, the parent, the inspirations)
pass a tuple from ``prepare`` to ``score`` when they need more than the per-posting weights
(``return dirichlet_weights(index)`` and ``posting, per_doc = state``). A small model copies such a ``score`` and
keeps the ``prepare`` it had, which returns one sparse matrix: ``ValueError: too many values to unpack`` on the
first query, every time (local model Qwen2.5-Coder-1.5B, run ``local-q``: #7, a variants rewrite whose ``score``
starts ``weights, classes = state`` after a BM25 ``prepare``; #12, the smoothing direction's ``score`` after the
query-likelihood seed's ``prepare``). The statement that unpacks names the program it came from; what the model
meant has one reading: that program's way of preparing the state.

Rewritten only when all of these hold:

- the candidate's ``score`` has, at its top level, ``a, b, ... = state`` (the state unpacked into names);
- every ``return`` of the candidate's ``prepare`` gives one sparse matrix (a ``csr_matrix``/``csc_matrix``/...
  call, or a name its ``prepare`` assigns only from such calls), which cannot be unpacked into that many names on
  any collection with more terms than names (or the candidate has no ``prepare`` and the state is ``None``);
- a program the prompt showed (``donors``, first found first used: the direction's program first) has a ``score``
  with the same statement at its top level and a ``prepare`` whose returns all give a tuple of that many values
  (a tuple, or a call of one of its functions whose returns are all such tuples).

The candidate's ``prepare`` is then replaced by that donor's (whatever it calls is borrowed afterwards by
:mod:`~evorank.evolve.name_repair`). Code is parsed, never run.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from evorank.evaluators.program import ProgramError, split_block
from evorank.threadsafe_ast import parse_ast

#: Constructors of one sparse matrix (scipy.sparse), as the last part of the called name.
SPARSE_CONSTRUCTORS = frozenset({"csr_matrix", "csc_matrix", "coo_matrix", "csr_array", "csc_array", "coo_array"})


@dataclass(frozen=True)
class StateFix:
    """A program whose ``prepare`` was taken from the program its ``score`` unpacks the state of."""

    source: str
    description: str


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _unpacking(score: ast.FunctionDef) -> tuple[str, ...] | None:
    """The names of ``score``'s top-level ``a, b, ... = state`` (None when it has none)."""
    for stmt in score.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Tuple)
                and all(isinstance(e, ast.Name) for e in stmt.targets[0].elts)
                and isinstance(stmt.value, ast.Name) and stmt.value.id == "state"):
            return tuple(e.id for e in stmt.targets[0].elts)
    return None


def _returns(function: ast.FunctionDef) -> list[ast.expr | None]:
    return [n.value for n in ast.walk(function) if isinstance(n, ast.Return)]


def _is_sparse_call(node: ast.AST | None) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "") in SPARSE_CONSTRUCTORS


def _returns_one_matrix(prepare: ast.FunctionDef) -> bool:
    made: dict[str, list[ast.expr]] = {}
    for n in ast.walk(prepare):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Name):
                    made.setdefault(t.id, []).append(n.value)
                else:
                    made.update({e.id: [None] for e in ast.walk(t) if isinstance(e, ast.Name)})
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.With, ast.NamedExpr)):
            made.update({e.id: [None] for e in ast.walk(n) if isinstance(e, ast.Name) and isinstance(e.ctx, ast.Store)})
    returns = _returns(prepare)
    return bool(returns) and all(
        _is_sparse_call(r) or (isinstance(r, ast.Name) and r.id in made and all(map(_is_sparse_call, made[r.id])))
        for r in returns)


def _tuple_size(value: ast.expr | None, functions: dict[str, ast.FunctionDef], depth: int = 0) -> int | None:
    """How many values ``value`` gives when it is a tuple, or a call of a function whose returns all are tuples of
    one size; None otherwise."""
    if isinstance(value, ast.Tuple) and not any(isinstance(e, ast.Starred) for e in value.elts):
        return len(value.elts)
    if depth < 2 and isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in functions:
        sizes = {_tuple_size(r, functions, depth + 1) for r in _returns(functions[value.func.id])}
        return sizes.pop() if len(sizes) == 1 and None not in sizes else None
    return None


def take_prepare_for_unpacked_state(code: str, donors: list[tuple[str, str]]) -> StateFix | None:
    """``code`` with its ``prepare`` replaced by the one of the donor whose state its ``score`` unpacks (module
    docstring), or None when that is not the case."""
    try:
        first, last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    own = {name: f for name, f in _functions(tree).items() if first <= f.lineno <= last}
    score, prepare = own.get("score"), own.get("prepare")
    unpack = _unpacking(score) if score is not None else None
    if unpack is None or (prepare is not None and not _returns_one_matrix(prepare)):
        return None
    if prepare is None and "prepare" in _functions(tree):
        return None  # a prepare outside the block: not the candidate's to replace
    size = len(unpack)
    for label, donor in donors:
        try:
            donor_tree = parse_ast(donor)
        except SyntaxError:
            continue
        functions = _functions(donor_tree)
        d_score, d_prepare = functions.get("score"), functions.get("prepare")
        if d_score is None or d_prepare is None or _unpacking(d_score) != unpack:
            continue
        sizes = {_tuple_size(r, functions) for r in _returns(d_prepare)}
        if sizes != {size}:
            continue
        text = ast.get_source_segment(donor, d_prepare)
        lines = code.split("\n")
        if prepare is not None:
            lines[prepare.lineno - 1:prepare.end_lineno] = text.split("\n")
        else:
            lines[score.lineno - 1:score.lineno - 1] = [*text.split("\n"), "", ""]
        return StateFix("\n".join(lines), f"took prepare() from {label}: score() unpacks its state into "
                                          f"{', '.join(unpack)}, the candidate's prepare() returned one matrix")
    return None
