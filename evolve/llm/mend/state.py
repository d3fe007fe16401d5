"""Half of another program's state passing: a ``score`` that unpacks the state another program's ``prepare``
returns, next to a ``prepare`` that returns one matrix, gets that program's ``prepare``, from trusted code, before
it is evaluated (and a copied ``prepare`` returning a tuple gets the ``score`` that reads it).

The complete programs the prompt shows (the direction's ``prepare`` and ``score``, the parent, the inspirations)
pass a tuple from ``prepare`` to ``score`` when they need more than the per-posting weights
(``return dirichlet_weights(index)`` and ``posting, per_doc = state``). A small model copies such a ``score`` and
keeps the ``prepare`` it had, which returns one sparse matrix: ``ValueError: too many values to unpack`` on the
first query, every time (for instance a variants rewrite whose ``score`` starts ``weights, classes = state``
after a BM25 ``prepare``, or the smoothing direction's ``score`` after the query-likelihood seed's ``prepare``).
The statement that unpacks names the program it came from; what the model
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
:mod:`~evorank.evolve.llm.mend.names`).

The other half is mended the same way: a candidate whose ``prepare`` is a donor's (the same code up to layout,
comments and docstring) returning a tuple, while its ``score`` indexes the state as a matrix (``state[...]``,
never unpacking it: a TypeError on every query), gets that donor's ``score``. Code is
parsed, never run.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from evorank.archive.programs import normalized_code
from evorank.evaluators.program.source import ProgramError, split_block
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


def _same_function(a: ast.FunctionDef, b: ast.FunctionDef) -> bool:
    """Equal up to layout, comments and docstrings (the archive's normalized code)."""
    return normalized_code(ast.unparse(a)) == normalized_code(ast.unparse(b))


def _indexes_state(score: ast.FunctionDef) -> bool:
    """Whether ``score`` subscripts ``state`` (``state[query.term_ids]``) and never rebinds or unpacks it."""
    subscripted = any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "state"
                      for n in ast.walk(score))
    rebound = any(isinstance(n, ast.Name) and n.id == "state" and not isinstance(n.ctx, ast.Load)
                  for n in ast.walk(score))
    return subscripted and not rebound and _unpacking(score) is None


def _replace(code: str, function: ast.FunctionDef, text: str) -> str:
    lines = code.split("\n")
    lines[function.lineno - 1:function.end_lineno] = text.split("\n")
    return "\n".join(lines)


def take_score_for_tuple_state(code: str, own: dict[str, ast.FunctionDef],
                               donors: list[tuple[str, str]]) -> StateFix | None:
    """``code`` with its ``score`` replaced by the donor's whose ``prepare`` it copied, when that ``prepare``
    returns a tuple and the candidate's ``score`` indexes the state as a matrix (module docstring)."""
    score, prepare = own.get("score"), own.get("prepare")
    if score is None or prepare is None or not _indexes_state(score):
        return None
    for label, donor in donors:
        try:
            functions = _functions(parse_ast(donor))
        except SyntaxError:
            continue
        d_score, d_prepare = functions.get("score"), functions.get("prepare")
        if d_score is None or d_prepare is None or not _same_function(d_prepare, prepare):
            continue
        sizes = {_tuple_size(r, functions) for r in _returns(d_prepare)}
        if len(sizes) != 1 or None in sizes:
            continue
        return StateFix(_replace(code, score, ast.get_source_segment(donor, d_score)),
                        f"took score() from {label}: prepare() is its and returns {sizes.pop()} values, the "
                        "candidate's score() indexed them as one matrix")
    return None


def take_prepare_for_unpacked_state(code: str, donors: list[tuple[str, str]]) -> StateFix | None:
    """``code`` with its ``prepare`` replaced by the one of the donor whose state its ``score`` unpacks, or its
    ``score`` by the one of the donor whose ``prepare`` it copied (module docstring); None when neither is the
    case."""
    try:
        first, last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    own = {name: f for name, f in _functions(tree).items() if first <= f.lineno <= last}
    score, prepare = own.get("score"), own.get("prepare")
    unpack = _unpacking(score) if score is not None else None
    if unpack is None:
        return take_score_for_tuple_state(code, own, donors)
    if prepare is not None and not _returns_one_matrix(prepare):
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
        if prepare is not None:
            fixed = _replace(code, prepare, text)
        else:
            lines = code.split("\n")
            lines[score.lineno - 1:score.lineno - 1] = [*text.split("\n"), "", ""]
            fixed = "\n".join(lines)
        return StateFix(fixed, f"took prepare() from {label}: score() unpacks its state into "
                                          f"{', '.join(unpack)}, the candidate's prepare() returned one matrix")
    return None
