"""What each name in a ranking function holds: a number, or an array with one entry per term, per document, per
posting, per query term or per posting of the query's rows, read from the code alone (never run); and the
gather that an element-wise operation between two of these levels needs (:func:`lift_to_postings`).

Most of the shape errors a small model makes come from mixing levels: ``weights *= saturation_factor`` with
511,050 postings against 28,932 terms, ``1 - tf_freq / index.cf``, ``np.bincount(rows.indices, ...)`` without
``minlength`` next to a per-document array; they are a large share of a small model's failed first attempts
(``bench/RESULTS.md``). Where one side of such an operation is per
posting and the other per term or per document, there is one meaning it can have (the term's, or the document's,
value at each posting), so trusted code writes the gather in: ``np.repeat(x, np.diff(index.term_doc.indptr))``,
``x[index.term_doc.indices]``, and for the query's rows ``np.repeat(x, np.diff(rows.indptr))``,
``x[query.term_ids]``, ``x[rows.indices]``. A loop over a per-posting array's positions that reads a per-term or
per-document array at them (``for i in range(len(w)): w[i] *= norm[i]``) is the same operation
written one element at a time: it becomes that one operation (:func:`loop_as_operation`), gathered the same way.
Over the whole collection's postings such a loop raises IndexError once a position passes the array's length; over
the postings of a query's rows it runs when the query has fewer postings than that length, reading the entries of
the wrong documents (or terms), which no ranking formula means.

The inference is a forward pass over a function's assignments with a few rules for the index's attributes and
numpy's element-wise functions and reductions; anything it does not know is left out, so an operation is
rewritten only when both of its levels are known. Such an operation raises when run wherever the two lengths
differ (all but degenerate cases, such as a query each of whose terms has exactly one posting), so the rewrite does not
change programs that run: none of the 11,191 distinct programs that ran in this machine's archives is changed
by it (loops included).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from evorank.evaluators.program.source import ProgramError, split_block
from evorank.threadsafe_ast import parse_ast

NUMBER, TERM, DOC, POSTING, QUERY_TERM = "number", "per term", "per document", "per posting", "per query term"
#: Not an array level: a term x document csr matrix shaped like ``index.term_doc`` (its .data is per posting).
TERM_DOC = "term x doc matrix"
#: Not an array level: the query terms' rows of such a matrix (``state[query.term_ids]``).
QUERY_ROWS = "query terms x doc matrix"
#: One entry per posting of the query terms' rows (``rows.data``, ``rows.indices``).
QUERY_POSTING = "per posting of the query terms"
#: Two levels met in one element-wise expression: a broadcast error waiting to happen.
MIXED = "mixed"
LEVELS = (NUMBER, TERM, DOC, POSTING, QUERY_TERM, QUERY_POSTING)

_INDEX_ATTRIBUTES = {
    "n_docs": NUMBER, "n_terms": NUMBER, "avg_doc_len": NUMBER, "total_tokens": NUMBER,
    "df": TERM, "cf": TERM, "doc_len": DOC, "title_len": DOC, "title_tf": POSTING, "term_doc": TERM_DOC,
}
_QUERY_ATTRIBUTES = {"term_ids": QUERY_TERM, "qtf": QUERY_TERM}
#: numpy functions whose result has the level of their array arguments.
_ELEMENTWISE = {"log", "log1p", "log2", "log10", "exp", "expm1", "sqrt", "abs", "maximum", "minimum", "power",
                "where", "clip", "square", "tanh", "arctan", "sign", "float32", "float64", "asarray",
                "nan_to_num", "reciprocal", "fmax", "fmin", "divide", "multiply", "add", "subtract"}
#: numpy functions and methods that reduce an array to a number.
_REDUCTIONS = {"sum", "mean", "max", "min", "median", "std", "var", "prod"}


def index_attribute_level(name: str) -> str | None:
    """The level of ``index.<name>`` (NUMBER, TERM, DOC, POSTING, or TERM_DOC for the matrix); None when not known."""
    return _INDEX_ATTRIBUTES.get(name)


def combine(levels: list[str | None]) -> str | None:
    """The level of an element-wise combination: numbers take the other side's level; two different array levels
    are MIXED; None (unknown) when any part is unknown."""
    if any(k is None for k in levels):
        return None
    arrays = {k for k in levels if k != NUMBER}
    if not arrays:
        return NUMBER
    return arrays.pop() if len(arrays) == 1 else MIXED


class _Levels:
    def __init__(self, env: dict[str, str]):
        self.env = env

    def of(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant):  # None: an open bound, np.clip(tf, 1e-6, None)
            return NUMBER if node.value is None or (isinstance(node.value, (int, float))
                                                    and not isinstance(node.value, bool)) else None
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.UnaryOp):
            return self.of(node.operand)
        if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.MatMult):
            return combine([self.of(node.left), self.of(node.right)])
        if isinstance(node, ast.Compare):
            return combine([self.of(node.left), *map(self.of, node.comparators)])
        if isinstance(node, ast.IfExp):
            return combine([self.of(node.body), self.of(node.orelse)])
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        return None

    def _attribute(self, node: ast.Attribute) -> str | None:
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id == "index":
            return _INDEX_ATTRIBUTES.get(node.attr)
        if isinstance(owner, ast.Name) and owner.id == "query":
            return _QUERY_ATTRIBUTES.get(node.attr)
        if node.attr in ("data", "indices"):
            return {TERM_DOC: POSTING, QUERY_ROWS: QUERY_POSTING}.get(self.of(owner))
        return None

    def _subscript(self, node: ast.Subscript) -> str | None:
        base, key = self.of(node.value), self.of(node.slice)
        if base in (TERM, DOC) and key in (POSTING, QUERY_TERM):
            return key  # a gather: x[td.indices], p[term_of_posting], idf[query.term_ids]
        if base == DOC and key == QUERY_POSTING:
            return key  # doc_len[rows.indices]
        if (base == TERM_DOC or (isinstance(node.value, ast.Name) and node.value.id == "state")) \
                and key == QUERY_TERM:
            return QUERY_ROWS  # state[query.term_ids]: prepare's term x doc matrix, by convention
        return None

    def _call(self, node: ast.Call) -> str | None:
        func, args = node.func, node.args
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "np":
            name = func.attr
            if name in _ELEMENTWISE:
                return combine([self.of(a) for a in args]) if args else None
            if name in _REDUCTIONS:  # of a whole array (no axis): a number
                return NUMBER if len(args) == 1 and not node.keywords and self.of(args[0]) in LEVELS else None
            if name == "repeat" and len(args) == 2:  # np.repeat(x, np.diff(td.indptr)): x brought to the postings
                rows = self._row_lengths_of(args[1])
                if (rows, self.of(args[0])) in ((TERM_DOC, TERM), (QUERY_ROWS, QUERY_TERM)):
                    return POSTING if rows == TERM_DOC else QUERY_POSTING
            if name in ("arange", "zeros", "ones", "full", "empty") and args:
                return _sized(args[0])  # np.zeros(index.n_terms): per term
            if name in ("zeros_like", "ones_like", "full_like", "empty_like") and args:
                return self.of(args[0])
            if name == "bincount":  # np.bincount(..., minlength=index.n_docs): per document
                return next((_sized(k.value) for k in node.keywords if k.arg == "minlength"), None)
            return None
        if isinstance(func, ast.Attribute) and func.attr == "astype":
            return self.of(func.value)
        if isinstance(func, ast.Attribute) and func.attr in _REDUCTIONS and not args:
            return NUMBER if self.of(func.value) in LEVELS else None
        if isinstance(func, ast.Name) and func.id in ("float", "int", "len"):
            return NUMBER
        if isinstance(func, ast.Name) and func.id in ("max", "min", "abs", "round") and args \
                and all(self.of(a) == NUMBER for a in args):  # max(len(query.term_ids), 1)
            return NUMBER
        if isinstance(func, ast.Name):  # a function of the block: the level it returns (function_levels)
            return self.env.get(func.id + "()")
        return None

    def _row_lengths_of(self, node: ast.AST) -> str | None:
        """TERM_DOC or QUERY_ROWS for ``np.diff(m.indptr)`` of such a matrix (the number of postings of each row)."""
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "diff"
                and len(node.args) == 1 and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "indptr"):
            return self.of(node.args[0].value)
        return None


def _sized(node: ast.AST) -> str | None:
    """The level of an array sized ``index.n_terms`` or ``index.n_docs``."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "index":
        return {"n_terms": TERM, "n_docs": DOC}.get(node.attr)
    return None


