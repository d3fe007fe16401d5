"""Recombination of two parents for the offline mutator (operator ``offline:crossover``).

The child keeps the parent's head and tail and takes something from the other parent:

``constants``  shared module constants take the other's value or a geometric blend of the two;
``graft``      a variable's definition from the other parent, with the local definitions it needs
               (copied under fresh names, e.g. ``tf_2``, when the parent already uses the name) and
               the module-level constants or helper functions it reads;
``blend``      ``mine + c * theirs`` for a variable both parents define differently;
``function``   the other's ``prepare`` or ``score`` as a whole, when both ``prepare`` return the same
               kind of state and both ``score`` read it the same way.

A kind is drawn by weight; ``constants`` and ``function`` are not drawn again after failing. The
same :class:`~evorank.evolve.offline.checks.Checker` as for point edits decides (it also knows the
other parent's builtins), and a child equal to the other parent is refused. When nothing applies
(e.g. identical programs) the result is one point edit of the parent.
"""
from __future__ import annotations

import ast
import copy
import math

import numpy as np

from .analysis import Context
from .block import (
    CROSSOVER_OPERATOR,
    DEBUG,
    Mutation,
    NoEdit,
    ParsedProgram,
    fmt_number,
    format_block,
    names_in,
    number_node,
    parse_program,
    round_sig,
    short_text,
)
from .checks import Checker
from .point_edits import MAX_TRIES, coefficient, point_mutation
from .sites import analyse


def crossover(parent_source: str, other_source: str, rng: np.random.Generator) -> Mutation:
    """Recombine two programs; the child keeps the parent's head and tail.

    Kinds (chosen at random among those that apply): ``constants`` (shared module constants take the
    other's value or a geometric blend), ``graft`` (a variable's definition from the other parent,
    with the local definitions it needs), ``blend`` (``mine + c * theirs`` for a variable both
    define), ``function`` (the other's ``prepare`` or ``score``, when both ``prepare`` return the
    same kind of state and both ``score`` read it the same way). Falls back to a point mutation of
    the parent when nothing applies (e.g. identical programs).

    The operator is ``offline:crossover``, or the point edit's when the fallback was taken. Raises
    ValueError when either program has no EVOLVE-BLOCK or its block does not parse.
    """
    prog = parse_program(parent_source)
    other = parse_program(other_source, "other")
    checker = Checker(prog, names_in(other.tree))
    other_text = format_block(other.tree)
    kinds = ["constants", "graft", "blend", "function"]
    base_w = np.array([0.3, 0.3, 0.25, 0.15])
    tried: set[str] = set()
    for _ in range(MAX_TRIES):
        w = np.array([0.0 if k in tried and k in ("constants", "function") else x for k, x in zip(kinds, base_w)])
        if w.sum() <= 0:
            break
        kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        tree = checker.fresh_tree()
        try:
            desc = _CROSS[kind](tree, prog, other, rng)
            text, _ = checker.accept(tree)
            if text == other_text:
                raise NoEdit("the child is the other parent")
        except Exception as e:
            if DEBUG.strict and not isinstance(e, NoEdit):
                raise
            tried.add(kind)
            continue
        return Mutation(prog.head + text + prog.tail, CROSSOVER_OPERATOR, f"crossover {kind}: {desc}")
    m = point_mutation(parse_program(parent_source), rng, 1)
    return Mutation(m.source, m.operator, f"(crossover found nothing to recombine) {m.description}")


def _x_constants(tree: ast.Module, prog: ParsedProgram, other: ParsedProgram, rng) -> str:
    mine = Context(tree, prog.np).constants
    theirs = Context(other.tree, other.np).constants
    shared = [k for k in mine if k in theirs and mine[k] != theirs[k]]
    if not shared:
        raise NoEdit("no shared constants")
    take = [k for k in shared if rng.random() < 0.5] or [shared[int(rng.integers(len(shared)))]]
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            if name in take:
                a, b = mine[name], theirs[name]
                if rng.random() < 0.5 or a * b <= 0:
                    v = b
                else:
                    t = rng.uniform(0.25, 0.75)
                    v = round_sig(math.copysign(abs(a) ** (1 - t) * abs(b) ** t, a))
                stmt.value = number_node(v)
                out.append(f"{name}: {fmt_number(a)} -> {fmt_number(v)}")
    return ", ".join(out)


