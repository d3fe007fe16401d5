"""Point edits of the offline mutator: one small change to one formula or constant at a time.

The operators (what each does is described in :mod:`evorank.evolve.offline.mutator`) are drawn by
weight (``_POINT_EDITS``); when the block has more than 40 editable sites, pruning becomes up to 4x
likelier and inserting as much less likely (bloat control). Each draw edits a fresh copy of the
parent's tree and is kept only when the :class:`~evorank.evolve.offline.checks.Checker` accepts
it; after ``MAX_TRIES`` draws (the last 8 forced to ``offline:constant``) the edit gives up.
A mutation applies 1-3 edits (probabilities 0.65 / 0.25 / 0.10), each to the previous child, all
checked against the original parent.

Constants take log-normal steps, one time in five a big one; constants in (0, 1) move in logit
space so they stay in (0, 1) (interpolation weights such as B). New ``log`` / ``sqrt`` / powers of
quantities of unknown sign get an ``np.maximum(x, floor)`` guard (floor 0, or ``_GUARD_FLOOR`` under
a ``log``); those floors are never perturbed.

When nothing applies, :func:`fallback_mutation` perturbs any float literal of the block, and as a
last resort returns the parent with operator ``offline:none``.
"""
from __future__ import annotations

import ast
import copy
import math

import numpy as np

from .analysis import NONNEG, POS, Info, Scope, is_index_attr, np_fn
from .block import (
    DEBUG,
    Mutation,
    NoEdit,
    ParsedProgram,
    fmt_number,
    format_block,
    is_num_const,
    number_node,
    round_sig,
    short_text,
    signed_const,
)
from .checks import Checker
from .sites import Analysis, Site, analyse

MAX_TRIES = 40  # draws of an edit (or a crossover) before giving up
_UNARY_FNS = ("log1p", "log", "sqrt")
_POWERS = (0.25, 0.5, 0.75, 1.25, 1.5, 2.0)
_GUARD_FLOOR = 1e-6  # floor used by np.log(np.maximum(x, floor)) guards


def _np_call(np_alias: str, fn: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Attribute(ast.Name(np_alias, ast.Load()), fn, ast.Load()), list(args), [])


def _guard(np_alias: str | None, node: ast.expr, info: Info, need: int) -> ast.expr:
    """Wrap node so that it is >= 0 (need=NONNEG) or > 0 (need=POS) when that is not known."""
    if info.sign >= need or np_alias is None:
        return node
    floor = 0.0 if need == NONNEG else _GUARD_FLOOR
    return _np_call(np_alias, "maximum", node, ast.Constant(floor))


def _replace_number(parent: ast.AST, fld: str, idx: int | None, value: float) -> None:
    """Put a number node for ``value`` where a constant was: ``parent.fld`` or ``parent.fld[idx]``."""
    node = number_node(value)
    if idx is None:
        setattr(parent, fld, node)
    else:
        getattr(parent, fld)[idx] = node


def _perturb(v: float, rng: np.random.Generator) -> float:
    big = rng.random() < 0.2
    s = 0.9 if big else 0.25
    for _ in range(8):
        if 0.0 < v < 1.0:
            z = math.log(v / (1.0 - v)) + rng.normal(0.0, 2.0 * s)
            new = 1.0 / (1.0 + math.exp(-z))
            new = min(max(new, 1e-3), 0.999)
        elif v == 0.0:
            new = rng.normal(0.0, 0.1)
        else:
            new = v * math.exp(rng.normal(0.0, s))
            if abs(new) > 1e6:
                new = math.copysign(1e6, new)
        new = round_sig(new)
        if new != v and new != 0.0:
            return new
        s *= 1.5
    return round_sig(v * 1.1) if v != 0 else 0.01


def _edit_constant(tree: ast.Module, an: Analysis, rng) -> str:
    consts = [c for c in an.consts if not (c[4] == 0.0 and c[5] == "literal") and not _is_guard_floor(c)]
    if not consts:
        raise NoEdit("no constants")
    w = np.array([3.0 if c[5] == "module" else 1.0 for c in consts])
    label, parent, fld, idx, v, kind = consts[int(rng.choice(len(consts), p=w / w.sum()))]
    new = _perturb(v, rng)
    _replace_number(parent, fld, idx, new)
    change = f"{fmt_number(v)} -> {fmt_number(new)}"
    return f"{label}: {change}" if kind == "module" else f"{label}: literal {change}"


