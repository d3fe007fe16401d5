"""Missing names: a model's candidate that reads a name it never defines gets the definition one of the programs
in its prompt has, from trusted code, before it is evaluated.

A model that combines ideas from the programs in its prompt often takes a formula and leaves its names behind:
``MU`` from the query-likelihood seed used in a BM25 program, ``td`` made in ``prepare()`` and read in
``score()``, ``term_of_posting`` from another program's ``prepare()``, ``sparse.csr_matrix`` without the import.
Such NameErrors were 6 of the 18 failed first attempts of the local model (Qwen2.5-Coder-1.5B, two runs of
30 proposals, bench/RESULTS.md), and a repair request rarely fixes them: asked, that model wrote
``index.MU``. The definition it meant is known, so it is added where it is missing:

- an allowed module (``np``, ``sp``, ``sparse``, ``math``, ...): its import, at the top of the EVOLVE-BLOCK;
- a module-level assignment that reads only modules (``MU = 2000.0``): that line, at the top of the block;
- a module-level function (``min_pair_distance(query, index)``, a helper the prompt's direction or another
  program showed and the candidate calls without copying it), with what it reads from the module: the whole
  ``def``, at the top of the block;
- a name a function assigns in one top-level statement (``td = index.term_doc``): that statement, just before
  the first statement that reads the name, when every name it reads exists there (or is itself borrowed the same
  way, in order).

A name is missing when a function of the block reads it and neither that function (anywhere in it) nor the
module binds it: the line raises NameError whenever it runs, so adding a definition never changes a program that
could run. Definitions are looked for in the program itself (its other functions), then in the ``donors`` (the
parent, the crossover partner, the inspirations and the seeds the prompt showed), first found first used. Code is
parsed, never run. A missing name with no definition stays missing (the others are still added): the program then
fails on that name, which is what the repair round shows the model, rather than on a helper the prompt promised
to add for it.

A missing name with no definition of its own may be another program's name, renamed or respelled: ``mu`` where the
query-likelihood seed has ``MU``, or ``sat_threshold`` in a statement that is the seed's
``weights = np.log1p(tf / (MU * p_collection[term_of_posting])) + np.log(MU / (dl + MU))`` with ``MU`` renamed
(small models copy a formula and rename one of its constants without defining it). It then gets that name's
definition under its own name, when the two differ only in letter case, or when a statement of the program reading
it has exactly the structure of a donor's statement with that one name in the other's place.
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from evorank.evaluators.program.source import ProgramError, split_block
from evorank.evaluators.program.checks import ALLOWED_IMPORTS
from evorank.threadsafe_ast import parse_ast

from .bindings import defined_names, free_names, function_bound_names

#: Import lines for module names a program may use without importing them itself.
MODULE_IMPORTS: dict[str, str] = {
    **{m: f"import {m}" for m in ALLOWED_IMPORTS if "." not in m},
    "np": "import numpy as np", "sp": "import scipy.sparse as sp", "sparse": "import scipy.sparse as sparse",
    "special": "import scipy.special as special", "scipy": "import scipy.sparse\nimport scipy.special",
}
_MAX_DEPTH = 4  # borrowed names a borrowed statement may itself need, in a chain


@dataclass(frozen=True)
class NameFix:
    """A program with the missing definitions added, and one line saying what was added from where."""

    source: str
    names: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class _Definition:
    name: str
    text: str  # the statement's source, dedented
    reads: frozenset[str]
    function: str | None  # the function whose top level it is in; None at module level
    where: str  # "seed bm25", "program 12 prepare()", "its prepare()"
    is_function: bool = False  # a whole module-level ``def`` (never renamed: only assignments are)


def _simple_target(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id
    return None


def _definitions(code: str, label: str) -> list[_Definition]:
    """The borrowable definitions of one program's EVOLVE-BLOCK: module-level single-name assignments that read
    only modules, and single-name assignments at the top level of its functions that do not read their own
    name."""
    try:
        block = split_block(code).block
        tree = parse_ast(block)
    except (ProgramError, SyntaxError):
        return []
    out = []
    for stmt in tree.body:
        name = _simple_target(stmt)
        reads = free_names(stmt.value) if name is not None else set()
        if name is not None and reads <= set(MODULE_IMPORTS):
            out.append(_Definition(name, ast.get_source_segment(block, stmt), frozenset(reads), None, label))
        if isinstance(stmt, ast.FunctionDef):
            # the whole function, for a candidate that calls a helper it was shown but never copied; what it reads
            # from the module (other helpers, constants, modules) is borrowed with it
            reads = free_names(stmt) - function_bound_names(stmt) - {stmt.name}
            out.append(_Definition(stmt.name, ast.get_source_segment(block, stmt), frozenset(reads), None,
                                   f"{label} (function)", is_function=True))
            for inner in stmt.body:
                name = _simple_target(inner)
                reads = free_names(inner.value) if name is not None else set()
                if name is not None and name not in reads:
                    out.append(_Definition(name, ast.get_source_segment(block, inner), frozenset(reads), stmt.name,
                                           f"{label} {stmt.name}()"))
    return out


def _renamed(d: _Definition, name: str, how: str) -> _Definition:
    """``d`` binding ``name`` instead: a single-name assignment's text starts with its target."""
    return _Definition(name, name + d.text[len(d.name):], d.reads, d.function, f"{d.where} ({how} {d.name})")


