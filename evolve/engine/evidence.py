"""Which kinds of index evidence a ranking program reads, told from its AST (nothing is executed).

:func:`evidence_kinds` answers with a subset of :data:`EVIDENCE_KINDS`, the evidence the widened program
contract (``evaluators/program/contract.md``) added beyond term and document statistics:

``term_strings``  the vocabulary's strings: ``index.terms``, ``index.term_id``, and its views ``index.prefix_groups``,
                  ``index.char_ngrams``
``positions``     token order: ``index.positions``, ``posting_positions``, ``posting_position_ptr``,
                  ``doc_tokens``, ``doc_positions``, ``doc_token_ptr``, ``doc_token_list``, and ``query.positions``
``fields``        title / body statistics: ``index.field``, ``index.title_tf``, ``index.title_len``
``feedback``      a second pass: code that ``score`` runs reads rows of ``index.doc_term`` (or calls
                  ``index.doc_terms``) and ranks documents (``argsort``, ``argpartition``, ``sort``,
                  ``lexsort``, ``nlargest``), i.e. looks at the terms of its own best documents
``query_words``   the query as written: ``query.words``, ``query.token_ids``

Which names are the index and the query: the parameters of ``prepare(index)`` and
``score(query, index, state)``, followed into the block's helper functions through calls (positional and
keyword arguments) and plain aliases (``idx = index``). The seeds read none of these (empty set).

:func:`query_work` estimates, from the same tree, the work ``score`` does per query relative to the BM25
seed (whose one pass over the query terms' postings is 1): each further kind of index data the code that
``score`` runs reads adds its cost (:data:`QUERY_WORK`), and each Python loop there adds
:data:`LOOP_WORK`. The costs are the order of magnitude of what the shipped programs of each kind measure
against BM25 on the development collections (a second pass over postings or document rows about 1x, the
positional channels about 2x); the estimate only has to order programs by cost, the same way on every
machine, which is what a MAP-Elites axis needs (a measured latency would make the grid, and so the run,
depend on the machine's load).
"""
from __future__ import annotations

import ast

from evorank.threadsafe_ast import parse_ast

EVIDENCE_KINDS = ("term_strings", "positions", "fields", "feedback", "query_words")

_INDEX_ATTRS = {
    "terms": "term_strings", "term_id": "term_strings", "prefix_groups": "term_strings", "char_ngrams": "term_strings",
    "positions": "positions", "posting_positions": "positions", "posting_position_ptr": "positions",
    "doc_tokens": "positions", "doc_positions": "positions", "doc_token_ptr": "positions",
    "doc_token_list": "positions",
    "field": "fields", "title_tf": "fields", "title_len": "fields",
}
_QUERY_ATTRS = {"positions": "positions", "words": "query_words", "token_ids": "query_words"}
_RANKING_CALLS = ("argsort", "argpartition", "sort", "lexsort", "nlargest")

#: per-query work of each kind of index data read by the code ``score`` runs, in units of BM25's pass over the
#: query terms' postings: the postings again (expansion terms, variants), document rows (feedback), fields,
#: positions, the vocabulary's strings
QUERY_WORK = {"postings": 1.0, "rows": 1.0, "fields": 0.5, "positions": 2.0, "vocabulary": 2.0}
_WORK_ATTRS = {
    "term_doc": "postings", "doc_term": "rows", "doc_terms": "rows", "field": "fields", "title_tf": "fields",
    "title_len": "fields", "terms": "vocabulary", "term_id": "vocabulary",
    **{a: "positions" for a, k in _INDEX_ATTRS.items() if k == "positions"},
}
#: per-query work of each loop (``for``, ``while``, a comprehension) in the code ``score`` runs
LOOP_WORK = 0.5