def _is_guard_floor(c) -> bool:
    _, parent, fld, idx, v, kind = c
    return (kind == "literal" and isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute)
            and parent.func.attr == "maximum" and idx == 1 and 0 <= v <= _GUARD_FLOOR)


def _unary_form(node: ast.expr, np_alias: str | None) -> tuple[str, ast.expr] | None:
    """(current function, its argument) if node is f(x) for f in the unary family or x ** p."""
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        fn = np_fn(node.func, np_alias)
        if fn in _UNARY_FNS:
            return fn, node.args[0]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and is_num_const(node.right):
        return "pow", node.left
    return None


def _apply_unary(np_alias: str | None, fn: str, x: ast.expr, xi: Info, rng, p: float | None = None) -> ast.expr:
    if fn == "identity":
        return x
    if fn == "pow":
        if p is None:
            if rng.random() < 0.6:
                p = float(_POWERS[int(rng.integers(len(_POWERS)))])
            else:
                p = round_sig(math.exp(rng.normal(0, 0.4)), 3)
        return ast.BinOp(_guard(np_alias, x, xi, NONNEG), ast.Pow(), ast.Constant(p))
    if fn == "log":
        return _np_call(np_alias, "log", _guard(np_alias, x, xi, POS))
    return _np_call(np_alias, fn, _guard(np_alias, x, xi, NONNEG))


def _edit_unary(tree: ast.Module, an: Analysis, rng) -> str:
    sites = [s for s in an.sites if s.info.level != "scalar" and not isinstance(s.node, ast.Constant)]
    if not sites:
        raise NoEdit("no sites")
    s = sites[int(rng.integers(len(sites)))]
    np_alias = an.ctx.np
    fns = list(_UNARY_FNS) if np_alias else []
    form = _unary_form(s.node, np_alias)
    if form is not None:
        cur, x = form
        choices = [f for f in fns + ["pow", "identity"] if f != cur]
        if cur == "pow" and rng.random() < 0.4:
            choices = ["pow"]  # change the exponent
    else:
        cur, x = "identity", s.node
        choices = fns + ["pow"]
    if not choices:
        raise NoEdit("no unary choice")
    fn = choices[int(rng.integers(len(choices)))]
    scope = _scope_at(an, tree, s)
    xi = scope.info(x)
    p = None
    if cur == "pow" and fn == "pow":
        old = float(s.node.right.value)
        p = round_sig(old * math.exp(rng.normal(0, 0.3)), 3)
        if p == old:
            raise NoEdit("same exponent")
    new = _apply_unary(np_alias, fn, copy.deepcopy(x), xi, rng, p)
    old_text = short_text(s.node, 50)
    s.set(new)
    return f"{s.func}/{s.target}: {old_text} -> {short_text(new, 60)}"


def _scope_at(an: Analysis, tree: ast.Module, site: Site) -> Scope:
    func = an.ctx.functions[site.func]
    scope = Scope(an.ctx, func)
    for stmt in func.body[: site.stmt_pos]:
        scope.bind(stmt)
    return scope


_OPS = {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}


def _op_sym(op) -> str:
    for k, v in _OPS.items():
        if isinstance(op, v):
            return k
    return "**" if isinstance(op, ast.Pow) else "?"


def _edit_binop(tree: ast.Module, an: Analysis, rng) -> str:
    sites = [s for s in an.sites if isinstance(s.node, ast.BinOp) and _op_sym(s.node.op) in _OPS]
    if not sites:
        raise NoEdit("no binops")
    s = sites[int(rng.integers(len(sites)))]
    node = s.node
    old = _op_sym(node.op)
    before = short_text(node, 50)
    if old in "-/" and rng.random() < 0.25:
        node.left, node.right = node.right, node.left
        return f"{s.func}/{s.target}: swap operands of '{old}' in {before}"
    new = [k for k in _OPS if k != old][int(rng.integers(3))]
    node.op = _OPS[new]()
    return f"{s.func}/{s.target}: '{old}' -> '{new}' in {before}"


