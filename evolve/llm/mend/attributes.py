"""Attributes the contract does not have: a model's ``index.X`` or ``query.X`` that can only mean one thing gets
that thing, from trusted code, before the candidate is evaluated.

A small model writes names it half remembers: ``index.postings_positions`` for the contract's
``index.posting_positions``, ``index.MU`` for the program's own constant ``MU`` (asked to repair a NameError),
``index.idf(query.term_ids)`` for the per-term array ``idf`` its ``prepare()`` computes, and
``index.avg_doc_len[td.indices]`` for the number ``index.avg_doc_len`` (docs/proposers.md). Each such line raises
AttributeError or TypeError whenever it runs (or is refused by the static check), so rewriting it never changes a
program that could run:

- ``index.X`` / ``query.X`` where ``X`` is not in the contract but a name the candidate or a donor program binds:
  that name (``index.MU`` -> ``MU``); called with one argument, an array indexed by it (``index.idf(t)`` ->
  ``idf[t]``), or, when the name is a function, that function called. A missing definition is then borrowed by
  :mod:`~evorank.evolve.llm.mend.names`.
- otherwise, exactly one contract attribute spelled nearly the same (``difflib`` ratio at least
  :data:`CLOSE_ENOUGH`): that attribute.
- a number of the index subscripted (``index.avg_doc_len[...]``): the number, which broadcasts; its length
  (``len(index.n_docs)``, a TypeError whenever it runs): the number.
- a module imported under a short name, named again (``sp.sparse.csr_matrix`` with ``import scipy.sparse as
  sp``, refused by the static check as an attribute ``scipy.sparse`` lacks): the short name.

The attribute lists are read from the contract the model is shown (``evaluators/program/contract.md``). Code is
parsed, never run; nothing else is touched.
"""
from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from evorank.evaluators.program.source import ProgramError, contract_text, split_block
from evorank.threadsafe_ast import parse_ast

from .array_kinds import NUMBER, index_attribute_level
from .bindings import bound_names, defined_names

#: How alike a misspelt attribute must be to a contract attribute (``difflib.SequenceMatcher.ratio``):
#: ``postings_positions`` / ``posting_positions`` is 0.97, ``avg_doc_length`` / ``avg_doc_len`` 0.88, ``idf`` /
#: ``df`` only 0.8 (a different quantity).
CLOSE_ENOUGH = 0.85


@dataclass(frozen=True)
class AttributeFix:
    """A program with its attribute mistakes rewritten, and one line saying what was rewritten."""

    source: str
    description: str


@lru_cache(maxsize=1)
def contract_attributes() -> dict[str, frozenset[str]]:
    """``{"index": ..., "query": ...}``: the attribute names the contract documents for each."""
    text = contract_text()
    return {obj: frozenset(re.findall(rf"\b{obj}\.([A-Za-z_]\w*)", text)) for obj in ("index", "query")}


def _program_names(code: str) -> tuple[set[str], set[str]]:
    """(names bound anywhere in a program's EVOLVE-BLOCK, of which the names of its functions)."""
    try:
        tree = parse_ast(split_block(code).block)
    except (ProgramError, SyntaxError):
        return set(), set()
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    names = set().union(*(defined_names(s) for s in tree.body), *(bound_names(f) for f in functions))
    return names, {f.name for f in functions}


def _index_number(node: ast.AST) -> bool:
    """Whether ``node`` is ``index.X`` for a number of the index (``index.n_docs``, ``index.avg_doc_len``)."""
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "index" \
        and index_attribute_level(node.attr) == NUMBER


def _offset(lines: list[str], lines_at: list[int], line: int, col: int) -> int:
    """The character offset of ast's (line, UTF-8 byte column) in the source."""
    return lines_at[line - 1] + len(lines[line - 1].encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def mend_attributes(code: str, donors: list[tuple[str, str]]) -> AttributeFix | None:
    """``code`` with every ``index.X`` / ``query.X`` that the contract lacks rewritten to the one thing it can mean
    (see the module docstring), or None when there is nothing to rewrite. ``donors``: (label, code) of the programs
    the prompt showed, whose names count as meant ones too."""
    try:
        first, last = split_block(code).line_range()
        tree = parse_ast(code)
    except (ProgramError, SyntaxError):
        return None
    known = contract_attributes()
    names, functions = _program_names(code)
    for _, donor in donors:
        more, fns = _program_names(donor)
        names |= more
        functions |= fns
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    # `import scipy.sparse as sp`: sp.sparse.csr_matrix names the module twice
    module_as = {a.asname: a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                 if a.asname and "." in a.name}
    edits: list[tuple[ast.AST, str, str]] = []  # (node to replace, replacement, note)
    for node in ast.walk(tree):
        if not (getattr(node, "lineno", 0) >= first and getattr(node, "end_lineno", last + 1) <= last):
            continue
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_as \
                and module_as[node.value.id].rsplit(".", 1)[1] == node.attr:
            edits.append((node, node.value.id, f"{node.value.id}.{node.attr} -> {node.value.id}"))
            continue
        if isinstance(node, ast.Subscript) and _index_number(node.value) and isinstance(node.ctx, ast.Load):
            edits.append((node, f"index.{node.value.attr}", f"index.{node.value.attr}[...] (a number)"))
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" \
                and len(node.args) == 1 and not node.keywords and _index_number(node.args[0]):
            edits.append((node, ast.unparse(node.args[0]), f"len({ast.unparse(node.args[0])}) (a number)"))
            continue
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in known
                and isinstance(node.ctx, ast.Load)):
            continue
        obj, attr = node.value.id, node.attr
        if attr in known[obj] or attr.startswith("__"):
            continue
        call = calls.get(id(node))
        if attr in names:
            if call is not None and attr not in functions:
                if len(call.args) != 1 or call.keywords:
                    continue
                edits.append((call, f"{attr}[{ast.unparse(call.args[0])}]", f"{obj}.{attr}(...) -> {attr}[...]"))
            else:
                edits.append((node, attr, f"{obj}.{attr} -> {attr}"))
            continue
        close = difflib.get_close_matches(attr, sorted(known[obj]), n=2, cutoff=CLOSE_ENOUGH)
        if len(close) == 1:
            edits.append((node, f"{obj}.{close[0]}", f"{obj}.{attr} -> {obj}.{close[0]}"))
    if not edits:
        return None
    # outermost edits win: an edit inside another one's span is dropped
    spans = []
    lines, lines_at, total = code.split("\n"), [], 0  # ast counts lines by "\n" (str.splitlines splits on more)
    for line in lines:
        lines_at.append(total)
        total += len(line) + 1
    for node, text, note in edits:
        start = _offset(lines, lines_at, node.lineno, node.col_offset)
        end = _offset(lines, lines_at, node.end_lineno, node.end_col_offset)
        spans.append((start, end, text, note))
    spans.sort(key=lambda s: (s[0], -s[1]))
    kept, reach = [], -1
    for s in spans:
        if s[0] >= reach:
            kept.append(s)
            reach = s[1]
    source = code
    for start, end, text, _ in sorted(kept, reverse=True):
        source = source[:start] + text + source[end:]
    notes = list(dict.fromkeys(note for *_, note in kept))
    return AttributeFix(source, "rewrote " + ", ".join(notes))
