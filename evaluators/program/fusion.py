"""Score fusion: several ranking programs written as one, whose score is the sum of theirs after normalisation.

Programs that reach a similar fitness by different routes make different errors, and averaging rankers that err
differently is the oldest robust gain in metasearch: CombSUM (Fox & Shaw 1994) sums the members' scores after each
is normalised per query; the z-score (the scores of the documents a member retrieves, less their mean, over their
standard deviation; Montague & Aslam 2001) makes members of different scales add alike. A document a member does
not retrieve gets that member's lowest z-score for the query, so it is neither dropped nor favoured; a document no
member retrieves stays ``-inf``; a member that scores every document it retrieves alike adds 0 to each. A fused
program runs every member, so it is as slow as their sum.

:func:`fuse` writes the fused program from the members' sources. It is a program like any other (head and tail of
the first member, one EVOLVE-BLOCK), goes through the same static checks and sandbox, and is exported the same
way: each member's block is kept statement for statement (docstrings aside), with every name it binds at its top
level (constants, functions) and every use of those names renamed with the member's prefix (``m0_K1``,
``m1_score``), so that the members' names cannot collide. Renaming an identifier everywhere it occurs in a block
(names, parameters, keyword arguments of the block's own functions, ``global`` lists) changes nothing a block
computes. :func:`members` reads the members back from a fused program, so that ``explain`` can take each one out
(:func:`without_member`).
Code is parsed and rewritten, never run.
"""
from __future__ import annotations

import ast
import re
from typing import Callable

from .source import ProgramError, split_block
from evorank.threadsafe_ast import parse_ast

#: the tuple of the members' entry points in a fused block; its presence marks a program as fused
MEMBERS_NAME = "FUSED_MEMBERS"
_PREFIX = re.compile(r"^m(\d+)_")

_FUSION = f'''

def fused_zscores(scores):
    """Per query, a member's scores as z-scores over the documents it retrieves; the others get its lowest."""
    scores = np.asarray(scores, dtype=np.float64)
    retrieved = np.isfinite(scores)
    if not retrieved.any():
        return retrieved, np.zeros(len(scores))
    values = scores[retrieved]
    spread = values.std()
    spread = spread if spread > 0 else 1.0
    z = (scores - values.mean()) / spread
    return retrieved, np.where(retrieved, z, (values.min() - values.mean()) / spread)


def prepare(index):
    """Each member's state, in member order (None for a member without prepare)."""
    return tuple(p(index) if p is not None else None for p, _ in {MEMBERS_NAME})


def score(query, index, state):
    """CombSUM of the members' per-query z-scores; documents no member retrieves get -inf."""
    total = np.zeros(index.n_docs)
    retrieved = np.zeros(index.n_docs, dtype=bool)
    for (_, member_score), member_state in zip({MEMBERS_NAME}, state):
        found, z = fused_zscores(member_score(query, index, member_state))
        total += z
        retrieved |= found
    return np.where(retrieved, total, -np.inf)
'''


def _top_level_names(tree: ast.Module) -> set[str] | None:
    """The names a block binds at its top level other than by import (None when a name is bound both ways, which
    a renaming could not keep apart)."""
    bound, imported = set(), set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(stmt.name)
        else:
            for target in _targets(stmt):
                bound |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return None if bound & imported else bound


