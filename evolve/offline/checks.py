"""Whether an edited block may be kept: the offline mutator's acceptance check (:class:`Checker`).

An edit is kept only if, compared with the parent:

- every assignment keeps its level (no shape mismatches) and no expression newly mixes
  incompatible levels;
- every name it reads is defined (a parameter, a variable bound before, a module-level name of the
  block, a name bound outside the block, or a builtin the parents already use);
- the number of numerically unsafe sites does not grow: division by, ``log`` of, and
  ``sqrt`` / ``log1p`` / fractional power of something not known to be in the domain, and ``exp``;
- no formula grows beyond ``_MAX_STMT_NODES`` AST nodes (the bloat cap) unless it was already
  that big.

Before the check, side-effect-free assignments whose variable is never read afterwards (what a
graft or a prune leaves behind) are removed.
"""
from __future__ import annotations

import ast
import builtins

from evorank.threadsafe_ast import compile_ast, parse_ast

from .analysis import CONFLICT, NONNEG, POS, Context, Scope, np_fn
from .block import NoEdit, ParsedProgram, format_block, signed_const

_MAX_STMT_NODES = 80  # bloat cap: an edit may not grow a formula beyond this many AST nodes


def _signature(tree: ast.Module, np_alias: str | None, outer: frozenset[str], allowed_builtins: set[str]):
    """(level of every assignment per function, number of unsafe sites, undefined names, number of
    expressions that mix incompatible levels)."""
    ctx = Context(tree, np_alias)
    levels: dict[tuple[str, str], str | None] = {}
    unsafe = conflicts = 0
    undefined: list[str] = []
    module_names = ctx.top_names | set(outer) | allowed_builtins
    for fname, func in ctx.functions.items():
        scope = Scope(ctx, func)
        for stmt in func.body:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name):
                    if (isinstance(n.ctx, ast.Load) and n.id not in scope.defined and n.id not in module_names
                            and not _bound_inside(stmt, n.id)):
                        undefined.append(n.id)
                elif isinstance(n, (ast.BinOp, ast.Call)):
                    unsafe += _unsafe_here(scope, n, np_alias)
                    conflicts += scope.info(n).level == CONFLICT
            if isinstance(stmt, ast.Assign):
                i = scope.info(stmt.value)
                for t in stmt.targets:
                    if isinstance(t, ast.Name):
                        levels[(fname, t.id)] = i.level if i.level != "M" else "M"
            scope.bind(stmt)
    return levels, unsafe, undefined, conflicts


def _bound_inside(stmt: ast.stmt, name: str) -> bool:
    for n in ast.walk(stmt):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id == name:
            return True
        if isinstance(n, ast.arg) and n.arg == name:
            return True
    return False


def _unsafe_here(scope: Scope, n: ast.expr, np_alias: str | None) -> int:
    if isinstance(n, ast.BinOp):
        if isinstance(n.op, ast.Div):
            return int(scope.info(n.right).sign != POS)
        if isinstance(n.op, ast.Pow):
            e = signed_const(n.right)
            base = scope.info(n.left).sign
            if e is None:
                return int(base != POS)
            if e < 0:
                return int(base != POS)
            if e != int(e):
                return int(base < NONNEG)
        return 0
    if isinstance(n, ast.Call) and n.args:
        name = np_fn(n.func, np_alias)
        if name in ("log", "log2", "log10"):
            return int(scope.info(n.args[0]).sign != POS)
        if name in ("sqrt", "log1p"):
            return int(scope.info(n.args[0]).sign < NONNEG)
        if name == "exp":
            return 1
    return 0


def _stmt_sizes(tree: ast.Module) -> dict[tuple[str, str], int]:
    """AST node count of every assignment's right-hand side, by (function, variable)."""
    out = {}
    for func in tree.body:
        if isinstance(func, ast.FunctionDef):
            for stmt in func.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    out[(func.name, stmt.targets[0].id)] = sum(1 for _ in ast.walk(stmt.value))
    return out