def evidence_kinds(source: str) -> set[str]:
    """The kinds of :data:`EVIDENCE_KINDS` that ``source`` (a whole program or a block) reads; the empty
    set for a program that does not parse."""
    try:
        tree = parse_ast(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    funcs: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = node
    roles = _roles(funcs)
    kinds: set[str] = set()
    for name, func in funcs.items():
        index_names, query_names = roles[name]["index"], roles[name]["query"]
        for n in ast.walk(func):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
                if n.value.id in index_names and n.attr in _INDEX_ATTRS:
                    kinds.add(_INDEX_ATTRS[n.attr])
                elif n.value.id in query_names and n.attr in _QUERY_ATTRS:
                    kinds.add(_QUERY_ATTRS[n.attr])
    if "score" in funcs and _second_pass(funcs, roles):
        kinds.add("feedback")
    return kinds


def query_work(source: str) -> float:
    """Estimated work of ``score`` per query relative to the BM25 seed (1.0); see the module docstring.
    1.0 for a program that does not parse or has no ``score``."""
    try:
        tree = parse_ast(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return 1.0
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if "score" not in funcs:
        return 1.0
    roles = _roles(funcs)
    read: set[str] = set()
    loops = 0
    for name in _reachable(funcs, "score"):
        index_names = roles[name]["index"]
        for n in ast.walk(funcs[name]):
            if isinstance(n, (ast.For, ast.While, ast.comprehension)):
                loops += 1
            elif isinstance(n, ast.Attribute) and n.attr in _WORK_ATTRS and _on_index(n.value, index_names):
                read.add(_WORK_ATTRS[n.attr])
    return 1.0 + sum(QUERY_WORK[k] for k in read) + LOOP_WORK * loops


def _on_index(node: ast.expr, index_names: set[str]) -> bool:
    """``node`` is the index, or a field of it (``index.field("title")``)."""
    if isinstance(node, ast.Name):
        return node.id in index_names
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "field"
            and isinstance(node.func.value, ast.Name) and node.func.value.id in index_names)


def _params(func: ast.FunctionDef) -> list[str]:
    return [a.arg for a in func.args.posonlyargs + func.args.args]


def _roles(funcs: dict[str, ast.FunctionDef]) -> dict[str, dict[str, set[str]]]:
    """Function -> {"index": names that hold the index there, "query": names that hold the query}."""
    roles = {name: {"index": set(), "query": set()} for name in funcs}
    if "prepare" in funcs and _params(funcs["prepare"]):
        roles["prepare"]["index"].add(_params(funcs["prepare"])[0])
    if "score" in funcs:
        p = _params(funcs["score"])
        if len(p) > 0:
            roles["score"]["query"].add(p[0])
        if len(p) > 1:
            roles["score"]["index"].add(p[1])
    for _ in range(2 * len(funcs) + 2):  # propagate to a fixed point (bounded)
        changed = False
        for name, func in funcs.items():
            mine = roles[name]
            for n in ast.walk(func):
                if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name):
                    for role, held in mine.items():
                        if n.value.id in held:
                            for t in n.targets:
                                if isinstance(t, ast.Name) and t.id not in held:
                                    held.add(t.id)
                                    changed = True
                elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in funcs:
                    callee = funcs[n.func.id]
                    params = _params(callee)
                    passed = [(params[i], a) for i, a in enumerate(n.args) if i < len(params)]
                    passed += [(k.arg, k.value) for k in n.keywords if k.arg in params]
                    for param, arg in passed:
                        if not isinstance(arg, ast.Name):
                            continue
                        for role, held in mine.items():
                            if arg.id in held and param not in roles[callee.name][role]:
                                roles[callee.name][role].add(param)
                                changed = True
        if not changed:
            break
    return roles


def _reachable(funcs: dict[str, ast.FunctionDef], start: str) -> list[str]:
    seen, todo = [start], [start]
    while todo:
        for n in ast.walk(funcs[todo.pop()]):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in funcs and n.func.id not in seen:
                seen.append(n.func.id)
                todo.append(n.func.id)
    return seen


def _second_pass(funcs: dict[str, ast.FunctionDef], roles) -> bool:
    """``score`` (or a helper it calls) reads document rows of the index and ranks documents."""
    reads_rows = ranks = False
    for name in _reachable(funcs, "score"):
        index_names = roles[name]["index"]
        for n in ast.walk(funcs[name]):
            if (isinstance(n, ast.Attribute) and n.attr in ("doc_term", "doc_terms")
                    and isinstance(n.value, ast.Name) and n.value.id in index_names):
                reads_rows = True
            elif isinstance(n, ast.Call):
                f = n.func
                fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if fname in _RANKING_CALLS:
                    ranks = True
    return reads_rows and ranks