def _edit_prune(tree: ast.Module, an: Analysis, rng) -> str:
    sites = [s for s in an.sites if isinstance(s.node, ast.BinOp)]
    if not sites:
        raise NoEdit("nothing to prune")
    s = sites[int(rng.integers(len(sites)))]
    node = s.node
    sides = [node.left] if isinstance(node.op, ast.Pow) else [node.left, node.right]
    sides = [x for x in sides if signed_const(x) is None] or sides
    keep = sides[int(rng.integers(len(sides)))]
    before = short_text(node, 60)
    s.set(keep)
    return f"{s.func}/{s.target}: {before} -> {short_text(keep, 40)}"


def coefficient(rng, lo=0.01, hi=1.0, neg=0.3) -> float:
    """A log-uniform coefficient in [lo, hi] (3 significant digits), negative with probability ``neg``."""
    c = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return round_sig(-c if rng.random() < neg else c, 3)


def _feature_for(an: Analysis, site: Site, rng) -> tuple[ast.expr, Info] | None:
    """A feature expression at the site's level (gathered to postings where needed)."""
    lvl = site.info.level
    out: list[tuple[ast.expr, Info]] = []
    target_text = ast.unparse(site.node)
    gathers = an.gathers.get(site.func, {})
    for avail_from, expr, info in an.features.get(site.func, []):
        if avail_from > site.stmt_pos:
            continue
        text = ast.unparse(expr)
        if text == target_text or (isinstance(expr, ast.Name) and expr.id == site.target):
            continue
        if info.level == lvl:
            out.append((copy.deepcopy(expr), info))
        elif lvl and lvl.startswith("p:") and (info.level, lvl) in gathers:
            g = copy.deepcopy(gathers[(info.level, lvl)])
            sign = info.sign
            if info.level == "doc" and sign == NONNEG and is_index_attr(expr, "doc_len"):
                sign = POS
            if isinstance(g, ast.Call):  # np.repeat(<array>, np.diff(M.indptr))
                g.args[0] = copy.deepcopy(expr)
                out.append((g, Info(lvl, sign)))
            else:
                out.append((ast.Subscript(copy.deepcopy(expr), g, ast.Load()), Info(lvl, sign)))
    if not out:
        return None
    return out[int(rng.integers(len(out)))]


def _plus(a: ast.expr, c: float, t: ast.expr | None) -> ast.expr:
    """``a + c * t`` (``a + c`` when t is None), written ``a - |c| * t`` when c < 0."""
    term = ast.Constant(abs(c)) if t is None else ast.BinOp(ast.Constant(abs(c)), ast.Mult(), t)
    return ast.BinOp(a, ast.Sub() if c < 0 else ast.Add(), term)