def _bindings(stmt: ast.stmt) -> list[tuple[str, ast.expr]]:
    """(name, value) pairs an assignment binds: ``x = v``, ``a = b = v``, ``K1, B = 0.9, 0.4``."""
    if isinstance(stmt, ast.AnnAssign):
        return [(stmt.target.id, stmt.value)] if isinstance(stmt.target, ast.Name) and stmt.value else []
    if not isinstance(stmt, ast.Assign):
        return []
    out = []
    for t in stmt.targets:
        if isinstance(t, ast.Name):
            out.append((t.id, stmt.value))
        elif isinstance(t, (ast.Tuple, ast.List)) and isinstance(stmt.value, (ast.Tuple, ast.List)) \
                and len(t.elts) == len(stmt.value.elts):
            out += [(n.id, v) for n, v in zip(t.elts, stmt.value.elts) if isinstance(n, ast.Name)]
    return out


def module_levels(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound to plain numbers (``K1 = 0.9``, ``K1, B = 0.9, 0.4``)."""
    env: dict[str, str] = {}
    for stmt in tree.body:
        for name, value in _bindings(stmt):
            if _Levels(env).of(value) == NUMBER:
                env[name] = NUMBER
    return env


def function_levels(functions: list[ast.FunctionDef], module: dict[str, str]) -> dict[str, str]:
    """``{"name()": level}`` for each function whose every ``return`` gives an array of one known level (the
    coordination direction's ``matched_terms(query, index)`` returns ``np.bincount(rows.indices,
    minlength=index.n_docs)``: per document), read in source order, so a function may use the ones before it.
    The keys cannot be names, so they sit in a level environment beside them (``_Levels._call`` reads them)."""
    env = dict(module)
    for function in functions:
        returns = [n for n in ast.walk(function) if isinstance(n, ast.Return) and n.value is not None]
        levels = {_Levels(levels_before(function, r.lineno, env)).of(r.value) for r in returns}
        if len(levels) == 1 and next(iter(levels)) in LEVELS:
            env[function.name + "()"] = next(iter(levels))
    return {k: v for k, v in env.items() if k.endswith("()")}


def levels_before(function: ast.FunctionDef, line: int, module: dict[str, str]) -> dict[str, str]:
    """The level of each name the function has bound before ``line`` (module numbers included), as far as the
    rules know; a name assigned again later keeps the level of its last assignment before ``line``."""
    env = dict(module)
    assignments = [n for n in ast.walk(function) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))]
    for stmt in sorted(assignments, key=lambda n: n.lineno):
        if stmt.lineno >= line:
            continue
        if isinstance(stmt, ast.AugAssign):
            pairs = [(stmt.target.id, stmt.value)] if isinstance(stmt.target, ast.Name) else []
        else:
            pairs = _bindings(stmt)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            unknown = {n.id for t in targets for n in ast.walk(t)
                       if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - {name for name, _ in pairs}
            for name in unknown:  # bound some other way (unpacking a call): level unknown from here on
                env.pop(name, None)
        for name, value in pairs:
            level = _Levels(env).of(value)
            if isinstance(stmt, ast.AugAssign):
                level = combine([env.get(name), level])
            if level is None or level == MIXED:
                env.pop(name, None)
            else:
                env[name] = level
    return env


def expression_level(node: ast.AST, env: dict[str, str]) -> str | None:
    """The level of one expression under ``env`` (MIXED when it combines two array levels element-wise)."""
    return _Levels(env).of(node)


# -- lifting to the postings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lift:
    """A program whose element-wise operations between per-posting arrays and per-term or per-document arrays
    were written with the per-term (per-document) side brought to the postings, and what was lifted where."""

    source: str
    description: str


#: How an array of each level is brought to the postings of the collection, and to those of the query's rows.
_TO_POSTINGS = {TERM: "np.repeat({x}, np.diff(index.term_doc.indptr))", DOC: "({x})[index.term_doc.indices]"}
_TO_QUERY_POSTINGS = {QUERY_TERM: "np.repeat({x}, np.diff({rows}.indptr))",
                      TERM: "np.repeat(({x})[query.term_ids], np.diff({rows}.indptr))", DOC: "({x})[{rows}.indices]"}


class _Lifter(ast.NodeTransformer):
    """Rewrites, bottom-up, each element-wise operation of one statement whose sides are per posting and per term
    (or per document): the other side is gathered to the postings, as ``np.repeat(x, np.diff(...indptr))`` or
    ``x[...indices]`` (the arguments of numpy's element-wise functions count as sides too, ``np.maximum(tf, idf)``);
    the same for the postings of the query's rows (``rows``, the one name bound to
    ``state[query.term_ids]``). A ``np.bincount`` of document ids without ``minlength`` gets
    ``minlength=index.n_docs``. Only where the levels of both sides are known."""

    def __init__(self, env: dict[str, str], has_query: bool):
        self.levels = _Levels(env)
        rows = [name for name, level in env.items() if level == QUERY_ROWS]
        self.rows = rows[0] if len(rows) == 1 else None
        self.has_query = has_query
        self.lifted: list[str] = []

    def _lift(self, node: ast.expr, level: str, template: str) -> ast.expr:
        self.lifted.append(f"{ast.unparse(node)} ({level})")
        return parse_ast(template.format(x=ast.unparse(node), rows=self.rows), mode="eval").body

    def pair(self, left: ast.expr, right: ast.expr) -> tuple[ast.expr, ast.expr]:
        a, b = self.levels.of(left), self.levels.of(right)
        for x, y in ((a, b), (b, a)):
            if x == POSTING and y in _TO_POSTINGS:
                template = _TO_POSTINGS[y]
            elif x == QUERY_POSTING and y in _TO_QUERY_POSTINGS and self.rows and (y != TERM or self.has_query):
                template = _TO_QUERY_POSTINGS[y]
            else:
                continue
            return (left, self._lift(right, b, template)) if x == a else (self._lift(left, a, template), right)
        return left, right

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.MatMult):
            node.left, node.right = self.pair(node.left, node.right)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in _ELEMENTWISE and isinstance(func.value, ast.Name)
                and func.value.id == "np" and len(node.args) > 1 and not any(isinstance(a, ast.Starred)
                                                                             for a in node.args)):
            # np.maximum(tf, c * idf), np.where(mask, a, b): the arguments broadcast against each other
            for i in range(len(node.args)):
                for j in range(i + 1, len(node.args)):
                    node.args[i], node.args[j] = self.pair(node.args[i], node.args[j])
        if (isinstance(func, ast.Attribute) and func.attr == "bincount" and isinstance(func.value, ast.Name)
                and func.value.id == "np" and node.args and isinstance(node.args[0], ast.Attribute)
                and node.args[0].attr == "indices" and self.levels.of(node.args[0]) in (POSTING, QUERY_POSTING)
                and not any(k.arg == "minlength" for k in node.keywords)):
            node.keywords.append(ast.keyword("minlength", parse_ast("index.n_docs", mode="eval").body))
            self.lifted.append(f"np.bincount({ast.unparse(node.args[0])}, ...) (minlength=index.n_docs)")
        return node


def loop_as_operation(loop: ast.For) -> ast.AugAssign | ast.Assign | None:
    """``for i in range(len(a)): a[i] op= f(x[i], ...)`` as the one operation ``a op= f(x, ...)`` (``a[i] = ...``
    as ``a = ...``), placed at the loop's lines; None for any other loop (``i`` used other than to index a name, more
    than one statement, an ``else``)."""
    it, body = loop.iter, loop.body
    if loop.orelse or len(body) != 1 or not isinstance(loop.target, ast.Name) or not (
            isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" and len(it.args) == 1
            and not it.keywords and isinstance(it.args[0], ast.Call) and isinstance(it.args[0].func, ast.Name)
            and it.args[0].func.id == "len" and len(it.args[0].args) == 1 and isinstance(it.args[0].args[0], ast.Name)):
        return None
    array, var, stmt = it.args[0].args[0].id, loop.target.id, body[0]
    target = stmt.target if isinstance(stmt, ast.AugAssign) else \
        stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == array
            and isinstance(target.slice, ast.Name) and target.slice.id == var):
        return None

    class _Unindex(ast.NodeTransformer):
        def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
            if isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Name) and node.slice.id == var:
                return ast.Name(node.value.id, ast.Load())
            return self.generic_visit(node)

    value = _Unindex().visit(parse_ast(ast.unparse(stmt.value), mode="eval").body)
    if any(isinstance(n, ast.Name) and n.id == var for n in ast.walk(value)):
        return None
    op = ast.AugAssign(ast.Name(array, ast.Store()), stmt.op, value) if isinstance(stmt, ast.AugAssign) \
        else ast.Assign([ast.Name(array, ast.Store())], value)
    op.lineno, op.end_lineno, op.col_offset, op.end_col_offset = loop.lineno, loop.end_lineno, 0, 0
    return op


def _assigned(stmt: ast.AugAssign | ast.Assign) -> str:
    """The name a :func:`loop_as_operation` statement assigns."""
    return (stmt.target if isinstance(stmt, ast.AugAssign) else stmt.targets[0]).id


def lift_to_postings(code: str) -> Lift | None:
    """``code`` with every element-wise operation of its EVOLVE-BLOCK's functions that meets a per-posting array
    with a per-term or per-document one rewritten to gather that one to the postings first (numpy would raise
    "operands could not be broadcast together"); None when there is none. ``x *= y`` counts as ``x * y``.
    Statements are rewritten in place, in numpy-only Python. Only functions whose parameter ``index`` is never
    rebound are read (the gathers name it)."""
    try:
        block_first, block_last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    module = module_levels(tree)
    module |= function_levels([f for f in tree.body if isinstance(f, ast.FunctionDef)
                               and block_first <= f.lineno <= block_last], module)
    changed: dict[int, tuple[int, str]] = {}  # first line -> (last line, new text)
    notes: list[str] = []
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and block_first <= function.lineno <= block_last):
            continue
        params = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
        if "index" not in params or any(isinstance(n, ast.Name) and n.id == "index" and not isinstance(n.ctx, ast.Load)
                                        for n in ast.walk(function)):
            continue
        loops = [(n, loop_as_operation(n)) for n in ast.walk(function) if isinstance(n, ast.For)]
        # a loop over a per-posting array's positions that reads a per-term or per-document array at them (it
        # raises once a position passes that array's length): the one operation it means, lifted below
        loops = [(n, op) for n, op in loops if op is not None
                 and levels_before(function, n.lineno, module).get(_assigned(op)) in (POSTING, QUERY_POSTING)]
        inside = {id(s) for n, _ in loops for s in ast.walk(n)}
        simple = sorted((n for n in ast.walk(function) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign,
                                                                          ast.Return, ast.Expr))
                         and id(n) not in inside), key=lambda n: n.lineno)
        simple = sorted(simple + [op for _, op in loops], key=lambda n: n.lineno)
        for stmt in simple:
            if getattr(stmt, "value", None) is None:
                continue
            lifter = _Lifter(levels_before(function, stmt.lineno, module), "query" in params)
            stmt.value = lifter.visit(stmt.value)
            if isinstance(stmt, ast.AugAssign) and not isinstance(stmt.op, ast.MatMult):
                target = ast.Name(stmt.target.id, ast.Load()) if isinstance(stmt.target, ast.Name) else None
                if target is not None:
                    _, stmt.value = lifter.pair(target, stmt.value)
            if lifter.lifted:
                changed[stmt.lineno] = (stmt.end_lineno, ast.unparse(stmt))
                loop = "a loop written as one operation, " if any(op is stmt for _, op in loops) else ""
                notes.append(f"line {stmt.lineno}: {loop}{', '.join(lifter.lifted)}")
    if not changed:
        return None
    lines = code.split("\n")
    for first in sorted(changed, reverse=True):
        last, text = changed[first]
        indent = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
        lines[first - 1:last] = [indent + t for t in text.split("\n")]
    return Lift("\n".join(lines), "brought to the postings: " + "; ".join(notes))
