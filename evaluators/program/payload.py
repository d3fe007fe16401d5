"""The literal data a program carries: how many characters of numbers and strings are written into its code.

A ranking program needs a few dozen constants (k1, b, mu, window sizes, weights); the shipped seeds, examples and
the offline mutator's channels carry at most about 90 characters of them, and 120 offline mutations in a row
(every channel spliced in, constants tuned to four digits) about 360. A program that looks documents up by what it
has been told about the judgements needs a table: the scifact test judgements alone are 339 (query, document)
pairs, about 4,700 characters of ids, and a bitmap of the documents relevant to any query takes one character per
document. Bounding the literal characters a program may carry keeps such tables out of its code for collections
of more than about a thousand documents. It is a bound, not a proof: the relevant documents of a tiny collection
(ADI: 82 documents, TIME: 423) still fit, a program can derive signals from the collection itself, and names
(identifiers) are not counted, so some data can still be smuggled in within the block's size limit. Held-out
tracking (collections never used for selection) is what shows memorisation.

"""
from __future__ import annotations

import ast

MAX_LITERAL_CHARS = 1_000
"""The literal characters a program may carry: ten times the largest shipped program's, nearly three times that of
a long offline lineage."""


def docstring_ids(tree: ast.AST) -> set[int]:
    """``id()`` of every docstring constant of ``tree`` (module, classes, functions)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                found.add(id(body[0].value))
    return found


def literal_size(node: ast.Constant) -> int:
    """The characters of data one literal carries."""
    value = node.value
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, bool) or value is None or value is Ellipsis:
        return 0
    return len(repr(value))


def over_budget(tree: ast.AST, limit: int = MAX_LITERAL_CHARS) -> tuple[int, int] | None:
    """``(total characters, line of the literal that crossed the limit)`` when the literals of ``tree`` (docstrings
    left out) carry more than ``limit`` characters, else None."""
    docs = docstring_ids(tree)
    literals = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs),
                      key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    total, crossed = 0, 0
    for node in literals:
        total += literal_size(node)
        if total > limit and not crossed:
            crossed = getattr(node, "lineno", 0) or 0
    return (total, crossed) if total > limit else None


def budget_message(total: int, limit: int = MAX_LITERAL_CHARS) -> str:
    return (f"the program's literals (numbers and strings, docstrings aside) hold {total:,} characters; the limit is "
            f"{limit:,}: compute values from the index instead of writing tables into the code")