def _edit_insert(tree: ast.Module, an: Analysis, rng) -> str:
    sites = [s for s in an.sites if s.info.level is not None and s.info.level != "scalar"]
    if not sites:
        raise NoEdit("no sites")
    roots = [s for s in sites if s.is_root]
    s = roots[int(rng.integers(len(roots)))] if roots and rng.random() < 0.35 else sites[int(rng.integers(len(sites)))]
    np_alias = an.ctx.np
    E = copy.deepcopy(s.node)
    form = ["mul1", "add", "div1", "powmul", "shift", "scale"][
        int(rng.choice(6, p=np.array([0.28, 0.22, 0.12, 0.14, 0.14, 0.10])))]
    if form == "shift":
        c = coefficient(rng, 0.01, 1.0, 0.2)
        new = _plus(E, c, None)
    elif form == "scale":
        if s.is_root:
            raise NoEdit("scaling a whole statement changes nothing")
        c = round_sig(math.exp(rng.normal(0, 0.5)), 3)
        new = ast.BinOp(ast.Constant(c), ast.Mult(), E)
    else:
        feat = _feature_for(an, s, rng)
        if feat is None:
            raise NoEdit("no feature at this level")
        F, fi = feat
        tr = ["log1p", "sqrt", "ratio", "sat", "identity"][int(rng.choice(5, p=np.array([0.3, 0.2, 0.15, 0.2, 0.15])))]
        if np_alias is None:
            tr = "identity"
        if tr in ("ratio", "sat") and fi.sign != POS:
            tr = "log1p"
        if tr == "log1p":
            T, ti = _np_call(np_alias, "log1p", _guard(np_alias, F, fi, NONNEG)), NONNEG
        elif tr == "sqrt":
            T, ti = _np_call(np_alias, "sqrt", _guard(np_alias, F, fi, NONNEG)), NONNEG
        elif tr == "ratio":
            T, ti = ast.BinOp(F, ast.Div(), _np_call(np_alias, "mean", copy.deepcopy(F))), POS
        elif tr == "sat":
            k = round_sig(math.exp(rng.normal(0, 0.7)), 3)
            mean = _np_call(np_alias, "mean", copy.deepcopy(F))
            den = ast.BinOp(copy.deepcopy(F), ast.Add(), ast.BinOp(ast.Constant(k), ast.Mult(), mean))
            T, ti = ast.BinOp(F, ast.Div(), den), POS
        else:
            T, ti = F, fi.sign
        if form in ("div1", "powmul") and ti < NONNEG:
            form = "mul1"
        if form == "mul1":
            c = coefficient(rng, 0.02, 1.0, 0.3)
            new = ast.BinOp(E, ast.Mult(), _plus(ast.Constant(1.0), c, T))
        elif form == "add":
            c = coefficient(rng, 0.01, 1.0, 0.3)
            new = _plus(E, c, T)
        elif form == "div1":
            c = coefficient(rng, 0.02, 1.0, 0.0)
            den = ast.BinOp(ast.Constant(1.0), ast.Add(), ast.BinOp(ast.Constant(c), ast.Mult(), T))
            new = ast.BinOp(E, ast.Div(), den)
        else:
            c = round_sig(rng.uniform(0.05, 0.6) * (-1 if rng.random() < 0.5 else 1), 3)
            one_plus = ast.BinOp(ast.Constant(1.0), ast.Add(), T)
            new = ast.BinOp(E, ast.Mult(), ast.BinOp(one_plus, ast.Pow(), number_node(c)))
    s.set(new)
    return f"{s.func}/{s.target}: {short_text(s.node, 40)} -> {short_text(new, 80)}"


# operator -> (relative weight, edit); insert/prune are re-weighted by the block's size
_POINT_EDITS = {
    "offline:constant": (0.40, _edit_constant),
    "offline:unary_swap": (0.15, _edit_unary),
    "offline:binop": (0.10, _edit_binop),
    "offline:insert_term": (0.25, _edit_insert),
    "offline:prune": (0.10, _edit_prune),
}
POINT_OPERATORS = tuple(_POINT_EDITS)


def point_edit(prog: ParsedProgram, checker: Checker, rng, kind: str | None = None) -> tuple[ast.Module, str, str, str]:
    """Apply one point edit that ``checker`` accepts to a fresh copy of ``checker``'s tree.

    ``kind`` forces the operator (else drawn by weight). Returns (child tree, child block text,
    operator, description); raises NoEdit when no draw in ``MAX_TRIES`` was accepted.
    """
    p = None
    kinds = list(_POINT_EDITS)
    for attempt in range(MAX_TRIES):
        tree = checker.fresh_tree()
        an = analyse(tree, prog.np)
        if p is None:
            weights = {k: w for k, (w, _) in _POINT_EDITS.items()}
            size = len(an.sites)
            if size > 40:  # bloat control: the bigger the formulas, the more pruning and the less inserting
                f = min(size / 40.0, 4.0)
                weights["offline:prune"] *= f
                weights["offline:insert_term"] /= f
            p = np.array([weights[k] for k in kinds])
            p = p / p.sum()
        k = kind or kinds[int(rng.choice(len(kinds), p=p))]
        if attempt >= MAX_TRIES - 8:
            k = "offline:constant"  # the fallback that always exists when a constant does
        try:
            desc = _POINT_EDITS[k][1](tree, an, rng)
            text, reparsed = checker.accept(tree)
        except NoEdit:
            continue
        except Exception:  # an odd construct the analysis does not model: treat as "does not apply"
            if DEBUG.strict:
                raise
            continue
        return reparsed, text, k, desc
    raise NoEdit("no applicable edit")


def _n_edits(rng) -> int:
    u = rng.random()
    return 1 if u < 0.65 else 2 if u < 0.9 else 3


