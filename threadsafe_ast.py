"""``ast.parse`` and ``compile`` of a syntax tree, one thread at a time.

CPython up to 3.12 keeps the counter that guards the conversion between its internal syntax tree and Python's
``ast`` objects in interpreter-wide state. Two threads converting at the same time can corrupt it, and one of
them fails with ``SystemError: AST constructor recursion depth mismatch`` (python/cpython gh-106905). evorank
converts in several threads of the trusted process: the engine's main thread (offline mutations and their
checks, code hashes, descriptors), the held-out tracker's evaluator (static checks), LLM and command proposer
threads (applying replies). The offline mutator reads any exception as "this edit does not apply", so a race
made a run with a fixed seed produce a different child now and then (measured: 5 of 4,911 mutations while an
evaluator checked programs in another thread). Every parse and tree compile in evorank goes through here.
Compiling source text needs no lock (it never builds ``ast`` objects); the lock costs ~0.1 us per call.

Most of what evorank parses is candidate text (a model's reply, a program a command wrote), so every parse is
bounded: text longer than ``MAX_PARSE_CHARS`` is not parsed, and a tree nested deeper than ``MAX_PARSE_DEPTH`` is
not returned. Both raise :class:`SourceTooComplex`, a ``SyntaxError``, so every caller that already treats a
candidate that does not parse as that candidate's failure treats these the same way. Without the bounds a
1 MB chain of ``+`` or of unary minus signs makes the parser raise ``RecursionError`` or ``MemoryError``, and a
tree a few hundred levels deep makes the recursive steps after it (``ast.unparse``, ``copy.deepcopy``, node
visitors) raise ``RecursionError`` in whichever trusted step meets it first.
"""
from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()

MAX_PARSE_CHARS = 128_000
"""Longest text parsed: twice the largest program the static checks accept (64,000 bytes)."""
MAX_PARSE_DEPTH = 100
"""Deepest syntax tree returned. The shipped programs are 10-12 levels deep; recursive tree walks take 2-6
Python frames per level, so 100 levels stay far from the interpreter's limit of 1,000 frames."""


class SourceTooComplex(SyntaxError):
    """Text evorank does not parse: too long, or nested too deeply (a fixed message, no text of the source)."""


def parse_ast(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """``ast.parse(source, filename, mode)``, serialised with every other conversion in the process; raises
    :class:`SourceTooComplex` beyond ``MAX_PARSE_CHARS`` characters or ``MAX_PARSE_DEPTH`` levels."""
    if len(source) > MAX_PARSE_CHARS:
        raise SourceTooComplex(f"the text is {len(source):,} characters long; evorank parses at most "
                               f"{MAX_PARSE_CHARS:,}")
    with _LOCK:
        try:
            tree = ast.parse(source, filename, mode)
        except (RecursionError, MemoryError):
            raise SourceTooComplex("the text is nested too deeply for Python's parser") from None
    if _deeper_than(tree, MAX_PARSE_DEPTH):
        raise SourceTooComplex(f"the syntax tree is more than {MAX_PARSE_DEPTH} levels deep")
    return tree


def _deeper_than(tree: ast.AST, limit: int) -> bool:
    """Whether ``tree`` has more than ``limit`` levels: level by level, no recursion, stopping at the limit (about a
    quarter of the time of the parse itself; ``ast.iter_child_nodes`` would take as long as the parse)."""
    level = [tree]
    for _ in range(limit):
        below: list[ast.AST] = []
        add = below.append
        for node in level:
            for name in node._fields:
                value = getattr(node, name, None)
                if value.__class__ is list:
                    for item in value:
                        if isinstance(item, ast.AST):
                            add(item)
                elif isinstance(value, ast.AST):
                    add(value)
        if not below:
            return False
        level = below
    return True


def compile_ast(tree: ast.AST, filename: str, mode: str = "exec"):
    """``compile(tree, filename, mode)`` of a syntax tree, serialised with every other conversion."""
    with _LOCK:
        return compile(tree, filename, mode)
