"""One evolved program as the archive records it, plus the code measures
that only depend on its source text (normalized hash, complexity).

Nothing here touches the database: `store.py` persists `ProgramRecord`s,
`elites.py` places them in grids.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
from dataclasses import dataclass, field

from evorank.threadsafe_ast import parse_ast

PRUNE = "prune"
"""The operator of a run's best with the parts its validation queries do not support removed
(``evolve.engine.pruning``): archived, never placed in a grid; the run's best in place of its parent."""

FUSE = "fusion"
"""The operator of the score fusion of a run's island bests (``evolve.engine.fusion``): archived, never placed in
a grid; the run's best when its validation fitness is higher than the best single program's."""

NOT_IN_GRIDS = (PRUNE, FUSE)
"""Operators of programs made from a finished run's best, which compete for best but never enter a grid."""

OPERATORS = ("seed", "diff", "full", "crossover", "offline", "migration", "repair", "command", PRUNE, FUSE)
"""Allowed `ProgramRecord.operator` values. Add here (not in callers) when the
loop grows a new mutation operator, so typos fail loudly at insert time."""


def placeable(status: str, fitness: float | None, operator: str) -> bool:
    """Whether a program with this status, fitness and operator may enter a grid: accepted, with a finite fitness,
    and not a pruned best or a fusion (``NOT_IN_GRIDS``)."""
    return status == "accepted" and operator not in NOT_IN_GRIDS and fitness is not None and math.isfinite(fitness)


STATUSES = ("accepted", "failed", "duplicate", "rejected_cascade")
"""Allowed `ProgramRecord.status` values; only 'accepted' may enter a grid."""
RAN_STATUSES = ("accepted", "rejected_cascade")
"""Statuses of programs that ran without error ('rejected_cascade': ran on the stage-1 query sample, then cut for
its score): what bench/llm_funnel.py and bench/llm_replay.py count as running cleanly."""

EVOLVE_START = "# EVOLVE-BLOCK-START"
EVOLVE_END = "# EVOLVE-BLOCK-END"


@dataclass
class ProgramRecord:
    """Everything known about one candidate program.

    Contract:
    - The caller fills the descriptive fields; `id`, `code_hash`, `created_at`
      and `cell` are set by `RunStore.add_program` (in place) and must be
      None before the insert. `features` is completed by the store with the
      grid's feature values it can compute (e.g. 'complexity').
    - `metrics` is {collection: {metric: value}}; non-finite values are
      stored as None (SQLite/JSON cannot round-trip NaN portably).
    - `fitness` None (or non-finite, normalized to None) means "not
      placeable": the program is archived but never enters a grid.
    - A migrant copy has operator 'migration' and parent_ids == (original,);
      it is never selected for migration again.
    - A pruned best has operator 'prune' and parent_ids == (the best,); a fusion
      has operator 'fusion' and parent_ids == (its members); neither is ever
      placed in a grid (``NOT_IN_GRIDS``).
    """

    code: str
    operator: str  # seed | diff | full | crossover | offline | migration | repair | command | prune | fusion
    island: int
    generation: int
    iteration: int
    parent_ids: tuple[int, ...] = ()
    status: str = "accepted"  # accepted | failed | duplicate | rejected_cascade
    failure_reason: str | None = None  # machine-readable e.g. "timeout", "forbidden:import os"
    failure_detail: str | None = None  # short human text
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    fitness: float | None = None
    latency_ms: float | None = None  # median per-query scoring latency
    latency_ratio: float | None = None  # latency / BM25 seed latency in the same run
    stage: int = 0  # cascade stage reached (1 = sample, 2 = full)
    model: str | None = None
    prompt: str | None = None
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # Raw feature values; the cell is derived from the grid's (numeric) ones.
    # Other keys may hold any JSON value (e.g. a seed's name) and are kept as is.
    features: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None  # when the iteration that produced it began (caller)
    id: int | None = None  # set by the store
    code_hash: str | None = None  # set by the store (normalized)
    created_at: float | None = None  # set by the store (commit time, unix seconds)
    cell: tuple[int, ...] | None = None  # set by the store: grid cell, None if not placed

    @property
    def is_migrant(self) -> bool:
        return self.operator == "migration"

    @property
    def placeable(self) -> bool:
        """May enter a grid (cell membership is decided by the grid spec)."""
        return placeable(self.status, self.fitness, self.operator)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                # A def whose only statement is its docstring still needs a body.
                node.body = body[1:] or ([ast.Pass()] if not isinstance(node, ast.Module) else [])
    return tree


def normalized_code(code: str) -> str | None:
    """Canonical source (docstrings and comments dropped, formatting unified),
    or None if the code does not parse."""
    try:
        tree = parse_ast(code)
    except (SyntaxError, ValueError):  # ValueError: source with NUL bytes
        return None
    return ast.unparse(_strip_docstrings(tree))


def normalized_code_hash(code: str) -> str:
    """sha256 hex of the normalized code; for unparsable code, of the text
    with all whitespace removed (so reformatting alone never yields a new
    hash, even for broken programs)."""
    norm = normalized_code(code)
    if norm is None:
        norm = "".join(code.split())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def _evolve_line_ranges(code: str) -> list[tuple[int, int]]:
    """1-based inclusive line ranges strictly between start/end markers."""
    ranges, start = [], None
    for lineno, line in enumerate(code.splitlines(), 1):
        text = line.strip()
        if text.startswith(EVOLVE_START):
            start = lineno
        elif text.startswith(EVOLVE_END) and start is not None:
            ranges.append((start + 1, lineno - 1))
            start = None
    return ranges