def _assignments(func: ast.FunctionDef) -> dict[str, int]:
    """Variable -> position of its single top-level assignment (variables assigned more than once are left out)."""
    seen: dict[str, int] = {}
    dup: set[str] = set()
    for pos, stmt in enumerate(func.body):
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                if n.id in seen or not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                                        and isinstance(stmt.targets[0], ast.Name)):
                    dup.add(n.id)
                seen.setdefault(n.id, pos)
    return {k: v for k, v in seen.items() if k not in dup}


def _shared_vars(tree: ast.Module, prog: ParsedProgram, other: ParsedProgram) -> list[tuple[str, str]]:
    an_m = analyse(tree, prog.np)
    an_o = analyse(other.tree, other.np)
    roots_m = {(s.func, s.target) for s in an_m.sites if s.is_root and s.info.level != "scalar"}
    roots_o = {(s.func, s.target) for s in an_o.sites if s.is_root and s.info.level != "scalar"}
    out = []
    for fname, target in sorted(roots_m & roots_o):
        fm, fo = an_m.ctx.functions[fname], an_o.ctx.functions[fname]
        am, ao = _assignments(fm), _assignments(fo)
        if target in am and target in ao and ast.dump(fm.body[am[target]].value) != ast.dump(fo.body[ao[target]].value):
            out.append((fname, target))
    return out


class _Importer:
    """Copies an expression from the other parent's function into the parent's, with its dependencies."""

    def __init__(self, tree: ast.Module, other: ast.Module, fname: str, pos: int):
        self.tree, self.other = tree, other
        self.pf = next(s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == fname)
        self.of = next(s for s in other.body if isinstance(s, ast.FunctionDef) and s.name == fname)
        pa = [a.arg for a in self.pf.args.posonlyargs + self.pf.args.args]
        oa = [a.arg for a in self.of.args.posonlyargs + self.of.args.args]
        if len(pa) != len(oa):
            raise NoEdit("different signatures")
        self.params = dict(zip(oa, pa))
        self.pos = pos
        self.added: dict[str, str] = {}
        self.all_names = names_in(tree) | names_in(other) | {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
        self.p_assign = _assignments(self.pf)
        self.o_assign = _assignments(self.of)
        self.p_top = Context(tree, None)
        self.o_top = Context(other, None)

    def fresh(self, base: str) -> str:
        k = 2
        while f"{base}_{k}" in self.all_names:
            k += 1
        name = f"{base}_{k}"
        self.all_names.add(name)
        return name

    def import_expr(self, expr: ast.expr, depth: int = 0) -> ast.expr:
        if depth > 12:
            raise NoEdit("dependency chain too deep")
        expr = copy.deepcopy(expr)
        rename: dict[str, str] = {}
        loads = list(dict.fromkeys(n.id for n in ast.walk(expr)
                                   if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)))
        for name in loads:
            if name in self.params:
                rename[name] = self.params[name]
            elif name in self.added:
                rename[name] = self.added[name]
            elif name in self.o_assign:
                odef = self.of.body[self.o_assign[name]].value
                ppos = self.p_assign.get(name)
                if ppos is not None and ppos < self.pos and ast.dump(self.pf.body[ppos].value) == ast.dump(odef):
                    continue
                taken = names_in(self.tree) | {a.arg for a in ast.walk(self.pf) if isinstance(a, ast.arg)}
                new_name = self.fresh(name) if name in taken else name
                self.all_names.add(new_name)
                value = self.import_expr(odef, depth + 1)
                self.pf.body.insert(self.pos, ast.Assign([ast.Name(new_name, ast.Store())], value))
                self.pos += 1
                self.added[name] = new_name
                rename[name] = new_name
            elif name in self.o_top.top_names:
                if name in self.p_top.top_names:
                    continue  # the parent's own constant/function of that name
                self._import_top(name, depth)
            # anything else (np, sp, builtins) is checked by the Checker
        if rename:
            for n in ast.walk(expr):
                if isinstance(n, ast.Name) and n.id in rename:
                    n.id = rename[n.id]
        return expr

    def _import_top(self, name: str, depth: int) -> None:
        for stmt in self.other.body:
            binds = (isinstance(stmt, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)) or (
                isinstance(stmt, ast.FunctionDef) and stmt.name == name)
            if binds:
                new = copy.deepcopy(stmt)
                body = self.tree.body
                first_func = next((i for i, s in enumerate(body) if isinstance(s, ast.FunctionDef)), len(body))
                if isinstance(new, ast.FunctionDef):
                    # its own globals must exist too
                    for n in ast.walk(new):
                        if (isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in self.o_top.top_names
                                and n.id not in self.p_top.top_names and n.id != name):
                            self._import_top(n.id, depth + 1)
                    first_func = next((i for i, s in enumerate(body)
                                       if isinstance(s, ast.FunctionDef) and s.name == self.pf.name), len(body))
                self.tree.body.insert(first_func, new)
                self.p_top.top_names.add(name)
                return
        raise NoEdit(f"cannot import {name}")


