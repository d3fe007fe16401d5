"""Static analysis of a block for the offline mutator: the *level* and *sign* of every expression.

Level is the shape family of a value: ``scalar``, ``term`` (one value per vocabulary term),
``doc`` (per document), ``q`` (per query term), ``p:<matrix>`` (one value per stored entry, a
*posting*, of a sparse matrix), ``M`` (a sparse matrix), ``index`` / ``query`` (the arguments),
``tuple`` (a ``prepare`` state that is a tuple, as a splice leaves it; ``state[k]`` is its part k), or
None (unknown); two incompatible levels in one expression give :data:`CONFLICT`. Sign is
:data:`POS` (> 0), :data:`NONNEG` (>= 0) or :data:`UNKNOWN`; constants are folded, so their value
is known too.

A few IR facts feed the sign analysis: ``index.n_docs >= index.df``,
``index.total_tokens >= index.cf``, and ``index.doc_len`` gathered at a posting is >= 1 (a
document with a posting has a term). ``index.title_tf`` is a posting-level array of ``index.term_doc``
(a variable bound to ``index.term_doc`` keeps that matrix's id, so the two mix), ``index.title_len``
a per-document one; every other attribute the contract added is unknown to the analysis. Names
used as subscripts are integer index arrays, never numeric features.

:class:`Context` holds the module-level facts of a block (constants, functions, the numpy alias,
the kind of state ``prepare`` returns); :class:`Scope` walks one function body statement by
statement (:meth:`Scope.bind`) and answers :meth:`Scope.info` for any expression at that point.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from .block import signed_const

POS, NONNEG, UNKNOWN = 2, 1, 0
_NUMERIC_LEVELS = ("scalar", "term", "doc", "q")


@dataclass(frozen=True)
class Info:
    """What the analysis knows about one expression (see the module docstring)."""

    level: str | None = None  # scalar | term | doc | q | p:<matrix> | M | index | query | None (unknown)
    sign: int = UNKNOWN
    value: float | None = None  # folded value of a constant scalar
    index: bool = False  # an integer index array (never edited, never a feature)
    mid: str | None = None  # matrix id (level "M")
    orient: str | None = None  # "td": rows are terms, columns documents
    data_sign: int = UNKNOWN  # sign of a matrix's stored values
    parts: tuple["Info", ...] | None = None  # level "tuple": what each element of a tuple state is

    @property
    def numeric(self) -> bool:
        """A numeric array or scalar (not an index array, a matrix or an argument): something edits may touch."""
        lvl = self.level
        return not self.index and lvl is not None and (lvl in _NUMERIC_LEVELS or lvl.startswith("p:"))


UNKNOWN_INFO = Info()  # nothing known
_INDEX_MATRICES = ("index.term_doc", "index.doc_term")
CONFLICT = "conflict"  # the level of an expression that mixes incompatible levels


def _const_info(v) -> Info:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return UNKNOWN_INFO
    v = float(v)
    if not math.isfinite(v):
        return Info("scalar", UNKNOWN, None)
    return Info("scalar", POS if v > 0 else NONNEG if v == 0 else UNKNOWN, v)


def _join_level(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    if a == CONFLICT or b == CONFLICT:
        return CONFLICT
    if a == "scalar":
        return b
    if b == "scalar" or a == b:
        return a
    return CONFLICT


class Scope:
    """Inference over one function body, statement by statement.

    Made for one function of ``ctx``; :meth:`bind` each top-level statement of the body in order, and
    :meth:`info` answers for expressions evaluated after the statements bound so far. ``env`` maps
    the variables bound so far to their :class:`Info`, ``defined`` holds every name bound so far
    (arguments included), ``slice_names`` the names the function uses inside subscripts.
    """

    def __init__(self, ctx: "Context", func: ast.FunctionDef):
        self.ctx = ctx
        self.func = func
        self.env: dict[str, Info] = {}
        self.defined: set[str] = set()
        self._memo: dict[int, tuple[ast.AST, Info]] = {}
        cached = ctx.slice_names.get(id(func))
        if cached is None or cached[0] is not func:
            names = set()
            for node in ast.walk(func):
                if isinstance(node, ast.Subscript):
                    for n in ast.walk(node.slice):
                        if isinstance(n, ast.Name):
                            names.add(n.id)
            cached = ctx.slice_names[id(func)] = (func, names)
        self.slice_names = cached[1]
        args = [a.arg for a in func.args.posonlyargs + func.args.args]
        for a in args:
            self.defined.add(a)
            if a == "index":
                self.env[a] = Info("index")
            elif a == "query":
                self.env[a] = Info("query")
            elif a == "state":
                self.env[a] = ctx.state_info
            else:
                self.env[a] = UNKNOWN_INFO

    # -- expressions -------------------------------------------------------------------------
    def info(self, node: ast.expr) -> Info:
        """Level and sign of an expression, given the statements bound so far (memoized until the next bind)."""
        key = id(node)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is node:
            return hit[1]
        out = self._info(node)
        self._memo[key] = (node, out)
        return out

    def _info(self, node: ast.expr) -> Info:
        np_ = self.ctx.np
        if isinstance(node, ast.Constant):
            return _const_info(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                i = self.env[node.id]
            elif node.id in self.ctx.constants:
                i = _const_info(self.ctx.constants[node.id])
            else:
                return UNKNOWN_INFO
            if node.id in self.slice_names and not i.index and i.level not in ("M", "index", "query"):
                i = Info(i.level, i.sign, i.value, True, i.mid, i.orient, i.data_sign)
            return i
        if isinstance(node, ast.Attribute):
            base = self.info(node.value)
            a = node.attr
            if base.level == "index":
                if a in ("n_docs", "n_terms", "total_tokens", "avg_doc_len"):
                    return Info("scalar", POS)
                if a in ("df", "cf"):
                    return Info("term", POS)
                if a == "doc_len":
                    return Info("doc", NONNEG)
                if a == "term_doc":
                    return Info("M", mid="index.term_doc", orient="td", data_sign=POS)
                if a == "doc_term":
                    return Info("M", mid="index.doc_term", orient="dt", data_sign=POS)
                if a == "title_tf":  # aligned with index.term_doc.data
                    return Info("p:index.term_doc", NONNEG)
                if a == "title_len":
                    return Info("doc", NONNEG)
                return UNKNOWN_INFO
            if base.level == "query":
                if a == "qtf":
                    return Info("q", POS)
                if a == "term_ids":
                    return Info("q", NONNEG, index=True)
                return UNKNOWN_INFO
            if base.level == "M":
                if a == "data":
                    return Info("p:" + base.mid, base.data_sign)
                if a == "indices":
                    return Info("p:" + base.mid, NONNEG, index=True)
                return UNKNOWN_INFO
            return UNKNOWN_INFO
        if isinstance(node, ast.Subscript):
            base = self.info(node.value)
            if base.parts is not None and isinstance(node.slice, ast.Constant) and type(node.slice.value) is int:
                k = node.slice.value
                return base.parts[k] if -len(base.parts) <= k < len(base.parts) else UNKNOWN_INFO
            idx = self.info(node.slice)
            if base.level == "M" and idx.level == "q":
                return Info("M", mid=f"{base.mid}[q]", orient=base.orient, data_sign=base.data_sign)
            if idx.level not in (None, "scalar", CONFLICT) and base.level in ("term", "doc", "q"):
                sign = base.sign
                if (base.level == "doc" and sign == NONNEG and is_index_attr(node.value, "doc_len")
                        and idx.level.startswith("p:")):
                    sign = POS  # a document that has a posting has at least one term
                return Info(idx.level, sign, index=base.index)
            return UNKNOWN_INFO
        if isinstance(node, ast.UnaryOp):
            o = self.info(node.operand)
            if isinstance(node.op, ast.USub):
                v = -o.value if o.value is not None else None
                return Info(o.level, _const_info(v).sign if v is not None else UNKNOWN, v)
            if isinstance(node.op, ast.UAdd):
                return o
            return UNKNOWN_INFO
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Call):
            return self._call(node, np_)
        return UNKNOWN_INFO

    def _binop(self, node: ast.BinOp) -> Info:
        if isinstance(node.op, ast.MatMult):
            return self._matvec(node)
        a, b = self.info(node.left), self.info(node.right)
        level = _join_level(a.level, b.level)
        value = None
        if a.value is not None and b.value is not None:
            try:
                value = _fold(node.op, a.value, b.value)
            except (ArithmeticError, ValueError, OverflowError):
                value = None
        if value is not None:
            return Info(level, _const_info(value).sign, value)
        sa, sb = a.sign, b.sign
        op = node.op
        if isinstance(op, ast.Add):
            sign = POS if min(sa, sb) >= NONNEG and max(sa, sb) == POS else NONNEG if min(sa, sb) >= NONNEG else UNKNOWN
        elif isinstance(op, ast.Mult):
            sign = min(sa, sb)
        elif isinstance(op, ast.Div):
            sign = sa if sb == POS else UNKNOWN
        elif isinstance(op, ast.Sub):
            sign = UNKNOWN
            # IR facts: n_docs >= df, total_tokens >= cf (also when gathered to postings)
            if (is_index_attr(node.left, "n_docs") and is_index_attr(_ungather(node.right), "df")) or (
                is_index_attr(node.left, "total_tokens") and is_index_attr(_ungather(node.right), "cf")
            ):
                sign = NONNEG
        elif isinstance(op, ast.Pow):
            sign = sa if sa >= NONNEG else UNKNOWN
        else:
            sign = UNKNOWN
            level = None
        return Info(level, sign)

    def _matvec(self, node: ast.BinOp) -> Info:
        """``rows.T @ v``: the query's rows of a term x doc matrix, summed per document with a per-query-term
        vector ``v``: a per-document array (non-negative when both the matrix and ``v`` are positive)."""
        m = is_transpose_of(node.left)
        mi = self.info(m) if m is not None else UNKNOWN_INFO
        v = self.info(node.right)
        if mi.level == "M" and mi.orient == "td" and v.level == "q":
            return Info("doc", NONNEG if min(mi.data_sign, v.sign) == POS else UNKNOWN)
        return UNKNOWN_INFO

    def _call(self, node: ast.Call, np_: str | None) -> Info:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "astype" and not node.keywords:
            return self.info(f.value)
        name = np_fn(f, np_)
        if name is None:
            if isinstance(f, ast.Attribute) and f.attr in ("csr_matrix", "csc_matrix"):
                return self._sparse_ctor(node)
            return UNKNOWN_INFO
        args = [self.info(a) for a in node.args]
        if node.keywords:
            return UNKNOWN_INFO
        if name in ("log1p", "sqrt", "log", "exp", "abs", "log2", "log10", "tanh") and len(args) == 1:
            x = args[0]
            if name in ("log1p", "sqrt"):
                sign = x.sign
            elif name == "exp":
                sign = POS
            elif name == "abs":
                sign = NONNEG
            elif name in ("log", "log2", "log10"):
                sign = POS if x.value is not None and x.value > 1 else UNKNOWN
            else:
                sign = x.sign
            return Info(x.level, sign)
        if name in ("maximum", "minimum", "power") and len(args) == 2:
            a, b = args
            level = _join_level(a.level, b.level)
            if name == "maximum":
                sign = max(a.sign, b.sign)
            elif name == "minimum":
                sign = min(a.sign, b.sign)
            else:
                sign = a.sign if a.sign >= NONNEG else UNKNOWN
            return Info(level, sign)
        if name in ("mean", "sum", "max", "min", "median") and len(args) == 1:
            return Info("scalar" if args[0].level is not None else None, args[0].sign)
        if name == "repeat" and len(node.args) == 2:
            r = node.args[1]
            if (isinstance(r, ast.Call) and np_fn(r.func, np_) == "diff" and len(r.args) == 1
                    and isinstance(r.args[0], ast.Attribute) and r.args[0].attr == "indptr"):
                m = self.info(r.args[0].value)
                if m.level == "M":
                    return Info("p:" + m.mid, args[0].sign, index=args[0].index)
            return UNKNOWN_INFO
        if name == "arange":
            return Info("index", NONNEG, index=True)
        return UNKNOWN_INFO

    def _sparse_ctor(self, node: ast.Call) -> Info:
        orient = None
        for kw in node.keywords:
            if kw.arg == "shape":
                if isinstance(kw.value, ast.Attribute) and kw.value.attr == "shape":
                    orient = self.info(kw.value.value).orient
        sign = UNKNOWN
        if node.args and isinstance(node.args[0], ast.Tuple) and node.args[0].elts:
            sign = self.info(node.args[0].elts[0]).sign
        return Info("M", mid="csr", orient=orient, data_sign=sign)

    # -- statements --------------------------------------------------------------------------
    def bind(self, stmt: ast.stmt) -> None:
        """Record what a top-level statement of the function binds."""
        self._memo.clear()
        if isinstance(stmt, ast.Assign):
            i = self.info(stmt.value)
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    if i.level == "M" and i.mid not in _INDEX_MATRICES:  # an alias of index.term_doc keeps its id
                        i = Info("M", mid=t.id, orient=i.orient, data_sign=i.data_sign)
                    if t.id in self.slice_names and i.level not in ("M",):
                        i = Info(i.level, i.sign, i.value, True, i.mid, i.orient, i.data_sign)
                    self.env[t.id] = i
                    self.defined.add(t.id)
                else:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            self.env[n.id] = UNKNOWN_INFO
                            self.defined.add(n.id)
        else:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    self.env[n.id] = UNKNOWN_INFO
                    self.defined.add(n.id)


def _fold(op, a: float, b: float) -> float | None:
    if isinstance(op, ast.Add):
        v = a + b
    elif isinstance(op, ast.Sub):
        v = a - b
    elif isinstance(op, ast.Mult):
        v = a * b
    elif isinstance(op, ast.Div):
        v = a / b
    elif isinstance(op, ast.Pow):
        v = a ** b
        if isinstance(v, complex):
            return None
    else:
        return None
    return float(v) if math.isfinite(v) else None


def np_fn(f: ast.expr, np_: str | None) -> str | None:
    """``"log"`` for ``np.log`` (with ``np_`` the numpy alias); None when ``f`` is not a numpy attribute."""
    if np_ and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == np_:
        return f.attr
    return None


def is_index_attr(node: ast.expr, attr: str) -> bool:
    """``node`` is ``index.<attr>``."""
    return (isinstance(node, ast.Attribute) and node.attr == attr
            and isinstance(node.value, ast.Name) and node.value.id == "index")


def _ungather(node: ast.expr) -> ast.expr:
    """The array a gather reads: ``a`` of ``a[idx]`` or of ``np.repeat(a, np.diff(M.indptr))``."""
    if isinstance(node, ast.Subscript):
        return node.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "repeat"
            and len(node.args) == 2):
        return node.args[0]
    return node


def is_transpose_of(node: ast.expr) -> ast.expr | None:
    """``M`` when ``node`` is ``M.T``, else None."""
    return node.value if isinstance(node, ast.Attribute) and node.attr == "T" else None


class Context:
    """Module-level facts of a block: constants, functions, the numpy alias, the state type."""

    def __init__(self, tree: ast.Module, np_alias: str | None):
        self.np = np_alias
        self.slice_names: dict[int, tuple[ast.FunctionDef, set[str]]] = {}  # cache for Scope
        self.constants: dict[str, float] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        self.top_names: set[str] = set()
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                v = signed_const(stmt.value)
                self.top_names.add(stmt.targets[0].id)
                if v is not None:
                    self.constants[stmt.targets[0].id] = v
            elif isinstance(stmt, ast.FunctionDef):
                self.functions[stmt.name] = stmt
                self.top_names.add(stmt.name)
            else:
                for n in ast.walk(stmt):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                        self.top_names.add(n.id)
        self.state_info = UNKNOWN_INFO
        prep = self.functions.get("prepare")
        if prep is not None:
            scope = Scope(self, prep)
            for stmt in prep.body:
                if isinstance(stmt, ast.Return) and stmt.value is not None:
                    self.state_info = _state_info(scope, stmt.value)
                    break
                scope.bind(stmt)


def _state_info(scope: Scope, value: ast.expr, depth: int = 0) -> Info:
    """What ``prepare`` returns: a matrix (mid ``state``), a tuple of such things (level ``tuple``, as a
    splice leaves it: ``(parent's state, extra)``), or unknown."""
    if isinstance(value, ast.Tuple) and depth < 8:
        return Info("tuple", parts=tuple(_state_info(scope, e, depth + 1) for e in value.elts))
    i = scope.info(value)
    if i.level == "M":
        return Info("M", mid="state", orient=i.orient, data_sign=i.data_sign)
    return UNKNOWN_INFO

