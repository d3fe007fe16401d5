"""Which names a piece of a program binds, defines and reads: the syntax-tree helpers that the trusted mends and the
reply parser (:mod:`evorank.evolve.llm.replies`) share. Parsing only; nothing is run.
"""
from __future__ import annotations

import ast


def defined_names(stmt: ast.stmt) -> set[str]:
    """Module-level names a statement binds (functions, classes, assignments, imports)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    # ``K1 += 0.1`` changes a definition without making one: the parent's ``K1 = ...`` must stay
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def read_names(node: ast.AST) -> set[str]:
    """Names a statement or expression reads (every load of a name, bound inside it or not)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def bound_names(node: ast.AST) -> set[str]:
    """Names a statement or function binds anywhere inside it (assignment targets, loop variables, parameters)."""
    return ({n.id for n in ast.walk(node) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
            | {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)})


def function_bound_names(function: ast.FunctionDef) -> set[str]:
    """Every name a function binds anywhere in it (``bound_names``: assignments, loop and with targets,
    parameters; and nested definitions, imports, exception names, global declarations): a name read in it and not
    among these must be a module name."""
    names = bound_names(function)
    for n in ast.walk(function):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not function:
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            names.update(n.names)
    return names


def free_names(node: ast.AST) -> set[str]:
    """Names a statement or expression reads that it does not bind inside itself (the variables of its
    comprehensions, the arguments of its lambdas): ``[k * w for k in ks]`` reads ``w`` and ``ks``."""
    inner = set()
    for n in ast.walk(node):
        if isinstance(n, ast.comprehension):
            inner |= {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)}
        elif isinstance(n, ast.Lambda):
            inner |= {a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    return read_names(node) - inner
