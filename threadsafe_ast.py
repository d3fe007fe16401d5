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
"""
from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse_ast(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """``ast.parse(source, filename, mode)``, serialised with every other conversion in the process."""
    with _LOCK:
        return ast.parse(source, filename, mode)


def compile_ast(tree: ast.AST, filename: str, mode: str = "exec"):
    """``compile(tree, filename, mode)`` of a syntax tree, serialised with every other conversion."""
    with _LOCK:
        return compile(tree, filename, mode)
