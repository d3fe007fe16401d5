"""Where the offline mutator's edits may go: sites, constants, features and gathers of a block.

Edits go only to right-hand sides of assignments inside functions that compute numeric arrays or
scalars (the weight computation), plus module-level constants. Index arrays (anything used as a
subscript), sparse matrices, ``np.bincount`` / ``np.where`` statements and ``return`` statements are
never touched, so the ``-np.inf`` for unmatched documents and the bincount structure stay intact.

:func:`analyse` lists, for a parsed block:

- *sites*: every replaceable sub-expression of an editable formula (descending through arithmetic,
  unary minus and the numpy functions in ``_TRANSPARENT_FNS``), with its level and sign;
- *constants*: module-level ``NAME = number`` that something reads, and literals inside formulas;
- *features* per function: values an inserted term may use (numeric local variables, non-scalar
  leaves of formulas, ``index.df`` / ``index.cf`` / ``index.doc_len``), each from the statement on
  which it is available;
- *gathers* per function: how the function brings per-term or per-document arrays to postings
  (a subscript such as ``idf[term_of_posting]`` or ``norm[td.indices]``, or a call
  ``np.repeat(idf, np.diff(td.indptr))``), so a feature can be brought to the postings the same way.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .analysis import NONNEG, POS, UNKNOWN_INFO, Context, Info, Scope, np_fn
from .block import signed_const

@dataclass
class Site:
    """A replaceable expression: ``set(new)`` puts a node in its place."""

    node: ast.expr
    parent: ast.AST  # the node holding it, in parent.<field> (or parent.<field>[idx])
    field: str
    idx: int | None
    func: str  # the function it is in
    target: str  # the variable the statement assigns
    stmt_pos: int  # position of the statement in the function body
    is_root: bool  # the whole right-hand side of the statement
    info: Info

    def set(self, new: ast.expr) -> None:
        """Replace the site's expression by ``new`` in the tree."""
        if self.idx is None:
            setattr(self.parent, self.field, new)
        else:
            getattr(self.parent, self.field)[self.idx] = new


@dataclass
class Analysis:
    """What :func:`analyse` found in one tree; its nodes belong to that tree (edit them in place)."""

    ctx: Context
    sites: list[Site] = field(default_factory=list)  # every editable sub-expression
    # constants: (label, parent node, field, index in the field or None, value, "module" | "literal")
    consts: list[tuple[str, ast.AST, str, int | None, float, str]] = field(default_factory=list)
    # function -> (level of an array, posting level) -> how it is gathered to those postings: the subscript
    # (``a[<it>]``), or an ``np.repeat(a, np.diff(M.indptr))`` call whose first argument is replaced
    gathers: dict[str, dict[tuple[str, str], ast.expr]] = field(default_factory=dict)
    # function -> [(position of the first statement that may use it, expression, its Info)]
    features: dict[str, list[tuple[int, ast.expr, Info]]] = field(default_factory=dict)


_TRANSPARENT_FNS = ("log1p", "log", "sqrt", "maximum", "minimum", "power", "exp", "abs")


def analyse(tree: ast.Module, np_alias: str | None) -> Analysis:
    """Sites, constants, features and gathers of a block (see the module docstring); never edits ``tree``."""
    ctx = Context(tree, np_alias)
    an = Analysis(ctx)
    # module-level numeric constants that something reads
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id in used):
            v = signed_const(stmt.value)
            if v is not None:
                an.consts.append((stmt.targets[0].id, stmt, "value", None, v, "module"))
    for fname, func in ctx.functions.items():
        scope = Scope(ctx, func)
        feats: list[tuple[int, ast.expr, Info]] = []
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
                    elif isinstance(n, ast.Call) and np_fn(n.func, an.ctx.np) == "repeat" and len(n.args) == 2:
                        # np.repeat(idf, np.diff(M.indptr)) brings a per-term array to M's postings
                        bi, ri = scope.info(n.args[0]), scope.info(n)
                        if bi.level == "term" and ri.level and ri.level.startswith("p:"):
                            gathers.setdefault((bi.level, ri.level), n)
                scope.bind(stmt)
                i = scope.env.get(target, UNKNOWN_INFO)
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
                if isinstance(n, ast.Call) and np_fn(n.func, np_alias) in _TRANSPARENT_FNS:
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
                    feats.append((0, node, Info(level, sign)))
        # for term x doc matrices, M.indices gathers per-document arrays to postings
        for name, i in scope.env.items():
            if i.level == "M" and i.orient == "td":
                indices = ast.Attribute(ast.Name(name, ast.Load()), "indices", ast.Load())
                gathers.setdefault(("doc", "p:" + i.mid), indices)
        an.gathers[fname] = gathers
        an.features[fname] = feats
    return an


def _collect_sites(an: Analysis, scope: Scope, parent, fld, idx, node, fname, target, pos, is_root) -> None:
    info = scope.info(node)
    v = signed_const(node)
    if v is not None:
        an.consts.append((f"{fname}/{target}", parent, fld, idx, v, "literal"))
        return
    an.sites.append(Site(node, parent, fld, idx, fname, target, pos, is_root, info))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        # rows.T @ v: only the per-query-term vector is a formula; the matrix is data
        _collect_sites(an, scope, node, "right", None, node.right, fname, target, pos, False)
    elif isinstance(node, ast.BinOp):
        _collect_sites(an, scope, node, "left", None, node.left, fname, target, pos, False)
        _collect_sites(an, scope, node, "right", None, node.right, fname, target, pos, False)
    elif isinstance(node, ast.UnaryOp):
        _collect_sites(an, scope, node, "operand", None, node.operand, fname, target, pos, False)
    elif isinstance(node, ast.Call) and np_fn(node.func, an.ctx.np) in _TRANSPARENT_FNS and not node.keywords:
        for k in range(len(node.args)):
            _collect_sites(an, scope, node, "args", k, node.args[k], fname, target, pos, False)