def _combine_ops(kinds: list[str]) -> str:
    uniq = list(dict.fromkeys(kinds))
    if len(uniq) == 1:
        return uniq[0]
    return "offline:" + "+".join(k.split(":", 1)[1] for k in uniq)


def point_mutation(prog: ParsedProgram, rng: np.random.Generator, n_edits: int | None = None) -> Mutation:
    """A child of ``prog`` by ``n_edits`` point edits (1-3 drawn when None), each applied to the previous
    child and checked against ``prog``'s thresholds. Never raises (unless ``DEBUG.strict``): when no
    edit applies, :func:`fallback_mutation`."""
    try:
        return _mutate_points(prog, rng, n_edits)
    except Exception:
        if DEBUG.strict:
            raise
        return fallback_mutation(prog, rng)


def _mutate_points(prog: ParsedProgram, rng, n_edits: int | None) -> Mutation:
    n = max(1, int(n_edits if n_edits is not None else _n_edits(rng)))
    base = Checker(prog)
    checker = base
    text = base.base_text
    kinds, descs = [], []
    for _ in range(n + 2):
        if len(kinds) >= n and text != base.base_text:
            break
        try:
            tree, text, k, desc = point_edit(checker.prog, checker, rng)
        except NoEdit:
            break
        kinds.append(k)
        descs.append(desc)
        checker = Checker(ParsedProgram(prog.head, prog.tail, tree, prog.np, prog.outer_names), base=base)
    if not kinds or text == base.base_text:
        return fallback_mutation(prog, rng)
    return Mutation(prog.head + text + prog.tail, _combine_ops(kinds), "; ".join(descs))


def fallback_mutation(prog: ParsedProgram, rng) -> Mutation:
    """Perturb a constant: one the analysis understands if possible, else any float literal of the
    block; as a last resort the parent itself, with operator ``offline:none``. Never raises (unless
    ``DEBUG.strict``)."""
    try:
        checker = Checker(prog)
        for _ in range(MAX_TRIES // 2):
            tree = copy.deepcopy(prog.tree)
            an = analyse(tree, prog.np)
            if not an.consts:
                break
            desc = _edit_constant(tree, an, rng)
            try:
                return Mutation(prog.head + checker.accept(tree)[0] + prog.tail, "offline:constant", desc)
            except NoEdit:
                continue
    except Exception:
        if DEBUG.strict:
            raise
    tree = copy.deepcopy(prog.tree)
    lits = _loose_literals(tree)
    if lits:
        parent, fld, idx, v = lits[int(rng.integers(len(lits)))]
        new = _perturb(v, rng)
        _replace_number(parent, fld, idx, new)
        ast.fix_missing_locations(tree)
        text = format_block(tree)
        try:
            compile(text, "<block>", "exec")
            desc = f"literal {fmt_number(v)} -> {fmt_number(new)}"
            return Mutation(prog.head + text + prog.tail, "offline:constant", desc)
        except (SyntaxError, ValueError):  # pragma: no cover
            pass
    return Mutation(prog.head + format_block(prog.tree) + prog.tail, "offline:none", "no applicable edit")


def _loose_literals(tree: ast.Module) -> list[tuple[ast.AST, str, int | None, float]]:
    """Non-zero finite float literals anywhere in the block except inside subscripts and keyword
    arguments (where they are indices or options), as (parent, field, index, value)."""
    out = []
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Subscript):
            skip.update(id(x) for x in ast.walk(n.slice))
        elif isinstance(n, ast.keyword):
            skip.update(id(x) for x in ast.walk(n.value))
        elif isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant):
            skip.add(id(n.value))
    for parent in ast.walk(tree):
        for fld, value in ast.iter_fields(parent):
            items = [(None, value)] if not isinstance(value, list) else list(enumerate(value))
            for idx, child in items:
                if (isinstance(child, ast.Constant) and type(child.value) is float and id(child) not in skip
                        and math.isfinite(child.value) and child.value != 0.0):
                    if isinstance(parent, ast.UnaryOp):
                        continue  # -c: perturbing c keeps the sign, handled as its own constant below
                    out.append((parent, fld, idx, float(child.value)))
    return out

