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

from evorank.evaluators.program.payload import docstring_ids
from evorank.threadsafe_ast import parse_ast

#: Bump when the key's meaning changes (old cached states then stop matching).
PREPARE_KEY_VERSION = 2


def _top_def(tree: ast.Module, name: str) -> list[ast.stmt]:
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]


def _names_score(node: ast.AST) -> bool:
    """Whether ``score`` appears anywhere in ``node`` as an identifier, attribute, import alias or string (other
    than a docstring)."""
    docs = docstring_ids(node)
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
#: Builtins whose results differ between processes (string hashes are salted per process; addresses).
_PER_PROCESS_CALLS = frozenset({"hash", "id"})
#: Longest source a key is computed for (a larger one simply gets none; the static checks refuse it anyway).
MAX_SOURCE_CHARS = 200_000


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


def _bound_names(stmt: ast.AST) -> set[str]:
    """Names a module-level statement binds (assignments, walrus, loop targets, defs, classes, imports), without
    looking inside function bodies (their names are local)."""
    out: set[str] = set()
    todo = [stmt]
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
            todo.extend(n.decorator_list)
            if not isinstance(n, ast.ClassDef):
                continue
        elif isinstance(n, ast.Lambda):
            continue
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, ast.alias):
            out.add((n.asname or n.name).partition(".")[0])
        todo.extend(ast.iter_child_nodes(n))
    return out


def _names_only(target: ast.AST) -> bool:
    """An assignment target made of plain names (``x``, ``a, b``), not attributes or items."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return all(_names_only(t) for t in target.elts)
    return isinstance(target, ast.Name)


def _module_state(tree: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """(module-level names bound to something that can change, names bound to numpy's random module or its
    functions, the names of those that are ``default_rng``)."""
    mutable: set[str] = set()
    rng, default_rng = set(), set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and not stmt.decorator_list:
            continue  # a plain function; what it can reach is checked on its own
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.name == "numpy.random" and a.asname:
                    rng.add(a.asname)
            continue
        if isinstance(stmt, ast.ImportFrom):
            for a in stmt.names:
                name = a.asname or a.name
                if stmt.module == "numpy.random" or (stmt.module == "numpy" and a.name == "random"):
                    rng.add(name)
                    if a.name == "default_rng":
                        default_rng.add(name)
            continue
        if isinstance(stmt, ast.Assign) and _immutable(stmt.value) and all(_names_only(t) for t in stmt.targets):
            continue  # K1 = 0.9; W, B = 2.0, 0.4
        if isinstance(stmt, ast.AnnAssign) and stmt.value is not None and _immutable(stmt.value) \
                and isinstance(stmt.target, ast.Name):
            continue
        # anything else binds names to values that can change: classes, decorated functions (a cache, a closure
        # over a dict), calls, containers, loop variables, walrus targets, ...
        mutable |= _bound_names(stmt)
    return mutable, rng, default_rng


def _seeded_rng(call: ast.Call) -> bool:
    """``default_rng(<int literal>)``: the one way a function may draw random numbers and keep its key."""
    values = [*call.args, *(k.value for k in call.keywords if k.arg == "seed")]
    return len(values) == 1 == len(call.args) + len(call.keywords) and isinstance(values[0], ast.Constant) \
        and type(values[0].value) is int


def _side_effect_free(tree: ast.Module, skip: ast.AST | None) -> bool:
    """Whether calling the module's functions (all but ``skip``, score's ``def``) can leave nothing behind but
    their return value, and returns the same value in every process: no ``global`` / ``nonlocal``, no attribute
    assignment, no non-constant default value, no use of a module-level name bound to something that can change
    (a list, dict, array, class, a decorated function such as an ``lru_cache``, ...), no numpy global state (the
    legacy random generator, error settings), no random numbers but ``default_rng`` with a literal seed, no
    ``hash`` or ``id`` (they differ between processes). ``prepare`` of such a module can be skipped: its result
    is all it contributes, and it is the result a fresh ``prepare`` would compute."""
    mutable, rng, default_rng = _module_state(tree)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                 and n is not skip]
    for fn in functions:
        args = fn.args
        if any(not _immutable(d) for d in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]):
            return False
        seeded: set[int] = set()  # the nodes of default_rng(<literal>) calls' function expressions
        for n in ast.walk(fn):
            if isinstance(n, ast.Call) and _seeded_rng(n):
                f = n.func
                if isinstance(f, ast.Attribute) and f.attr == "default_rng":
                    seeded.add(id(f.value))
                elif isinstance(f, ast.Name) and f.id in default_rng:
                    seeded.add(id(f))
        for n in ast.walk(fn):
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                return False
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, (ast.Store, ast.Del)):
                return False
            if isinstance(n, ast.Name) and (n.id in mutable or (n.id in rng and id(n) not in seeded)):
                return False
            if isinstance(n, ast.Attribute) and n.attr in _GLOBAL_STATE_CALLS and id(n) not in seeded:
                return False
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _PER_PROCESS_CALLS:
                return False
    return True


def prepare_key(source: str) -> str | None:
    """The hash of the code ``prepare()``'s result depends on, or None when there is nothing to share: no
    module-level ``def prepare``, a source that does not parse, or a module whose functions may leave state
    behind besides ``prepare``'s result (``_side_effect_free``: skipping ``prepare`` would change what ``score``
    sees)."""
    if len(source) > MAX_SOURCE_CHARS:
        return None
    try:
        return _prepare_key(source)
    except Exception:  # noqa: BLE001 - a source too deep to parse or walk (RecursionError, MemoryError): no key
        return None


def _prepare_key(source: str) -> str | None:
    try:
        tree = parse_ast(source)
    except (SyntaxError, ValueError):
        return None
    prepares = _top_def(tree, "prepare")
    if len(prepares) != 1 or prepares[0].decorator_list:  # a decorator can keep what prepare computed
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
