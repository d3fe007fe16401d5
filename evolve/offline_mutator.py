"""Offline mutator (``--llm offline``): genetic programming over a program's EVOLVE-BLOCK AST.

No network and no LLM: the block is parsed with :mod:`ast`, one or a few generic edits are applied,
and the block is written back with :func:`ast.unparse`. The head and tail of the program stay
byte-identical. Every draw comes from the ``numpy.random.Generator`` passed in, so the same parent
text and the same generator state always give the same child.

Point edits (``mutate``), each recorded as ``Mutation.operator``:

``offline:constant``     perturb a numeric constant (a module-level ``NAME = number`` or a literal in a
                         weight formula): log-normal steps, occasionally a big jump; constants in (0, 1)
                         move in logit space so they stay in (0, 1) (interpolation weights such as B).
``offline:unary_swap``   replace or insert a unary function on a sub-expression of a weight formula:
                         ``np.log1p`` / ``np.log`` / ``np.sqrt`` / identity / ``x ** p``.
``offline:binop``        swap a binary operator (``+ - * /``) or the operands of ``-`` and ``/``.
``offline:insert_term``  insert a term built from a feature already in scope (a local weight
                         variable, a leaf of the formula, ``index.df`` / ``index.cf`` / ``index.doc_len``
                         gathered to the postings the way the program already gathers), e.g.
                         ``E * (1 + c * np.log1p(F))``, ``E + c * F``, ``E / (1 + c * F)``,
                         ``E * (1 + F) ** c``, ``E + c`` or ``c * E``.
``offline:prune``        replace a binary operation by one of its operands (the GP "hoist"; fights bloat).

Recombination (``crossover``, operator ``offline:crossover``): take module constants from the other
parent, graft the other parent's definition of a variable (with the local definitions it depends on),
blend the two definitions (``mine + c * theirs``), or take a whole function from the other parent when
both ``prepare`` functions return the same kind of state.

Where edits go: only right-hand sides of assignments inside functions that compute numeric arrays or
scalars (the weight computation), plus module-level constants. Index arrays (anything used as a
subscript), sparse matrices, ``np.bincount`` / ``np.where`` statements and ``return`` statements are
never touched, so the ``-np.inf`` for unmatched documents and the bincount structure stay intact.

Safety: a small static analysis infers, for every expression, its *level* (scalar, per-term,
per-document, per-posting of a given matrix, per-query-term) and its *sign* (positive, non-negative,
unknown; constants are folded). An edit is kept only if every assignment keeps its level (no shape
mismatches), every name it reads is defined, and the number of numerically unsafe sites (division
by, ``log`` of, ``sqrt``/``log1p``/fractional power of something not known to be in the domain) does
not grow. New ``log``/``sqrt``/powers of quantities of unknown sign get an ``np.maximum`` guard.
A few IR facts feed the sign analysis: ``index.n_docs >= index.df``, ``index.total_tokens >= index.cf``,
``index.doc_len`` gathered at a posting is >= 1. A bloat cap keeps any one formula under
``_MAX_STMT_NODES`` AST nodes.

Generated code uses only the names the parent programs already use, fresh local variables that a
crossover graft may bind (``tf_2``), and these attributes of the numpy alias: ``np.log``,
``np.log1p``, ``np.sqrt``, ``np.maximum``, ``np.mean``. No imports, no builtins the parent did not use.

When nothing applies (a block the analysis does not understand), ``mutate`` perturbs any float
literal of the block; when there is none, it returns the parent unchanged with operator
``offline:none``. ``Mutation.archive_operator`` maps the operator to ``ProgramRecord.operator``
(``offline`` or ``crossover``).
"""
from __future__ import annotations

import ast
import builtins
import copy
import math
from dataclasses import dataclass, field

import numpy as np

from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program import split_block

OPERATORS = (
    "offline:constant",
    "offline:unary_swap",
    "offline:binop",
    "offline:insert_term",
    "offline:prune",
    "offline:crossover",
)

# Relative weights of the point edits (insert/prune are re-weighted by the block's size).
_POINT_WEIGHTS = {
    "offline:constant": 0.40,
    "offline:unary_swap": 0.15,
    "offline:binop": 0.10,
    "offline:insert_term": 0.25,
    "offline:prune": 0.10,
}
_MAX_TRIES = 40
_MAX_STMT_NODES = 80  # bloat cap: an edit may not grow a formula beyond this many AST nodes
_STRICT = False  # tests set this to surface analysis bugs instead of skipping the edit
_UNARY_FNS = ("log1p", "log", "sqrt")
_POWERS = (0.25, 0.5, 0.75, 1.25, 1.5, 2.0)
_GUARD_FLOOR = 1e-6  # floor used by np.log(np.maximum(x, floor)) guards


@dataclass
class Mutation:
    """One proposed child program."""

    source: str  # full program text: parent head + new block + parent tail
    operator: str  # one of OPERATORS, or "offline:a+b" when several point edits of different kinds were applied
    description: str  # one line, human readable, e.g. "B: 0.4 -> 0.55"

    @property
    def archive_operator(self) -> str:
        """The value for ``ProgramRecord.operator``: ``crossover`` or ``offline``."""
        return "crossover" if self.operator.startswith("offline:crossover") else "offline"


class _NoEdit(Exception):
    """This edit kind does not apply to this program (or this draw); try another."""


# --------------------------------------------------------------------------------------------
# Parsing and writing the block
# --------------------------------------------------------------------------------------------

@dataclass
class _Program:
    head: str
    tail: str
    tree: ast.Module
    np: str | None  # the numpy alias the head imports (usually "np")
    outer_names: frozenset[str]  # names bound outside the block (imports, definitions in head/tail)