def _names_in_order(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _shape(node: ast.AST) -> str:
    """The statement's structure with every name blanked."""
    return re.sub(r"Name\(id='[^']*'", "Name(id=''", ast.dump(node, annotate_fields=True, include_attributes=False))


def _alias_of(name: str, statements: list[ast.stmt], donor_statements: list[tuple[list[str], str]]) -> str | None:
    """The donor name that ``name`` stands in for: some statement reading ``name`` is a donor statement with that
    one name replaced, every other name the same; None when there is none or several. ``donor_statements``: each
    donor statement's names in order and its shape."""
    found = set()
    for stmt in statements:
        names = _names_in_order(stmt)
        if name not in names:
            continue
        shape = _shape(stmt)
        for theirs, their_shape in donor_statements:
            if len(theirs) != len(names) or their_shape != shape:
                continue
            pairs = {(a, b) for a, b in zip(names, theirs) if a != b}
            if len(pairs) == 1 and next(iter(pairs))[0] == name:
                found.add(next(iter(pairs))[1])
    return found.pop() if len(found) == 1 else None


def _aliases(missing: set[str], library: list[_Definition], statements: list[ast.stmt],
             donors: list[tuple[str, str]]) -> list[_Definition]:
    """Definitions for missing names that have none of their own: the definition of the name they respell (same
    letters in another case) or stand in for (:func:`_alias_of`), renamed."""
    have = {d.name for d in library}
    library = [d for d in library if not d.is_function]
    out: list[_Definition] = []
    donor_statements = None
    for name in sorted(missing - have - set(MODULE_IMPORTS)):
        same = [d for d in library if d.name.lower() == name.lower()]
        if same:
            out.append(_renamed(same[0], name, "spelled"))
            continue
        if donor_statements is None:
            donor_statements = []
            for _, code in donors:
                try:
                    tree = parse_ast(split_block(code).block)
                except (ProgramError, SyntaxError):
                    continue
                donor_statements += [(_names_in_order(n), _shape(n)) for n in ast.walk(tree)
                                     if isinstance(n, ast.stmt) and not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        other = _alias_of(name, statements, donor_statements)
        for d in library:
            if d.name == other:
                out.append(_renamed(d, name, "renamed from"))
                break
    return out


class _Borrower:
    """Resolves missing names against a library of definitions, collecting the lines to add."""

    def __init__(self, library: list[_Definition], module_names: set[str]):
        self.library = library
        self.module_names = set(module_names)
        self.module_lines: list[str] = []
        self.sources: list[str] = []
        self.unresolvable: set[str] = set()  # names already tried without success for the current statement: each
        #                                      name is tried once, so the search is linear in the library's size

    def borrow(self, name: str, local: set[str] | None, out: list[str], depth: int = 0) -> bool:
        """Make ``name`` exist: at module level (an import or a module definition), or, when ``local`` (the names
        that exist at the insertion point of a function) is given, by a function's statement appended to ``out``."""
        if name in self.module_names or (local is not None and name in local):
            return True
        if depth > _MAX_DEPTH or name in self.unresolvable:
            return False
        if name in MODULE_IMPORTS:
            self.module_lines.append(MODULE_IMPORTS[name])
            self.module_names.add(name)
            self.sources.append(f"{name} (import)")
            return True
        for d in self.library:
            if d.name != name or (d.function is not None and local is None):
                continue
            scope = None if d.function is None else local
            saved = (len(self.module_lines), len(self.sources), set(self.module_names), len(out),
                     set(local) if local is not None else None)
            if all(self.borrow(r, scope, out, depth + 1) for r in sorted(d.reads)):
                if d.function is None:
                    self.module_lines.append(d.text)
                    self.module_names.add(name)
                else:
                    out.append(d.text)
                    local.add(name)
                self.sources.append(f"{name} from {d.where}")
                return True
            del self.module_lines[saved[0]:], self.sources[saved[1]:], out[saved[3]:]
            self.module_names = saved[2]
            if local is not None:
                local.clear()
                local.update(saved[4])
        self.unresolvable.add(name)
        return False


def borrow_missing_names(code: str, donors: list[tuple[str, str]]) -> NameFix | None:
    """``code`` with a definition added for every name that one of its EVOLVE-BLOCK's functions reads but that
    neither the function nor the module binds (a NameError whenever that line runs), or None when there is no
    such name or none of them has a definition to borrow (a name without one stays missing).
    ``donors``: (label, code) of other programs to borrow from, in order of preference, after the program's own
    other functions. A borrowed statement goes just before the first top-level statement of the function that
    needs it; imports and module definitions go at the top of the block."""
    try:
        first, last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    borrower = _Borrower([], set(dir(builtins)).union(*(defined_names(s) for s in tree.body)))
    functions = [f for f in tree.body if isinstance(f, ast.FunctionDef) and first <= f.lineno <= last]
    bound_in = {f: function_bound_names(f) for f in functions}
    unbound = set().union(*(free_names(stmt) - bound_in[f] for f in functions for stmt in f.body)) \
        - borrower.module_names
    if not unbound:  # the common case, a program that can run: no definitions to read
        return None
    own = _definitions(code, "its")
    borrowed = [d for label, donor in donors for d in _definitions(donor, label)]
    statements = [s for f in functions for s in ast.walk(f) if isinstance(s, ast.stmt) and s is not f]
    aliases = _aliases(unbound, own + borrowed, statements, donors)
    inserts: list[tuple[int, list[str]]] = []
    missing_all: list[str] = []
    for f in functions:
        bound = bound_in[f]
        local = {a.arg for a in ast.walk(f.args) if isinstance(a, ast.arg)}
        borrower.library = [d for d in own if d.function not in (None, f.name)] + borrowed + aliases
        for stmt in f.body:
            out: list[str] = []
            borrower.unresolvable.clear()
            for name in sorted(free_names(stmt) - bound - borrower.module_names - local):
                if borrower.borrow(name, local, out):
                    missing_all.append(name)
            if out:
                inserts.append((stmt.lineno, out))
            local |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    if not missing_all:
        return None
    lines = code.split("\n")
    for lineno, texts in sorted(inserts, reverse=True):
        at = lineno - 1
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        lines[at:at] = [indent + part for text in texts for part in text.split("\n")]
    if borrower.module_lines:
        lines[first - 1:first - 1] = borrower.module_lines + ([""] if lines[first - 1].strip() else [])
    return NameFix("\n".join(lines), tuple(dict.fromkeys(missing_all)), "defined " + ", ".join(borrower.sources))