def complexity(code: str) -> int:
    """AST node count of the EVOLVE-BLOCK regions (all of them, summed) when
    the markers are present, else of the whole module.

    Nodes without a line number (contexts, operators) count with their
    nearest located ancestor, so the result does not depend on where a block
    starts. Unparsable code gets a token count as a rough proxy; such code is
    never accepted, so it never matters for a grid.
    """
    try:
        tree = parse_ast(code)
    except (SyntaxError, ValueError):
        return len(re.findall(r"\w+|[^\w\s]", code))
    ranges = _evolve_line_ranges(code)
    if not ranges:
        return sum(1 for _ in ast.walk(tree))

    def inside(line: int) -> bool:
        return any(lo <= line <= hi for lo, hi in ranges)

    count = 0
    stack: list[tuple[ast.AST, int | None]] = [(tree, None)]
    while stack:
        node, line = stack.pop()
        line = getattr(node, "lineno", line)
        if line is not None and inside(line):
            count += 1
        stack.extend((child, line) for child in ast.iter_child_nodes(node))
    return count


def _block_text(code: str) -> str:
    """The text between the evolve markers (every block, joined), or the whole code when it has none."""
    ranges = _evolve_line_ranges(code)
    if not ranges:
        return code
    lines = code.splitlines()
    return "\n".join(line for lo, hi in ranges for line in lines[lo - 1:hi])


def _name_targets(stmt: ast.stmt) -> set[str] | None:
    """The names an assignment statement binds when it binds plain names only (``x = ...``, ``x: T = ...``,
    ``x += ...``, ``a, b = ...``); None for any other statement."""
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    else:
        return None
    names: set[str] = set()
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, (ast.Attribute, ast.Subscript, ast.Starred)):
                return None  # writes into an object: not a plain binding
            if isinstance(n, ast.Name):
                names.add(n.id)
    return names


def _reads(node: ast.AST, skip: ast.stmt | None = None) -> set[str]:
    """Names read anywhere in ``node``, leaving out what statement ``skip`` reads (``x = x + 1`` alone does not keep
    ``x``)."""
    inside = {id(n) for n in ast.walk(skip)} if skip is not None else set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            and id(n) not in inside}


def _drop_dead_assignments(func: ast.FunctionDef) -> bool:
    """Remove, once, the assignments in ``func`` to names that nothing in it reads (except themselves); True when
    something was removed. Values are taken to have no side effects (what a ranking program assigns)."""
    declared = {n for s in ast.walk(func) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
    removed = False
    for node in list(ast.walk(func)):
        for attr in ("body", "orelse", "finalbody"):
            body = getattr(node, attr, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            if attr == "body" and len(body) == 1 and isinstance(body[0], ast.Pass):
                continue  # what an emptied body becomes: removing it again would loop for ever
            kept = []
            for stmt in body:
                names = _name_targets(stmt)
                dead = (names is not None and names and not names & declared
                        and not names & _reads(func, skip=stmt))
                useless = isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr)
                                                          and isinstance(stmt.value, ast.Constant))
                if dead or useless:
                    removed = True
                else:
                    kept.append(stmt)
            setattr(node, attr, kept or ([ast.Pass()] if attr == "body" else []))
    return removed


def essential_code(code: str) -> str | None:
    """What of a program's evolve block (the whole code when it has no markers) can change how it ranks, as
    canonical text: docstrings, comments and layout dropped (as in :func:`normalized_code`), then what nothing
    uses: module-level definitions (functions, constants, imports; not assignments that call something at import)
    that ``score`` and ``prepare`` do not reach, assignments inside a function to names nothing reads, bare
    constants and ``pass``; module-level functions in name order when their order cannot matter. Two programs with the same essential code rank alike; a program that is another plus an unused
    helper or an unused line is a copy of it. None when the code does not parse."""
    norm = normalized_code(_block_text(code))
    if norm is None:
        return None
    tree = parse_ast(norm)
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)

    def defines(stmt) -> set[str]:
        """What a module-level statement defines and may be dropped with when nothing reads it (not an assignment
        that calls something: it runs at import, and what it does may matter)."""
        if isinstance(stmt, (*funcs, ast.ClassDef)):
            return {stmt.name}
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return {(a.asname or a.name).split(".")[0] for a in stmt.names}
        if any(isinstance(n, ast.Call) for n in ast.walk(stmt)):
            return set()
        return _name_targets(stmt) or set()

    changed = True
    while changed:
        changed = False
        # module level: keep score, prepare, statements that define nothing, and what they read (transitively)
        keep = [isinstance(s, funcs) and s.name in ("score", "prepare") or not defines(s) for s in tree.body]
        needed = set().union(*(_reads(s) for s, k in zip(tree.body, keep) if k))
        grew = True
        while grew:
            grew = False
            for i, stmt in enumerate(tree.body):
                if not keep[i] and defines(stmt) & needed:
                    keep[i], grew = True, True
                    needed |= _reads(stmt)
        if not all(keep):
            tree.body, changed = [s for s, k in zip(tree.body, keep) if k], True
        for stmt in tree.body:
            if isinstance(stmt, funcs) and _drop_dead_assignments(stmt):
                changed = True
    defs = [s for s in tree.body if isinstance(s, funcs)]
    others = [s for s in tree.body if not isinstance(s, funcs)]
    if len({d.name for d in defs}) == len(defs) and not any(d.decorator_list for d in defs) \
            and not any(isinstance(n, ast.Call) for s in others for n in ast.walk(s)):
        tree.body = others + sorted(defs, key=lambda d: d.name)  # their order cannot matter
    return ast.unparse(tree)