def _parse(source: str, what: str = "parent") -> _Program:
    try:
        parts = split_block(source)
    except ProgramError as e:
        raise ValueError(f"{what} program has no usable EVOLVE-BLOCK: {e}") from None
    try:
        tree = ast.parse(parts.block)
    except SyntaxError as e:
        raise ValueError(f"the EVOLVE-BLOCK of the {what} program does not parse: line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"the EVOLVE-BLOCK of the {what} program does not parse: {type(e).__name__}: {e}") from None
    np_alias, outer = None, set()
    for text in (parts.head, parts.tail):
        try:
            outer_tree = ast.parse(text)
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
    return _Program(parts.head, parts.tail, tree, np_alias, frozenset(outer))


def _format_block(tree: ast.Module) -> str:
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


def _short(node_or_text, limit: int = 90) -> str:
    text = node_or_text if isinstance(node_or_text, str) else ast.unparse(node_or_text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Static analysis: level (shape family) and sign of expressions
# --------------------------------------------------------------------------------------------

POS, NONNEG, UNKNOWN = 2, 1, 0
_NUMERIC_LEVELS = ("scalar", "term", "doc", "q")


@dataclass(frozen=True)
class _Info:
    level: str | None = None  # scalar | term | doc | q | p:<matrix> | M | index | query | None (unknown)
    sign: int = UNKNOWN
    value: float | None = None  # folded value of a constant scalar
    index: bool = False  # an integer index array (never edited, never a feature)
    mid: str | None = None  # matrix id (level "M")
    orient: str | None = None  # "td": rows are terms, columns documents
    data_sign: int = UNKNOWN  # sign of a matrix's stored values

    @property
    def numeric(self) -> bool:
        lvl = self.level
        return not self.index and lvl is not None and (lvl in _NUMERIC_LEVELS or lvl.startswith("p:"))


_UNK = _Info()
_CONFLICT = "conflict"


def _const_info(v) -> _Info:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return _UNK
    v = float(v)
    if not math.isfinite(v):
        return _Info("scalar", UNKNOWN, None)
    return _Info("scalar", POS if v > 0 else NONNEG if v == 0 else UNKNOWN, v)


def _is_num_const(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _signed_const(node) -> float | None:
    if _is_num_const(node):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_num_const(node.operand):
        return -float(node.operand.value)
    return None


def _num(v: float) -> ast.expr:
    v = float(v)
    return ast.UnaryOp(ast.USub(), ast.Constant(-v)) if v < 0 else ast.Constant(v)


def _round(v: float, digits: int = 4) -> float:
    return float(f"{v:.{digits}g}")


def _join_level(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    if a == _CONFLICT or b == _CONFLICT:
        return _CONFLICT
    if a == "scalar":
        return b
    if b == "scalar" or a == b:
        return a
    return _CONFLICT


class _Scope:
    """Inference over one function body, statement by statement."""

    def __init__(self, ctx: "_Context", func: ast.FunctionDef):
        self.ctx = ctx
        self.func = func
        self.env: dict[str, _Info] = {}
        self.defined: set[str] = set()
        self._memo: dict[int, tuple[ast.AST, _Info]] = {}
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
                self.env[a] = _Info("index")
            elif a == "query":
                self.env[a] = _Info("query")
            elif a == "state":
                self.env[a] = ctx.state_info
            else:
                self.env[a] = _UNK

    # -- expressions -------------------------------------------------------------------------
    def info(self, node: ast.expr) -> _Info:
        """Level and sign of an expression, given the statements bound so far (memoized until the next bind)."""
        key = id(node)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is node:
            return hit[1]
        out = self._info(node)
        self._memo[key] = (node, out)
        return out

    def _info(self, node: ast.expr) -> _Info:
        np_ = self.ctx.np
        if isinstance(node, ast.Constant):
            return _const_info(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                i = self.env[node.id]
            elif node.id in self.ctx.constants:
                i = _const_info(self.ctx.constants[node.id])
            else:
                return _UNK
            if node.id in self.slice_names and not i.index and i.level not in ("M", "index", "query"):
                i = _Info(i.level, i.sign, i.value, True, i.mid, i.orient, i.data_sign)
            return i
        if isinstance(node, ast.Attribute):
            base = self.info(node.value)
            a = node.attr
            if base.level == "index":
                if a in ("n_docs", "n_terms", "total_tokens", "avg_doc_len"):
                    return _Info("scalar", POS)
                if a in ("df", "cf"):
                    return _Info("term", POS)
                if a == "doc_len":
                    return _Info("doc", NONNEG)
                if a == "term_doc":
                    return _Info("M", mid="index.term_doc", orient="td", data_sign=POS)
                if a == "doc_term":
                    return _Info("M", mid="index.doc_term", orient="dt", data_sign=POS)
                return _UNK
            if base.level == "query":
                if a == "qtf":
                    return _Info("q", POS)
                if a == "term_ids":
                    return _Info("q", NONNEG, index=True)
                return _UNK
            if base.level == "M":
                if a == "data":
                    return _Info("p:" + base.mid, base.data_sign)
                if a == "indices":
                    return _Info("p:" + base.mid, NONNEG, index=True)
                return _UNK
            return _UNK
        if isinstance(node, ast.Subscript):
            base, idx = self.info(node.value), self.info(node.slice)
            if base.level == "M" and idx.level == "q":
                return _Info("M", mid=f"{base.mid}[q]", orient=base.orient, data_sign=base.data_sign)
            if idx.level not in (None, "scalar", _CONFLICT) and base.level in ("term", "doc", "q"):
                sign = base.sign
                if (base.level == "doc" and sign == NONNEG and _is_index_attr(node.value, "doc_len")
                        and idx.level.startswith("p:")):
                    sign = POS  # a document that has a posting has at least one term
                return _Info(idx.level, sign, index=base.index)
            return _UNK
        if isinstance(node, ast.UnaryOp):
            o = self.info(node.operand)
            if isinstance(node.op, ast.USub):
                v = -o.value if o.value is not None else None
                return _Info(o.level, _const_info(v).sign if v is not None else UNKNOWN, v)
            if isinstance(node.op, ast.UAdd):
                return o
            return _UNK
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Call):
            return self._call(node, np_)
        return _UNK

    def _binop(self, node: ast.BinOp) -> _Info:
        a, b = self.info(node.left), self.info(node.right)
        level = _join_level(a.level, b.level)
        value = None
        if a.value is not None and b.value is not None:
            try:
                value = _fold(node.op, a.value, b.value)
            except (ArithmeticError, ValueError, OverflowError):
                value = None
        if value is not None:
            return _Info(level, _const_info(value).sign, value)
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
            if (_is_index_attr(node.left, "n_docs") and _is_index_attr(_ungather(node.right), "df")) or (
                _is_index_attr(node.left, "total_tokens") and _is_index_attr(_ungather(node.right), "cf")
            ):
                sign = NONNEG
        elif isinstance(op, ast.Pow):
            sign = sa if sa >= NONNEG else UNKNOWN
        else:
            sign = UNKNOWN
            level = None
        return _Info(level, sign)

    def _call(self, node: ast.Call, np_: str | None) -> _Info:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "astype" and not node.keywords:
            return self.info(f.value)
        name = _np_fn(f, np_)
        if name is None:
            if isinstance(f, ast.Attribute) and f.attr in ("csr_matrix", "csc_matrix"):
                return self._sparse_ctor(node)
            return _UNK
        args = [self.info(a) for a in node.args]
        if node.keywords:
            return _UNK
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
            return _Info(x.level, sign)
        if name in ("maximum", "minimum", "power") and len(args) == 2:
            a, b = args
            level = _join_level(a.level, b.level)
            if name == "maximum":
                sign = max(a.sign, b.sign)
            elif name == "minimum":
                sign = min(a.sign, b.sign)
            else:
                sign = a.sign if a.sign >= NONNEG else UNKNOWN
            return _Info(level, sign)
        if name in ("mean", "sum", "max", "min", "median") and len(args) == 1:
            return _Info("scalar" if args[0].level is not None else None, args[0].sign)
        if name == "repeat" and len(node.args) == 2:
            r = node.args[1]
            if (isinstance(r, ast.Call) and _np_fn(r.func, np_) == "diff" and len(r.args) == 1
                    and isinstance(r.args[0], ast.Attribute) and r.args[0].attr == "indptr"):
                m = self.info(r.args[0].value)
                if m.level == "M":
                    return _Info("p:" + m.mid, args[0].sign, index=args[0].index)
            return _UNK
        if name == "arange":
            return _Info("index", NONNEG, index=True)
        return _UNK

    def _sparse_ctor(self, node: ast.Call) -> _Info:
        orient = None
        for kw in node.keywords:
            if kw.arg == "shape":
                if isinstance(kw.value, ast.Attribute) and kw.value.attr == "shape":
                    orient = self.info(kw.value.value).orient
        sign = UNKNOWN
        if node.args and isinstance(node.args[0], ast.Tuple) and node.args[0].elts:
            sign = self.info(node.args[0].elts[0]).sign
        return _Info("M", mid="csr", orient=orient, data_sign=sign)

    # -- statements --------------------------------------------------------------------------
    def bind(self, stmt: ast.stmt) -> None:
        """Record what a top-level statement of the function binds."""
        self._memo.clear()
        if isinstance(stmt, ast.Assign):
            i = self.info(stmt.value)
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    if i.level == "M":
                        i = _Info("M", mid=t.id, orient=i.orient, data_sign=i.data_sign)
                    if t.id in self.slice_names and i.level not in ("M",):
                        i = _Info(i.level, i.sign, i.value, True, i.mid, i.orient, i.data_sign)
                    self.env[t.id] = i
                    self.defined.add(t.id)
                else:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            self.env[n.id] = _UNK
                            self.defined.add(n.id)
        else:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    self.env[n.id] = _UNK
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


def _np_fn(f: ast.expr, np_: str | None) -> str | None:
    if np_ and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == np_:
        return f.attr
    return None


def _is_index_attr(node: ast.expr, attr: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == attr
            and isinstance(node.value, ast.Name) and node.value.id == "index")


def _ungather(node: ast.expr) -> ast.expr:
    return node.value if isinstance(node, ast.Subscript) else node


class _Context:
    """Module-level facts of a block: constants, functions, the numpy alias, the state type."""

    def __init__(self, tree: ast.Module, np_alias: str | None):
        self.np = np_alias
        self.slice_names: dict[int, tuple[ast.FunctionDef, set[str]]] = {}  # cache for _Scope
        self.constants: dict[str, float] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        self.top_names: set[str] = set()
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                v = _signed_const(stmt.value)
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
        self.state_info = _UNK
        prep = self.functions.get("prepare")
        if prep is not None:
            scope = _Scope(self, prep)
            for stmt in prep.body:
                if isinstance(stmt, ast.Return) and stmt.value is not None:
                    i = scope.info(stmt.value)
                    if i.level == "M":
                        self.state_info = _Info("M", mid="state", orient=i.orient, data_sign=i.data_sign)
                    break
                scope.bind(stmt)


# --------------------------------------------------------------------------------------------
# Sites: editable statements and sub-expressions
# --------------------------------------------------------------------------------------------

@dataclass
class _Site:
    """A replaceable expression: ``set(new)`` puts a node in its place."""

    node: ast.expr
    parent: ast.AST
    field: str
    idx: int | None
    func: str
    target: str  # the variable the statement assigns
    stmt_pos: int  # position of the statement in the function body
    is_root: bool
    info: _Info

    def set(self, new: ast.expr) -> None:
        if self.idx is None:
            setattr(self.parent, self.field, new)
        else:
            getattr(self.parent, self.field)[self.idx] = new


@dataclass
class _Analysis:
    ctx: _Context
    sites: list[_Site] = field(default_factory=list)  # every editable sub-expression
    consts: list[tuple[str, ast.AST, str, int | None, float, str]] = field(default_factory=list)
    gathers: dict[str, dict[tuple[str, str], ast.expr]] = field(default_factory=dict)
    features: dict[str, list[tuple[int, ast.expr, _Info]]] = field(default_factory=dict)


_TRANSPARENT_FNS = ("log1p", "log", "sqrt", "maximum", "minimum", "power", "exp", "abs")


def _analyse(tree: ast.Module, np_alias: str | None) -> _Analysis:
    ctx = _Context(tree, np_alias)
    an = _Analysis(ctx)
    # module-level numeric constants that something reads
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id in used):
            v = _signed_const(stmt.value)
            if v is not None:
                an.consts.append((stmt.targets[0].id, stmt, "value", None, v, "module"))
    for fname, func in ctx.functions.items():
        scope = _Scope(ctx, func)
        feats: list[tuple[int, ast.expr, _Info]] = []
        gathers: dict[tuple[str, str], ast.expr] = {}
        seen_feats: set[str] = set()
        for pos, stmt in enumerate(func.body):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target = stmt.targets[0].id
                rhs_info = scope.info(stmt.value)
                if rhs_info.numeric and target not in scope.slice_names:
                    _collect_sites(an, scope, stmt, "value", None, stmt.value, fname, target, pos, True)
                # learn how this function gathers per-term / per-document arrays to postings
                for n in ast.walk(stmt.value):
                    if isinstance(n, ast.Subscript):
                        bi, ii = scope.info(n.value), scope.info(n.slice)
                        if bi.level in ("term", "doc") and ii.level and ii.level.startswith("p:"):
                            gathers.setdefault((bi.level, ii.level), n.slice)
                scope.bind(stmt)
                i = scope.env.get(target, _UNK)
                if i.numeric and i.value is None and target not in seen_feats:
                    seen_feats.add(target)
                    feats.append((pos + 1, ast.Name(target, ast.Load()), i))
            else:
                scope.bind(stmt)
        # leaves of editable formulas are features too (from their statement on), unless a variable
        # already holds the same expression
        var_rhs = {ast.unparse(st.value): st.targets[0].id for st in func.body
                   if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
                   and isinstance(st.value, (ast.Subscript, ast.Attribute, ast.Call))}
        for s in an.sites:
            if s.func != fname:
                continue
            n = s.node
            if isinstance(n, (ast.Subscript, ast.Attribute, ast.Call)) and s.info.numeric and s.info.level != "scalar":
                if isinstance(n, ast.Call) and _np_fn(n.func, np_alias) in _TRANSPARENT_FNS:
                    continue
                key = ast.unparse(n)
                if var_rhs.get(key) in seen_feats:
                    continue
                if key not in seen_feats:
                    seen_feats.add(key)
                    feats.append((s.stmt_pos, n, s.info))
        # index attributes, when the function has an `index` parameter
        params = [a.arg for a in func.args.posonlyargs + func.args.args]
        if "index" in params:
            for attr, level, sign in (("df", "term", POS), ("cf", "term", POS), ("doc_len", "doc", NONNEG)):
                key = f"index.{attr}"
                if key not in seen_feats:
                    seen_feats.add(key)
                    node = ast.Attribute(ast.Name("index", ast.Load()), attr, ast.Load())
                    feats.append((0, node, _Info(level, sign)))
        # for term x doc matrices, M.indices gathers per-document arrays to postings
        for name, i in scope.env.items():
            if i.level == "M" and i.orient == "td":
                indices = ast.Attribute(ast.Name(name, ast.Load()), "indices", ast.Load())
                gathers.setdefault(("doc", "p:" + i.mid), indices)
        an.gathers[fname] = gathers
        an.features[fname] = feats
    return an


def _collect_sites(an: _Analysis, scope: _Scope, parent, fld, idx, node, fname, target, pos, is_root) -> None:
    info = scope.info(node)
    v = _signed_const(node)
    if v is not None:
        an.consts.append((f"{fname}/{target}", parent, fld, idx, v, "literal"))
        return
    an.sites.append(_Site(node, parent, fld, idx, fname, target, pos, is_root, info))
    if isinstance(node, ast.BinOp):
        _collect_sites(an, scope, node, "left", None, node.left, fname, target, pos, False)
        _collect_sites(an, scope, node, "right", None, node.right, fname, target, pos, False)
    elif isinstance(node, ast.UnaryOp):
        _collect_sites(an, scope, node, "operand", None, node.operand, fname, target, pos, False)
    elif isinstance(node, ast.Call) and _np_fn(node.func, an.ctx.np) in _TRANSPARENT_FNS and not node.keywords:
        for k in range(len(node.args)):
            _collect_sites(an, scope, node, "args", k, node.args[k], fname, target, pos, False)


# --------------------------------------------------------------------------------------------
# Validity checks
# --------------------------------------------------------------------------------------------

def _signature(tree: ast.Module, np_alias: str | None, outer: frozenset[str], allowed_builtins: set[str]):
    """(level of every assignment per function, number of unsafe sites, undefined names, number of
    expressions that mix incompatible levels)."""
    ctx = _Context(tree, np_alias)
    levels: dict[tuple[str, str], str | None] = {}
    unsafe = conflicts = 0
    undefined: list[str] = []
    module_names = ctx.top_names | set(outer) | allowed_builtins
    for fname, func in ctx.functions.items():
        scope = _Scope(ctx, func)
        for stmt in func.body:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name):
                    if (isinstance(n.ctx, ast.Load) and n.id not in scope.defined and n.id not in module_names
                            and not _bound_inside(stmt, n.id)):
                        undefined.append(n.id)
                elif isinstance(n, (ast.BinOp, ast.Call)):
                    unsafe += _unsafe_here(scope, n, np_alias)
                    conflicts += scope.info(n).level == _CONFLICT
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


def _unsafe_here(scope: _Scope, n: ast.expr, np_alias: str | None) -> int:
    if isinstance(n, ast.BinOp):
        if isinstance(n.op, ast.Div):
            return int(scope.info(n.right).sign != POS)
        if isinstance(n.op, ast.Pow):
            e = _signed_const(n.right)
            base = scope.info(n.left).sign
            if e is None:
                return int(base != POS)
            if e < 0:
                return int(base != POS)
            if e != int(e):
                return int(base < NONNEG)
        return 0
    if isinstance(n, ast.Call) and n.args:
        name = _np_fn(n.func, np_alias)
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
            if not (_np_fn(f, np_alias) is not None or (isinstance(f, ast.Attribute) and f.attr == "astype")):
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


class _Checker:
    """Accepts an edited tree only if it is as sound as the parent."""

    def __init__(self, prog: _Program, extra_names: set[str] = frozenset(), base: "_Checker | None" = None):
        self.prog = prog
        self.base_text = _format_block(prog.tree)
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
        return ast.parse(self.base_text)

    def accept(self, tree: ast.Module) -> tuple[str, ast.Module]:
        """Return (new block text, its parsed tree), or raise _NoEdit."""
        _drop_dead_assignments(tree, self.prog.np)
        ast.fix_missing_locations(tree)
        text = _format_block(tree)
        if text == self.base_text:
            raise _NoEdit("no change")
        try:
            reparsed = ast.parse(text)
            compile(reparsed, "<block>", "exec")
        except (SyntaxError, ValueError) as e:  # pragma: no cover - unparse is supposed to round-trip
            raise _NoEdit(f"unparse: {e}")
        levels, unsafe, undefined, conflicts = _signature(reparsed, self.prog.np, self.prog.outer_names, self.builtins)
        bad = [n for n in undefined if n not in self.base_undefined]
        if bad:
            raise _NoEdit(f"undefined {bad[0]}")
        if conflicts > self.base_conflicts:
            raise _NoEdit("mixes incompatible shapes")
        for key, lvl in self.base_levels.items():
            if key in levels and levels[key] != lvl:
                raise _NoEdit(f"level of {key[1]} changed {lvl} -> {levels[key]}")
        for key, lvl in levels.items():
            if key not in self.base_levels and lvl is None:
                raise _NoEdit(f"unknown level for new {key[1]}")
        if unsafe > self.base_unsafe:
            raise _NoEdit("less safe")
        for key, n in _stmt_sizes(reparsed).items():
            if n > _MAX_STMT_NODES and n > self.base_sizes.get(key, 0):
                raise _NoEdit("formula too big")
        return text, reparsed


# --------------------------------------------------------------------------------------------
# Point edits
# --------------------------------------------------------------------------------------------

def _np_call(np_alias: str, fn: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Attribute(ast.Name(np_alias, ast.Load()), fn, ast.Load()), list(args), [])


def _guard(np_alias: str | None, node: ast.expr, info: _Info, need: int) -> ast.expr:
    """Wrap node so that it is >= 0 (need=NONNEG) or > 0 (need=POS) when that is not known."""
    if info.sign >= need or np_alias is None:
        return node
    floor = 0.0 if need == NONNEG else _GUARD_FLOOR
    return _np_call(np_alias, "maximum", node, ast.Constant(floor))


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
        new = _round(new)
        if new != v and new != 0.0:
            return new
        s *= 1.5
    return _round(v * 1.1) if v != 0 else 0.01


def _edit_constant(tree: ast.Module, an: _Analysis, rng) -> str:
    consts = [c for c in an.consts if not (c[4] == 0.0 and c[5] == "literal") and not _is_guard_floor(c)]
    if not consts:
        raise _NoEdit("no constants")
    w = np.array([3.0 if c[5] == "module" else 1.0 for c in consts])
    label, parent, fld, idx, v, kind = consts[int(rng.choice(len(consts), p=w / w.sum()))]
    new = _perturb(v, rng)
    node = _num(new)
    if idx is None:
        setattr(parent, fld, node)
    else:
        getattr(parent, fld)[idx] = node
    return f"{label}: {_fmt(v)} -> {_fmt(new)}" if kind == "module" else f"{label}: literal {_fmt(v)} -> {_fmt(new)}"


def _is_guard_floor(c) -> bool:
    _, parent, fld, idx, v, kind = c
    return (kind == "literal" and isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute)
            and parent.func.attr == "maximum" and idx == 1 and 0 <= v <= _GUARD_FLOOR)


def _fmt(v: float) -> str:
    return f"{float(v):g}"


def _unary_form(node: ast.expr, np_alias: str | None) -> tuple[str, ast.expr] | None:
    """(current function, its argument) if node is f(x) for f in the unary family or x ** p."""
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        fn = _np_fn(node.func, np_alias)
        if fn in _UNARY_FNS:
            return fn, node.args[0]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _is_num_const(node.right):
        return "pow", node.left
    return None


def _apply_unary(np_alias: str | None, fn: str, x: ast.expr, xi: _Info, rng, p: float | None = None) -> ast.expr:
    if fn == "identity":
        return x
    if fn == "pow":
        if p is None:
            if rng.random() < 0.6:
                p = float(_POWERS[int(rng.integers(len(_POWERS)))])
            else:
                p = _round(math.exp(rng.normal(0, 0.4)), 3)
        return ast.BinOp(_guard(np_alias, x, xi, NONNEG), ast.Pow(), ast.Constant(p))
    if fn == "log":
        return _np_call(np_alias, "log", _guard(np_alias, x, xi, POS))
    return _np_call(np_alias, fn, _guard(np_alias, x, xi, NONNEG))


def _edit_unary(tree: ast.Module, an: _Analysis, rng) -> str:
    sites = [s for s in an.sites if s.info.level != "scalar" and not isinstance(s.node, ast.Constant)]
    if not sites:
        raise _NoEdit("no sites")
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
        raise _NoEdit("no unary choice")
    fn = choices[int(rng.integers(len(choices)))]
    scope = _scope_at(an, tree, s)
    xi = scope.info(x)
    p = None
    if cur == "pow" and fn == "pow":
        old = float(s.node.right.value)
        p = _round(old * math.exp(rng.normal(0, 0.3)), 3)
        if p == old:
            raise _NoEdit("same exponent")
    new = _apply_unary(np_alias, fn, copy.deepcopy(x), xi, rng, p)
    old_text = _short(s.node, 50)
    s.set(new)
    return f"{s.func}/{s.target}: {old_text} -> {_short(new, 60)}"


def _scope_at(an: _Analysis, tree: ast.Module, site: _Site) -> _Scope:
    func = an.ctx.functions[site.func]
    scope = _Scope(an.ctx, func)
    for stmt in func.body[: site.stmt_pos]:
        scope.bind(stmt)
    return scope


_OPS = {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}


def _op_sym(op) -> str:
    for k, v in _OPS.items():
        if isinstance(op, v):
            return k
    return "**" if isinstance(op, ast.Pow) else "?"


def _edit_binop(tree: ast.Module, an: _Analysis, rng) -> str:
    sites = [s for s in an.sites if isinstance(s.node, ast.BinOp) and _op_sym(s.node.op) in _OPS]
    if not sites:
        raise _NoEdit("no binops")
    s = sites[int(rng.integers(len(sites)))]
    node = s.node
    old = _op_sym(node.op)
    before = _short(node, 50)
    if old in "-/" and rng.random() < 0.25:
        node.left, node.right = node.right, node.left
        return f"{s.func}/{s.target}: swap operands of '{old}' in {before}"
    new = [k for k in _OPS if k != old][int(rng.integers(3))]
    node.op = _OPS[new]()
    return f"{s.func}/{s.target}: '{old}' -> '{new}' in {before}"


def _edit_prune(tree: ast.Module, an: _Analysis, rng) -> str:
    sites = [s for s in an.sites if isinstance(s.node, ast.BinOp)]
    if not sites:
        raise _NoEdit("nothing to prune")
    s = sites[int(rng.integers(len(sites)))]
    node = s.node
    sides = [node.left] if isinstance(node.op, ast.Pow) else [node.left, node.right]
    sides = [x for x in sides if _signed_const(x) is None] or sides
    keep = sides[int(rng.integers(len(sides)))]
    before = _short(node, 60)
    s.set(keep)
    return f"{s.func}/{s.target}: {before} -> {_short(keep, 40)}"


def _coef(rng, lo=0.01, hi=1.0, neg=0.3) -> float:
    c = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return _round(-c if rng.random() < neg else c, 3)


def _feature_for(an: _Analysis, site: _Site, rng) -> tuple[ast.expr, _Info] | None:
    """A feature expression at the site's level (gathered to postings where needed)."""
    lvl = site.info.level
    out: list[tuple[ast.expr, _Info]] = []
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
            if info.level == "doc" and sign == NONNEG and _is_index_attr(expr, "doc_len"):
                sign = POS
            out.append((ast.Subscript(copy.deepcopy(expr), g, ast.Load()), _Info(lvl, sign)))
    if not out:
        return None
    return out[int(rng.integers(len(out)))]


def _plus(a: ast.expr, c: float, t: ast.expr | None) -> ast.expr:
    """``a + c * t`` (``a + c`` when t is None), written ``a - |c| * t`` when c < 0."""
    term = ast.Constant(abs(c)) if t is None else ast.BinOp(ast.Constant(abs(c)), ast.Mult(), t)
    return ast.BinOp(a, ast.Sub() if c < 0 else ast.Add(), term)


def _edit_insert(tree: ast.Module, an: _Analysis, rng) -> str:
    sites = [s for s in an.sites if s.info.level is not None and s.info.level != "scalar"]
    if not sites:
        raise _NoEdit("no sites")
    roots = [s for s in sites if s.is_root]
    s = roots[int(rng.integers(len(roots)))] if roots and rng.random() < 0.35 else sites[int(rng.integers(len(sites)))]
    np_alias = an.ctx.np
    E = copy.deepcopy(s.node)
    form = ["mul1", "add", "div1", "powmul", "shift", "scale"][
        int(rng.choice(6, p=np.array([0.28, 0.22, 0.12, 0.14, 0.14, 0.10])))]
    if form == "shift":
        c = _coef(rng, 0.01, 1.0, 0.2)
        new = _plus(E, c, None)
    elif form == "scale":
        if s.is_root:
            raise _NoEdit("scaling a whole statement changes nothing")
        c = _round(math.exp(rng.normal(0, 0.5)), 3)
        new = ast.BinOp(ast.Constant(c), ast.Mult(), E)
    else:
        feat = _feature_for(an, s, rng)
        if feat is None:
            raise _NoEdit("no feature at this level")
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
            k = _round(math.exp(rng.normal(0, 0.7)), 3)
            mean = _np_call(np_alias, "mean", copy.deepcopy(F))
            den = ast.BinOp(copy.deepcopy(F), ast.Add(), ast.BinOp(ast.Constant(k), ast.Mult(), mean))
            T, ti = ast.BinOp(F, ast.Div(), den), POS
        else:
            T, ti = F, fi.sign
        if form in ("div1", "powmul") and ti < NONNEG:
            form = "mul1"
        if form == "mul1":
            c = _coef(rng, 0.02, 1.0, 0.3)
            new = ast.BinOp(E, ast.Mult(), _plus(ast.Constant(1.0), c, T))
        elif form == "add":
            c = _coef(rng, 0.01, 1.0, 0.3)
            new = _plus(E, c, T)
        elif form == "div1":
            c = _coef(rng, 0.02, 1.0, 0.0)
            den = ast.BinOp(ast.Constant(1.0), ast.Add(), ast.BinOp(ast.Constant(c), ast.Mult(), T))
            new = ast.BinOp(E, ast.Div(), den)
        else:
            c = _round(rng.uniform(0.05, 0.6) * (-1 if rng.random() < 0.5 else 1), 3)
            new = ast.BinOp(E, ast.Mult(), ast.BinOp(ast.BinOp(ast.Constant(1.0), ast.Add(), T), ast.Pow(), _num(c)))
    s.set(new)
    return f"{s.func}/{s.target}: {_short(s.node, 40)} -> {_short(new, 80)}"


_EDITS = {
    "offline:constant": _edit_constant,
    "offline:unary_swap": _edit_unary,
    "offline:binop": _edit_binop,
    "offline:insert_term": _edit_insert,
    "offline:prune": _edit_prune,
}


def _point_edit(prog: _Program, checker: _Checker, rng, kind: str | None = None) -> tuple[ast.Module, str, str, str]:
    """Apply one accepted point edit to a copy of prog.tree: (tree, text, kind, description)."""
    p = None
    kinds = list(_POINT_WEIGHTS)
    for attempt in range(_MAX_TRIES):
        tree = checker.fresh_tree()
        an = _analyse(tree, prog.np)
        if p is None:
            weights = dict(_POINT_WEIGHTS)
            size = len(an.sites)
            if size > 40:  # bloat control: the bigger the formulas, the more pruning and the less inserting
                f = min(size / 40.0, 4.0)
                weights["offline:prune"] *= f
                weights["offline:insert_term"] /= f
            p = np.array([weights[k] for k in kinds])
            p = p / p.sum()
        k = kind or kinds[int(rng.choice(len(kinds), p=p))]
        if attempt >= _MAX_TRIES - 8:
            k = "offline:constant"  # the fallback that always exists when a constant does
        try:
            desc = _EDITS[k](tree, an, rng)
            text, reparsed = checker.accept(tree)
        except _NoEdit:
            continue
        except Exception:  # an odd construct the analysis does not model: treat as "does not apply"
            if _STRICT:
                raise
            continue
        return reparsed, text, k, desc
    raise _NoEdit("no applicable edit")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def _n_edits(rng) -> int:
    u = rng.random()
    return 1 if u < 0.65 else 2 if u < 0.9 else 3


def _combine_ops(kinds: list[str]) -> str:
    uniq = list(dict.fromkeys(kinds))
    if len(uniq) == 1:
        return uniq[0]
    return "offline:" + "+".join(k.split(":", 1)[1] for k in uniq)


def mutate(parent_source: str, rng: np.random.Generator, other_source: str | None = None,
           n_edits: int | None = None) -> Mutation:
    """A child of ``parent_source``: crossover with ``other_source`` when one is given (then, one time
    in four, one more point edit), otherwise ``n_edits`` point edits (1-3 drawn when None).

    Raises ValueError when the parent has no EVOLVE-BLOCK or the block does not parse. Never raises
    otherwise: when no edit applies, the child is the parent with a perturbed constant, and as a last
    resort (no constant at all) the parent itself with operator ``offline:none``.
    """
    prog = _parse(parent_source)
    if other_source is not None:
        try:
            _parse(other_source, "other")
        except ValueError:
            other_source = None
    try:
        if other_source is not None:
            return _mutate_cross(prog, parent_source, other_source, rng)
        return _mutate_points(prog, rng, n_edits)
    except Exception:
        if _STRICT:
            raise
        return _fallback(prog, rng)


def _mutate_cross(prog: _Program, parent_source: str, other_source: str, rng) -> Mutation:
    m = crossover(parent_source, other_source, rng)
    if m.operator == "offline:crossover" and rng.random() < 0.25:
        child = _parse(m.source)
        checker = _Checker(child, _names(prog.tree) | _names(_parse(other_source).tree))
        try:
            _, text, k, desc = _point_edit(child, checker, rng)
        except _NoEdit:
            return m
        return Mutation(prog.head + text + prog.tail, "offline:crossover", f"{m.description}; then {desc}")
    return m


def _mutate_points(prog: _Program, rng, n_edits: int | None) -> Mutation:
    n = max(1, int(n_edits if n_edits is not None else _n_edits(rng)))
    base = _Checker(prog)
    checker = base
    text = base.base_text
    kinds, descs = [], []
    for _ in range(n + 2):
        if len(kinds) >= n and text != base.base_text:
            break
        try:
            tree, text, k, desc = _point_edit(checker.prog, checker, rng)
        except _NoEdit:
            break
        kinds.append(k)
        descs.append(desc)
        checker = _Checker(_Program(prog.head, prog.tail, tree, prog.np, prog.outer_names), base=base)
    if not kinds or text == base.base_text:
        return _fallback(prog, rng)
    return Mutation(prog.head + text + prog.tail, _combine_ops(kinds), "; ".join(descs))


def _names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _fallback(prog: _Program, rng) -> Mutation:
    """Perturb a constant: one the analysis understands if possible, else any float literal of the block."""
    try:
        checker = _Checker(prog)
        for _ in range(_MAX_TRIES // 2):
            tree = copy.deepcopy(prog.tree)
            an = _analyse(tree, prog.np)
            if not an.consts:
                break
            desc = _edit_constant(tree, an, rng)
            try:
                return Mutation(prog.head + checker.accept(tree)[0] + prog.tail, "offline:constant", desc)
            except _NoEdit:
                continue
    except Exception:
        if _STRICT:
            raise
    tree = copy.deepcopy(prog.tree)
    lits = _loose_literals(tree)
    if lits:
        parent, fld, idx, v = lits[int(rng.integers(len(lits)))]
        new = _perturb(v, rng)
        node = _num(new)
        if idx is None:
            setattr(parent, fld, node)
        else:
            getattr(parent, fld)[idx] = node
        ast.fix_missing_locations(tree)
        text = _format_block(tree)
        try:
            compile(text, "<block>", "exec")
            return Mutation(prog.head + text + prog.tail, "offline:constant", f"literal {_fmt(v)} -> {_fmt(new)}")
        except (SyntaxError, ValueError):  # pragma: no cover
            pass
    return Mutation(prog.head + _format_block(prog.tree) + prog.tail, "offline:none", "no applicable edit")


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


def crossover(parent_source: str, other_source: str, rng: np.random.Generator) -> Mutation:
    """Recombine two programs; the child keeps the parent's head and tail.

    Kinds (chosen at random among those that apply): ``constants`` (shared module constants take the
    other's value or a geometric blend), ``graft`` (a variable's definition from the other parent,
    with the local definitions it needs), ``blend`` (``mine + c * theirs`` for a variable both
    define), ``function`` (the other's ``prepare`` or ``score``, when both ``prepare`` return the
    same kind of state and both ``score`` read it the same way). Falls back to a point mutation of
    the parent when nothing applies (e.g. identical programs).
    """
    prog = _parse(parent_source)
    other = _parse(other_source, "other")
    checker = _Checker(prog, _names(other.tree))
    other_text = _format_block(other.tree)
    kinds = ["constants", "graft", "blend", "function"]
    base_w = np.array([0.3, 0.3, 0.25, 0.15])
    tried: set[str] = set()
    for _ in range(_MAX_TRIES):
        w = np.array([0.0 if k in tried and k in ("constants", "function") else x for k, x in zip(kinds, base_w)])
        if w.sum() <= 0:
            break
        kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        tree = checker.fresh_tree()
        try:
            desc = _CROSS[kind](tree, prog, other, rng)
            text, _ = checker.accept(tree)
            if text == other_text:
                raise _NoEdit("the child is the other parent")
        except Exception as e:
            if _STRICT and not isinstance(e, _NoEdit):
                raise
            tried.add(kind)
            continue
        return Mutation(prog.head + text + prog.tail, "offline:crossover", f"crossover {kind}: {desc}")
    m = mutate(parent_source, rng, None, 1)
    return Mutation(m.source, m.operator, f"(crossover found nothing to recombine) {m.description}")


def _x_constants(tree: ast.Module, prog: _Program, other: _Program, rng) -> str:
    mine = _Context(tree, prog.np).constants
    theirs = _Context(other.tree, other.np).constants
    shared = [k for k in mine if k in theirs and mine[k] != theirs[k]]
    if not shared:
        raise _NoEdit("no shared constants")
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
                    v = _round(math.copysign(abs(a) ** (1 - t) * abs(b) ** t, a))
                stmt.value = _num(v)
                out.append(f"{name}: {_fmt(a)} -> {_fmt(v)}")
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


def _shared_vars(tree: ast.Module, prog: _Program, other: _Program) -> list[tuple[str, str]]:
    an_m = _analyse(tree, prog.np)
    an_o = _analyse(other.tree, other.np)
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
            raise _NoEdit("different signatures")
        self.params = dict(zip(oa, pa))
        self.pos = pos
        self.added: dict[str, str] = {}
        self.all_names = _names(tree) | _names(other) | {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
        self.p_assign = _assignments(self.pf)
        self.o_assign = _assignments(self.of)
        self.p_top = _Context(tree, None)
        self.o_top = _Context(other, None)

    def fresh(self, base: str) -> str:
        k = 2
        while f"{base}_{k}" in self.all_names:
            k += 1
        name = f"{base}_{k}"
        self.all_names.add(name)
        return name

    def import_expr(self, expr: ast.expr, depth: int = 0) -> ast.expr:
        if depth > 12:
            raise _NoEdit("dependency chain too deep")
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
                taken = _names(self.tree) | {a.arg for a in ast.walk(self.pf) if isinstance(a, ast.arg)}
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
            # anything else (np, sp, builtins) is checked by the _Checker
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
        raise _NoEdit(f"cannot import {name}")


def _x_graft(tree: ast.Module, prog: _Program, other: _Program, rng, blend: bool = False) -> str:
    shared = _shared_vars(tree, prog, other)
    if not shared:
        raise _NoEdit("no shared variables")
    fname, target = shared[int(rng.integers(len(shared)))]
    pf = next(s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == fname)
    pos = _assignments(pf)[target]
    imp = _Importer(tree, other.tree, fname, pos)
    ovalue = imp.of.body[imp.o_assign[target]].value
    new = imp.import_expr(ovalue)
    stmt = pf.body[imp.pos]
    if blend:
        c = _coef(rng, 0.05, 2.0, 0.0)
        stmt.value = ast.BinOp(stmt.value, ast.Add(), ast.BinOp(ast.Constant(c), ast.Mult(), new))
        return f"{fname}/{target} += {c} * ({_short(ovalue, 70)})"
    stmt.value = new
    return f"{fname}/{target} = {_short(ovalue, 80)}"


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


def _x_function(tree: ast.Module, prog: _Program, other: _Program, rng) -> str:
    mine = _Context(tree, prog.np).functions
    theirs = _Context(other.tree, other.np).functions
    if "prepare" in mine and "prepare" in theirs:
        if _return_kind(mine["prepare"]) != _return_kind(theirs["prepare"]):
            raise _NoEdit("prepare returns different states")
    if "score" in mine and "score" in theirs and _state_reads(mine["score"]) != _state_reads(theirs["score"]):
        raise _NoEdit("score reads the state differently")
    cands = [f for f in ("prepare", "score") if f in mine and f in theirs and ast.dump(mine[f]) != ast.dump(theirs[f])]
    if not cands:
        raise _NoEdit("no differing function")
    fname = cands[int(rng.integers(len(cands)))]
    i = next(k for k, s in enumerate(tree.body) if isinstance(s, ast.FunctionDef) and s.name == fname)
    new = copy.deepcopy(theirs[fname])
    tree.body[i] = new
    p_top = _Context(tree, prog.np).top_names
    o_top = _Context(other.tree, other.np).top_names
    missing = [n.id for n in ast.walk(new) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
               and n.id in o_top and n.id not in p_top]
    for name in dict.fromkeys(missing):
        stmt = next((s for s in other.tree.body if (isinstance(s, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in s.targets))), None)
        if stmt is None:
            raise _NoEdit(f"cannot bring {name}")
        first_func = next((k for k, s in enumerate(tree.body) if isinstance(s, ast.FunctionDef)), len(tree.body))
        tree.body.insert(first_func, copy.deepcopy(stmt))
    return f"{fname} from the other parent"


_CROSS = {"constants": _x_constants, "graft": _x_graft, "blend": _x_blend, "function": _x_function}
