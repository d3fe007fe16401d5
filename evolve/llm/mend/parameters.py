"""A helper copied without one of its parameters: ``def variant_terms(query, classes):`` whose body still reads
``length`` gets the parameter back, with the default the helper it copies has, from trusted code, before the
candidate is evaluated.

The direction helpers the prompt shows take their tuning constants as parameters with defaults
(``def variant_terms(query, classes, length=5)``). A small model that copies such a helper sometimes drops the
parameter and keeps the body that reads it: ``NameError: name 'length' is not defined`` whenever the line runs
(small models do this, in fresh proposals and in rewrite repairs alike). No program the
prompt showed defines ``length`` at module level, so :mod:`~evorank.evolve.llm.mend.names` has nothing to borrow;
but what the model meant has one reading: the helper it copied, whose signature binds that name.

Rewritten only when all of these hold, for a module-level function ``F`` of the EVOLVE-BLOCK and a name ``N``:

- ``F`` reads ``N`` and binds it nowhere (not as a parameter, not by any assignment, loop, import or nested
  definition), and the module does not define ``N``: a NameError whenever that read runs;
- a program the prompt showed (``donors``, in order: the direction's helpers first) defines a module-level
  function of the same name ``F`` with a parameter ``N`` that has a default, a literal (a number, a string,
  ``True``/``False``/``None``);
- ``F`` takes no ``*args`` or ``**kwargs`` and has no parameter after which a default may not follow.

``N=<default>`` is then appended to ``F``'s parameters: every existing call passes what it passed before and
``N`` takes the donor's value, so a program that could run is never changed. Code is parsed, never run.
"""
from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

from evorank.evaluators.program.source import ProgramError, split_block
from evorank.threadsafe_ast import parse_ast

from .bindings import defined_names, free_names, function_bound_names


@dataclass(frozen=True)
class ParameterFix:
    """A program with the dropped parameters given back, and one line saying which."""

    source: str
    description: str


def _literal_defaults(function: ast.FunctionDef) -> dict[str, str]:
    """Parameter name -> the source of its default, for the parameters whose default is a literal."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    out = {}
    for arg, default in pairs:
        value = default.operand if isinstance(default, ast.UnaryOp) and isinstance(default.op, ast.USub) \
            else default
        if isinstance(value, ast.Constant) and isinstance(value.value, (int, float, str, bool, type(None))):
            out[arg.arg] = ast.unparse(default)
    return out


def _donor_signatures(donors: list[tuple[str, str]]) -> dict[str, tuple[str, dict[str, str]]]:
    """Function name -> (donor label, its literal defaults), the first donor defining it winning."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for label, code in donors:
        try:
            body = parse_ast(code).body
        except SyntaxError:
            continue
        for node in body:
            if isinstance(node, ast.FunctionDef) and node.name not in out:
                out[node.name] = (label, _literal_defaults(node))
    return out


def restore_dropped_parameters(code: str, donors: list[tuple[str, str]]) -> ParameterFix | None:
    """``code`` with every parameter a copied helper dropped but still reads given back with the donor's default
    (module docstring), or None when there is none."""
    try:
        first, last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    module = set(dir(builtins)).union(*(defined_names(s) for s in tree.body))
    signatures = _donor_signatures(donors)
    lines = code.split("\n")
    edits: list[tuple[ast.FunctionDef, list[str]]] = []
    notes = []
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and first <= function.lineno <= last
                and function.name in signatures):
            continue
        args = function.args
        if args.vararg or args.kwarg or args.kwonlyargs:
            continue
        label, defaults = signatures[function.name]
        bound = function_bound_names(function)
        missing = sorted(n for n in set().union(*(free_names(s) for s in function.body)) - bound - module
                         if n in defaults)
        if missing:
            edits.append((function, [f"{n}={defaults[n]}" for n in missing]))
            notes.append(f"{function.name}(): {', '.join(missing)} (parameter of {function.name} in {label})")
    if not edits:
        return None
    for function, params in sorted(edits, key=lambda e: e[0].lineno, reverse=True):
        last_arg = [*function.args.posonlyargs, *function.args.args]
        # the text ends after the last parameter (or its default); ``def f():`` has none: after the parenthesis
        if last_arg:
            end_node = function.args.defaults[-1] if function.args.defaults else last_arg[-1]
            line, col, sep = end_node.end_lineno, end_node.end_col_offset, ", "
        else:
            line = function.lineno
            raw = lines[line - 1].encode("utf-8")
            col = raw.index(b"(", raw.index(function.name.encode("utf-8"))) + 1
            sep = ""
        raw = lines[line - 1].encode("utf-8")
        lines[line - 1] = (raw[:col] + (sep + ", ".join(params)).encode("utf-8") + raw[col:]).decode("utf-8")
    return ParameterFix("\n".join(lines), "gave back " + "; ".join(notes))