def _pure(expr: ast.expr, np_alias: str | None) -> bool:
    """Arithmetic on names, attributes and subscripts, and calls of numpy functions or ``.astype``."""
    for n in ast.walk(expr):
        if isinstance(n, ast.Call):
            f = n.func
            if not (np_fn(f, np_alias) is not None or (isinstance(f, ast.Attribute) and f.attr == "astype")):
                return False
        elif isinstance(n, ast.Attribute):
            if n.attr.startswith("_"):
                return False
        elif not isinstance(n, (ast.Name, ast.Constant, ast.Subscript, ast.Slice, ast.Tuple, ast.BinOp, ast.UnaryOp,
                                ast.operator, ast.unaryop, ast.expr_context, ast.keyword)):
            return False
    return True


def _drop_dead_assignments(tree: ast.Module, np_alias: str | None) -> None:
    """Remove side-effect-free assignments inside functions whose variable is never read afterwards
    (what a graft or a prune leaves behind), until none is left."""
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef):
            continue
        shared_names = any(isinstance(n, (ast.Global, ast.Nonlocal)) for n in ast.walk(func))
        changed = True
        while changed:
            changed = False
            for pos, stmt in enumerate(func.body):
                if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
                    continue
                name = stmt.targets[0].id
                later = func.body[pos + 1:]
                if any(isinstance(n, ast.Name) and n.id == name for s in later for n in ast.walk(s)):
                    continue
                if shared_names:  # the assignment may be read elsewhere
                    return
                if _pure(stmt.value, np_alias):
                    del func.body[pos]
                    changed = True
                    break


class Checker:
    """Accepts an edited tree only if it is as sound as the parent (see the module docstring).

    ``extra_names``: names of another parent (crossover) whose builtins the child may use too.
    ``base``: when checking a child of a child, the checker of the original parent, whose
    thresholds (levels, unsafe count, undefined names, builtins) still apply.
    """

    def __init__(self, prog: ParsedProgram, extra_names: set[str] = frozenset(), base: "Checker | None" = None):
        self.prog = prog
        self.base_text = format_block(prog.tree)
        self.base_sizes = _stmt_sizes(prog.tree)
        if base is not None:  # a child accepted by `base`: keep the original parent's thresholds
            self.builtins = base.builtins
            self.base_levels = base.base_levels
            self.base_unsafe, self.base_conflicts = base.base_unsafe, base.base_conflicts
            self.base_undefined = base.base_undefined
            return
        names_used = {n.id for n in ast.walk(prog.tree) if isinstance(n, ast.Name)}
        self.builtins = {n for n in names_used | set(extra_names) if hasattr(builtins, n)}
        self.base_levels, self.base_unsafe, undefined, self.base_conflicts = _signature(
            prog.tree, prog.np, prog.outer_names, self.builtins)
        self.base_undefined = set(undefined)

    def fresh_tree(self) -> ast.Module:
        """A private copy of the parent's tree (parsing the text is much faster than deepcopy)."""
        return parse_ast(self.base_text)

    def accept(self, tree: ast.Module) -> tuple[str, ast.Module]:
        """Drop dead assignments from ``tree`` (in place), then return (new block text, its parsed
        tree) when the result passes the checks; raise NoEdit when it does not (or nothing changed)."""
        _drop_dead_assignments(tree, self.prog.np)
        ast.fix_missing_locations(tree)
        text = format_block(tree)
        if text == self.base_text:
            raise NoEdit("no change")
        try:
            reparsed = parse_ast(text)
            compile_ast(reparsed, "<block>", "exec")
        except (SyntaxError, ValueError) as e:  # pragma: no cover - unparse is supposed to round-trip
            raise NoEdit(f"unparse: {e}")
        levels, unsafe, undefined, conflicts = _signature(reparsed, self.prog.np, self.prog.outer_names, self.builtins)
        bad = [n for n in undefined if n not in self.base_undefined]
        if bad:
            raise NoEdit(f"undefined {bad[0]}")
        if conflicts > self.base_conflicts:
            raise NoEdit("mixes incompatible shapes")
        for key, lvl in self.base_levels.items():
            if key in levels and levels[key] != lvl:
                raise NoEdit(f"level of {key[1]} changed {lvl} -> {levels[key]}")
        for key, lvl in levels.items():
            if key not in self.base_levels and lvl is None:
                raise NoEdit(f"unknown level for new {key[1]}")
        if unsafe > self.base_unsafe:
            raise NoEdit("less safe")
        for key, n in _stmt_sizes(reparsed).items():
            if n > _MAX_STMT_NODES and n > self.base_sizes.get(key, 0):
                raise NoEdit("formula too big")
        return text, reparsed

