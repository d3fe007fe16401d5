"""Which code a program's ``prepare()`` result depends on, as a hash (trusted code; the program is only parsed).

Two candidates get the same key when their modules are identical (as syntax trees: comments, blank lines and
formatting do not count) except for the body of ``score``, and nothing but ``score``'s own ``def`` names
``score``. That is what most mutations change, and it is safe to share ``prepare``'s result between such
candidates because ``score``'s body runs only when ``score`` is called: ``prepare`` runs before any query, the
module's top level runs before ``prepare``, and neither can call ``score`` without naming it (the static
checks refuse ``globals``, ``vars``, ``getattr`` with computed names, frames and dunders; a program that
names ``score`` anywhere else, decorates it, or defines it twice gets a key of its whole module, so only an
identical program shares its state). ``prepare`` receives only the index, so its result does not depend on
the queries: stage 1, stage 2 and every query shard of one candidate share it too.

``prepared.py`` stores states under these keys, one cache per index; ``state_wire.py`` carries them.
"""
from __future__ import annotations

import ast
import copy
import hashlib

from evorank.threadsafe_ast import parse_ast

#: Bump when the key's meaning changes (old cached states then stop matching).
PREPARE_KEY_VERSION = 1


def _top_def(tree: ast.Module, name: str) -> list[ast.stmt]:
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]


def _docstrings(node: ast.AST) -> set[int]:
    """ids of the docstring constants in ``node`` (they are never evaluated as code)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _names_score(node: ast.AST) -> bool:
    """Whether ``score`` appears anywhere in ``node`` as an identifier, attribute, import alias or string (other
    than a docstring)."""
    docs = _docstrings(node)
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id == "score":
            return True
        if isinstance(n, ast.Attribute) and n.attr == "score":
            return True
        if isinstance(n, ast.alias) and "score" in (n.name, n.asname):
            return True
        if isinstance(n, ast.arg) and n.arg == "score":
            return True
        if isinstance(n, ast.keyword) and n.arg == "score":
            return True
        if isinstance(n, (ast.Global, ast.Nonlocal)) and "score" in n.names:
            return True
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == "score":
            return True
        if isinstance(n, ast.Constant) and id(n) not in docs and isinstance(n.value, (str, bytes)) and b"score" in (
                n.value.encode("utf-8", "replace") if isinstance(n.value, str) else n.value):
            return True
    return False


#: numpy functions that change process-wide state a later ``score`` could observe (the legacy random generator,
#: floating-point error handling).
_GLOBAL_STATE_CALLS = frozenset({"random", "seterr", "seterrcall", "setbufsize", "set_printoptions"})


def _immutable(value: ast.AST) -> bool:
    """A module-level value that nothing can change: a constant, or a tuple / unary / binary op of constants."""
    if isinstance(value, ast.Constant):
        return True
    if isinstance(value, ast.Tuple):
        return all(_immutable(v) for v in value.elts)
    if isinstance(value, ast.UnaryOp):
        return _immutable(value.operand)
    if isinstance(value, ast.BinOp):
        return _immutable(value.left) and _immutable(value.right)
    return False


def _side_effect_free(tree: ast.Module, skip: ast.AST | None) -> bool:
    """Whether calling the module's functions (all but ``skip``, score's ``def``) can leave nothing behind but
    their return value: no ``global`` / ``nonlocal``, no attribute assignment, no non-constant default value,
    no use of a module-level name bound to something mutable (a list, dict, array, class, ...), no numpy
    global state (the legacy random generator, error settings). ``prepare`` of such a module can be skipped:
    its result is all it contributes."""
    mutable = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            mutable.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            value = stmt.value
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and (value is None or not _immutable(value)
                                                    or isinstance(stmt, ast.AugAssign)):
                        mutable.add(n.id)
        elif isinstance(stmt, (ast.For, ast.While, ast.If, ast.With, ast.Try)):
            for n in ast.walk(stmt):  # names bound by module-level control flow: treat as mutable
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    mutable.add(n.id)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                 and n is not skip]
    for fn in functions:
        args = fn.args
        if any(not _immutable(d) for d in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]):
            return False
        for n in ast.walk(fn):
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                return False
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, (ast.Store, ast.Del)):
                return False
            if isinstance(n, ast.Name) and n.id in mutable:
                return False
            if isinstance(n, ast.Attribute) and n.attr in _GLOBAL_STATE_CALLS:
                return False
    return True


def prepare_key(source: str) -> str | None:
    """The hash of the code ``prepare()``'s result depends on, or None when there is nothing to share: no
    module-level ``def prepare``, a source that does not parse, or a module whose functions may leave state
    behind besides ``prepare``'s result (``_side_effect_free``: skipping ``prepare`` would change what ``score``
    sees)."""
    try:
        tree = parse_ast(source)
    except (SyntaxError, ValueError):
        return None
    if len(_top_def(tree, "prepare")) != 1:
        return None
    scores = _top_def(tree, "score")
    score_def = scores[0] if len(scores) == 1 else None
    if not _side_effect_free(tree, score_def):
        return None
    kind = "module"
    if score_def is not None and isinstance(score_def, ast.FunctionDef) and not score_def.decorator_list:
        blank = copy.deepcopy(tree)
        target = _top_def(blank, "score")[0]
        target.body = [ast.Pass()]
        target.name = "_"
        if not _names_score(blank):
            tree, kind = blank, "score-body-free"
    text = ast.dump(tree, annotate_fields=True, include_attributes=False)
    return hashlib.sha256(f"{PREPARE_KEY_VERSION}|{kind}|{text}".encode()).hexdigest()[:32]