def _x_graft(tree: ast.Module, prog: ParsedProgram, other: ParsedProgram, rng, blend: bool = False) -> str:
    shared = _shared_vars(tree, prog, other)
    if not shared:
        raise NoEdit("no shared variables")
    fname, target = shared[int(rng.integers(len(shared)))]
    pf = next(s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == fname)
    pos = _assignments(pf)[target]
    imp = _Importer(tree, other.tree, fname, pos)
    ovalue = imp.of.body[imp.o_assign[target]].value
    new = imp.import_expr(ovalue)
    stmt = pf.body[imp.pos]
    if blend:
        c = coefficient(rng, 0.05, 2.0, 0.0)
        stmt.value = ast.BinOp(stmt.value, ast.Add(), ast.BinOp(ast.Constant(c), ast.Mult(), new))
        return f"{fname}/{target} += {c} * ({short_text(ovalue, 70)})"
    stmt.value = new
    return f"{fname}/{target} = {short_text(ovalue, 80)}"


def _x_blend(tree, prog, other, rng) -> str:
    return _x_graft(tree, prog, other, rng, blend=True)


def _state_reads(func: ast.FunctionDef) -> list[str]:
    out = []
    for n in ast.walk(func):
        for child in ast.iter_child_nodes(n):
            if isinstance(child, ast.Name) and child.id == "state" and isinstance(child.ctx, ast.Load):
                out.append(ast.unparse(n))
    return out


def _return_kind(func: ast.FunctionDef) -> str | None:
    for stmt in func.body:
        if isinstance(stmt, ast.Return) and stmt.value is not None:
            v = stmt.value
            if isinstance(v, ast.Call):
                kw = sorted(k.arg or "" for k in v.keywords)
                return f"{ast.unparse(v.func)}/{len(v.args)}/{kw}"
            return type(v).__name__
    return None


def _x_function(tree: ast.Module, prog: ParsedProgram, other: ParsedProgram, rng) -> str:
    mine = Context(tree, prog.np).functions
    theirs = Context(other.tree, other.np).functions
    if "prepare" in mine and "prepare" in theirs:
        if _return_kind(mine["prepare"]) != _return_kind(theirs["prepare"]):
            raise NoEdit("prepare returns different states")
    if "score" in mine and "score" in theirs and _state_reads(mine["score"]) != _state_reads(theirs["score"]):
        raise NoEdit("score reads the state differently")
    cands = [f for f in ("prepare", "score") if f in mine and f in theirs and ast.dump(mine[f]) != ast.dump(theirs[f])]
    if not cands:
        raise NoEdit("no differing function")
    fname = cands[int(rng.integers(len(cands)))]
    i = next(k for k, s in enumerate(tree.body) if isinstance(s, ast.FunctionDef) and s.name == fname)
    new = copy.deepcopy(theirs[fname])
    tree.body[i] = new
    p_top = Context(tree, prog.np).top_names
    o_top = Context(other.tree, other.np).top_names
    missing = [n.id for n in ast.walk(new) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
               and n.id in o_top and n.id not in p_top]
    for name in dict.fromkeys(missing):
        stmt = next((s for s in other.tree.body if (isinstance(s, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in s.targets))), None)
        if stmt is None:
            raise NoEdit(f"cannot bring {name}")
        first_func = next((k for k, s in enumerate(tree.body) if isinstance(s, ast.FunctionDef)), len(tree.body))
        tree.body.insert(first_func, copy.deepcopy(stmt))
    return f"{fname} from the other parent"


_CROSS = {"constants": _x_constants, "graft": _x_graft, "blend": _x_blend, "function": _x_function}