def _targets(stmt: ast.stmt) -> list[ast.AST]:
    if isinstance(stmt, ast.Assign):
        return list(stmt.targets)
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign, ast.For)):
        return [stmt.target]
    if isinstance(stmt, ast.With):
        return [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    return []


class _Rename(ast.NodeTransformer):
    """Renames identifiers everywhere a block has them: names, parameters, function names, ``global`` lists, and
    keyword arguments of calls to functions the renaming applies to (the block's own). ``rename(name)`` gives the
    new name, the name itself for one left alone; it serves both ways (prefixing, and taking a prefix off)."""

    def __init__(self, rename: Callable[[str], str]):
        self.rename = rename

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.rename(node.arg)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node):
        node.name = self.rename(node.name)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> ast.Call:
        if isinstance(node.func, ast.Name) and self.rename(node.func.id) != node.func.id:  # a block function
            for kw in node.keywords:
                if kw.arg is not None:
                    kw.arg = self.rename(kw.arg)
        self.generic_visit(node)
        return node

    def visit_Global(self, node):
        node.names = [self.rename(n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global


def _member_block(source: str, prefix: str) -> tuple[str, bool]:
    """A member's block with its top-level names prefixed, and whether it defines ``prepare``. Raises ProgramError
    when the block cannot be renamed apart (a name bound both by import and otherwise) or has no ``score``."""
    try:
        tree = parse_ast(split_block(source).block)
    except (SyntaxError, ValueError, RecursionError) as e:
        raise ProgramError("syntax_error", f"a member does not parse: {type(e).__name__}") from None
    names = _top_level_names(tree)
    if names is None or "score" not in names:
        raise ProgramError("fusion", "a member binds a name both by import and otherwise, or defines no score")
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {a.arg for a in ast.walk(tree)
                                                                      if isinstance(a, ast.arg)}
    if any(u.startswith(prefix) for u in used):
        raise ProgramError("fusion", f"a member already uses names starting with {prefix!r}")
    try:
        renamed = _Rename(lambda n: prefix + n if n in names else n).visit(_without_docstrings(tree))
        return ast.unparse(ast.fix_missing_locations(renamed)), "prepare" in names
    except RecursionError:  # nested too deeply to rewrite: the member is left out, not the run
        raise ProgramError("fusion", "a member is nested too deeply to rewrite") from None


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """The block without its docstrings (a fused program must fit the block limits; the members, archived on
    their own, keep theirs). No program reads a docstring: ``__doc__`` is a name the static checks refuse."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return tree


def fuse(sources: list[str]) -> str:
    """One program ranking by the CombSUM of the z-scores of ``sources`` (two or more programs whose text outside
    the EVOLVE-BLOCK is the first one's: one seed's head and tail). Raises ProgramError when that does not hold or a
    member cannot be renamed apart."""
    if len(sources) < 2:
        raise ProgramError("fusion", "fusion needs at least two programs")
    first = split_block(sources[0])
    blocks, entries = [], []
    for i, source in enumerate(sources):
        split = split_block(source)
        if (split.head, split.tail) != (first.head, first.tail):
            raise ProgramError("fusion", "members must share the text outside their EVOLVE-BLOCK (one seed's)")
        block, has_prepare = _member_block(source, f"m{i}_")
        blocks.append(block)
        entries.append(f"(m{i}_prepare, m{i}_score)" if has_prepare else f"(None, m{i}_score)")
    members = f"{MEMBERS_NAME} = ({', '.join(entries)},)"
    body = "\n\n\n".join(blocks) + "\n\n\n" + members + _FUSION
    return first.join(body.strip("\n") + "\n")


def members(source: str) -> list[str] | None:
    """The member programs of a fused program, each as a program of its own (the fused program's head and tail,
    the member's block with its names as they were); None when ``source`` is not a fused program."""
    try:
        split = split_block(source)
        tree = parse_ast(split.block)
    except (ProgramError, SyntaxError, ValueError, RecursionError):
        return None
    if not any(isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == MEMBERS_NAME
                                                 for t in s.targets) for s in tree.body):
        return None
    groups: dict[int, list[ast.stmt]] = {}
    for stmt in tree.body:
        names = [stmt.name] if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else \
            [n.id for t in _targets(stmt) for n in ast.walk(t) if isinstance(n, ast.Name)]
        found = {int(m.group(1)) for m in (_PREFIX.match(n) for n in names) if m}
        if len(found) == 1:
            groups.setdefault(found.pop(), []).append(stmt)
    out = []
    for k in sorted(groups):
        prefix = f"m{k}_"
        try:
            back = _Rename(lambda n: n[len(prefix):] if n.startswith(prefix) else n).visit(
                ast.Module(body=groups[k], type_ignores=[]))
            out.append(split.join(ast.unparse(ast.fix_missing_locations(back)) + "\n"))
        except RecursionError:
            return None
    return out or None


def without_member(source: str, k: int) -> str | None:
    """A fused program without its ``k``-th member: the fusion of the others, or the one left as it was; None when
    ``source`` is not fused or has no such member."""
    found = members(source)
    if found is None or not 0 <= k < len(found):
        return None
    rest = found[:k] + found[k + 1:]
    return rest[0] if len(rest) == 1 else fuse(rest)
