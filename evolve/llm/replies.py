"""Turning an LLM reply into a candidate program: SEARCH/REPLACE diffs or a full block rewrite.

Every failure is a ``ReplyError`` with a machine-readable ``reason`` (``no_code``, ``truncated``,
``diff_no_match``, ``diff_ambiguous``, ``diff_outside_block``, ``code_fragment``, ``no_change``) and a sentence
that is shown to the LLM next time, so it can learn what went wrong.
"""
from __future__ import annotations

import ast
import builtins
import difflib
import re
import textwrap
from dataclasses import dataclass

from evorank.archive.programs import essential_code, normalized_code
from evorank.evaluators.program.output import fence
from evorank.evaluators.program.source import BLOCK_END, BLOCK_START, ProgramError, split_block
from evorank.evolve.proposal import COPY
from evorank.threadsafe_ast import parse_ast

from .mend.bindings import bound_names, defined_names, free_names, read_names

#: The reasons a reply gives no candidate (every ``ReplyError``); other failures are the candidate's own.
REPLY_FAILURES = ("no_code", "truncated", "diff_no_match", "diff_ambiguous", "diff_outside_block", "code_fragment",
                  "no_change", COPY)

_DIFF = re.compile(r"<{5,}\s*SEARCH[^\n]*\n(.*?)\n?={5,}[^\n]*\n(.*?)\n?>{5,}\s*REPLACE", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
_SEARCH_OPENS = re.compile(r"<{5,}\s*SEARCH")  # where a SEARCH/REPLACE block begins, complete or not


class ReplyError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Edit:
    search: str
    replace: str


def parse_diff(reply: str) -> list[Edit]:
    edits = [Edit(s, r) for s, r in _DIFF.findall(reply)]
    if not edits:
        if "<<<<<<< SEARCH" in reply or "<<<<<<<" in reply:
            raise ReplyError("truncated", "a SEARCH/REPLACE block was opened but not closed with '>>>>>>> REPLACE'")
        raise ReplyError("no_code", "the reply contained no SEARCH/REPLACE block")
    return edits


def _strip_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.split("\n")]


def _find_lines(haystack: list[str], needle: list[str], key) -> list[int]:
    n = len(needle)
    target = [key(x) for x in needle]
    keyed = [key(x) for x in haystack]
    return [i for i in range(len(haystack) - n + 1) if keyed[i : i + n] == target]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def apply_edit(block: str, edit: Edit) -> str:
    """Apply one edit to the block text, tolerating whitespace drift.

    Tries, in order: the exact text; the same lines ignoring trailing spaces; the same lines
    ignoring indentation (the replacement is then re-indented by the difference); the same
    non-blank lines. A match must be unique.
    """
    if edit.search and block.count(edit.search) == 1:
        return block.replace(edit.search, edit.replace, 1)
    if edit.search and block.count(edit.search) > 1:
        raise ReplyError("diff_ambiguous", "a SEARCH text occurs more than once in the EVOLVE-BLOCK; include more context")
    lines = block.split("\n")
    search = _strip_lines(edit.search.strip("\n"))
    replace = edit.replace.strip("\n").split("\n")
    if not any(s.strip() for s in search):
        raise ReplyError("diff_no_match", "a SEARCH section was empty")
    for key in (str.rstrip, str.strip):
        hits = _find_lines(lines, search, key)
        if len(hits) > 1:
            raise ReplyError("diff_ambiguous", "a SEARCH text occurs more than once in the EVOLVE-BLOCK; include more context")
        if hits:
            i = hits[0]
            old_indent = _indent(lines[i])
            new_indent = _indent(search[0])
            if old_indent != new_indent:  # re-indent the replacement to where the match really is
                replace = [
                    (old_indent + r[len(new_indent):] if r.startswith(new_indent) else old_indent + r.lstrip())
                    if r.strip() else r
                    for r in replace
                ]
            return "\n".join(lines[:i] + replace + lines[i + len(search):])
    # Last resort: ignore blank lines on both sides.
    nonblank = [(i, line) for i, line in enumerate(lines) if line.strip()]
    wanted = [s.strip() for s in search if s.strip()]
    keys = [line.strip() for _, line in nonblank]
    hits = [j for j in range(len(keys) - len(wanted) + 1) if keys[j : j + len(wanted)] == wanted]
    if len(hits) == 1:
        first, last = nonblank[hits[0]][0], nonblank[hits[0] + len(wanted) - 1][0]
        return "\n".join(lines[:first] + replace + lines[last + 1:])
    raise ReplyError(
        "diff_no_match",
        f"SEARCH text not found in the EVOLVE-BLOCK: {edit.search.strip().splitlines()[0][:80]!r}... "
        "SEARCH must copy existing lines of the block exactly",
    )


def _quotes_a_marker() -> ReplyError:
    return ReplyError("diff_outside_block", f"a SEARCH/REPLACE block quotes a '{BLOCK_START}' or '{BLOCK_END}' "
                                            "line; edit only the lines between the markers")


def apply_diff(source: str, reply: str) -> str:
    """Apply every SEARCH/REPLACE block of ``reply`` to the program's EVOLVE-BLOCK."""
    parts = split_block(source)
    block = parts.block
    for edit in parse_diff(reply):
        try:
            block = apply_edit(block, edit)
        except ReplyError as e:
            fixed = parts.head + parts.tail
            if e.reason == "diff_no_match" and (BLOCK_START in edit.search or BLOCK_END in edit.search):
                raise _quotes_a_marker() from None
            if e.reason == "diff_no_match" and edit.search.strip() and edit.search.strip() in fixed:
                raise ReplyError("diff_outside_block", "a SEARCH text is outside the EVOLVE-BLOCK; only the block may change") from None
            raise
    if block == parts.block:
        raise ReplyError("no_change", "the edits left the program unchanged")
    return parts.join(_ensure_newline(block))


def _fence_left_open(reply: str) -> bool:
    """Whether the reply opened a ``` code fence it never closed (an odd number of fence marks)."""
    return reply.count("```") % 2 == 1


BLOCK_END_STOP = "\n" + BLOCK_END
"""Where the server ends a reply (OpenAI's ``stop``): at the EVOLVE-BLOCK's end marker, the end of the block a reply
gives. What a model writes after it is an explanation, the module's fixed tail, or (rarely) the block once more; a
SEARCH part that quotes the marker matches nothing in the block. Without the stop, an explanation written after a
long block runs the reply to ``max_tokens``: the code was complete, but the request is spent to its limit."""


def with_block_end(reply: str, finish_reason: str | None) -> str:
    """``reply`` with the block's end marker put back where the server stopped it at :data:`BLOCK_END_STOP`
    (servers leave the stop string out of the reply): a reply that ended by itself (``finish_reason`` "stop")
    inside a SEARCH/REPLACE block, or inside the block it was writing (more start markers than end markers, and no
    fence or one left open). Any other reply comes back as it is. A model that ended its reply inside the block
    without writing the marker gets the reading :func:`apply_full` gives a block whose marker was dropped: the
    block runs to the end of the code."""
    if finish_reason != "stop":
        return reply
    in_block = reply.count(BLOCK_START) > reply.count(BLOCK_END) and (
        "```" not in reply or _fence_left_open(reply))
    in_diff = len(_SEARCH_OPENS.findall(reply)) > len(_DIFF.findall(reply))
    return reply + BLOCK_END_STOP + "\n" if in_block or in_diff else reply


def _closed_at_block_end(reply: str) -> str:
    """``reply`` with its last code fence closed when the fence was left open right after the block's end marker
    (a reply stopped there: :func:`with_block_end`); any other reply as it is. :func:`apply_reply` reads every
    reply through it."""
    if _fence_left_open(reply) and reply.rstrip().endswith(BLOCK_END):
        return reply.rstrip() + "\n```\n"
    return reply


def extract_code(reply: str) -> str:
    """The code of the fenced block that looks most like a program (or the whole reply if it is bare code with the
    markers). Fences indented inside a markdown list are dedented. A reply that gives its functions in separate
    fences (``prepare`` in one, ``score`` in the next) gets them together, in the reply's order, when every such
    fence holds only definitions and no name is defined twice (a before-and-after pair keeps the old choice)."""
    blocks = [textwrap.dedent(b) for b in _FENCE.findall(reply)]
    if blocks:
        best = max(blocks, key=lambda b: (BLOCK_START in b or "def score" in b, "def " in b, len(b)))
        if len(blocks) > 1 and BLOCK_START not in best:
            defined = [_definitions_only(b) for b in blocks]
            if all(names is not None for names in defined):
                names = [n for ns in defined for n in ns]
                if len(names) == len(set(names)):
                    return "\n\n".join(b.strip("\n") for b in blocks) + "\n"
        return best
    if _fence_left_open(reply):
        raise ReplyError("truncated", "the reply opened a ``` code fence but never closed it (truncated?)")
    if BLOCK_START in reply or "def score" in reply:
        return reply
    raise ReplyError("no_code", "the reply contained no Python code block")


def _definitions_only(code: str) -> list[str] | None:
    """The names a fenced block defines when it parses and holds only functions, classes, imports and module
    assignments (at least one function); else None."""
    try:
        tree = parse_ast(code)
    except SyntaxError:
        return None
    if not any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) for s in tree.body) or not all(
            isinstance(s, (*_DEFINITIONS, ast.Assign, ast.AnnAssign)) for s in tree.body):
        return None
    return [n for s in tree.body for n in sorted(defined_names(s))]


def _uses_state(tree: ast.Module) -> bool:
    """Whether the block's ``score`` reads its third parameter (the state ``prepare`` returns)."""
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "score":
            params = stmt.args.posonlyargs + stmt.args.args
            return len(params) >= 3 and params[2].arg in read_names(stmt)
    return False


def merge_definitions(parent_block: str, new_code: str) -> str:
    """The EVOLVE-BLOCK a reply means when it shows only what it changes.

    Models often answer a rewrite with just the functions (or constants) they changed. The new code's
    module-level definitions replace the parent's of the same name; a parent definition the new code does not
    redefine is kept when the result needs it: ``score``, a name the new code reads (and, transitively, what
    that reads), and ``prepare`` when the resulting ``score`` reads the state ``prepare`` makes. So a complete
    block comes out as written (the parent's helpers it no longer uses are dropped), and a lone ``def score``
    keeps the parent's constants and ``prepare``. Kept definitions come first, in the parent's order, then the
    new code. Code that does not parse is returned as it is (the static check names the line); so is a parent
    block that does not.
    """
    try:
        new_tree, old_tree = parse_ast(new_code), parse_ast(parent_block)
    except SyntaxError:
        return new_code
    new_names = set().union(*(defined_names(s) for s in new_tree.body))
    needed = read_names(new_tree) | {"score"}  # the contract's entry point stays, the parent's if not given
    if "prepare" not in new_names and _uses_state(new_tree if "score" in new_names else old_tree):
        needed.add("prepare")
    old = [(s, defined_names(s) - new_names) for s in old_tree.body]
    keep: set[int] = set()
    changed = True
    while changed:  # the closure of what the kept definitions read in turn
        changed = False
        for i, (stmt, names) in enumerate(old):
            if i not in keep and names & needed:
                keep.add(i)
                needed |= read_names(stmt)
                changed = True
    lines = parent_block.splitlines()
    kept = []
    for i in sorted(keep):
        stmt = old[i][0]
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        kept.append("\n".join(lines[first - 1:stmt.end_lineno]))
    if not kept:
        return new_code
    return "\n\n".join(kept) + "\n\n\n" + new_code.strip("\n") + "\n"


def _closed_before_the_cut(reply: str) -> bool:
    """Whether a reply cut off at the length limit closed every code fence before the cut, with text after the last
    one: what was cut is the explanation after the code, not the code."""
    return not _fence_left_open(reply) and bool(reply[reply.rfind("```") + 3:].strip())


def apply_full(source: str, reply: str, finish_reason: str | None = None) -> str:
    """Replace the EVOLVE-BLOCK with the reply's code (the block, a whole module, or only the definitions it
    changes: ``merge_definitions``). A block whose end marker is missing is taken to the end of the code when
    the reply ended by itself (models drop the marker) or when it hit max_tokens in the explanation after its last
    code fence closed, and is ``truncated`` when it hit max_tokens inside the code or right at its fence (where
    the last line of code may be what was lost)."""
    code = extract_code(reply)
    parts = split_block(source)
    if BLOCK_START in code:
        if BLOCK_END in code:
            block = split_block(code).block
        elif finish_reason == "length" and not _closed_before_the_cut(reply):
            raise ReplyError("truncated", f"the code has '{BLOCK_START}' but no '{BLOCK_END}' (truncated?)")
        else:
            block = code.split(BLOCK_START, 1)[1].strip("\n") + "\n"
    else:
        block = code.strip("\n") + "\n"
    placed = _place_fragment(parts.head, parts.block, block)
    block = placed if placed is not None else merge_definitions(parts.block, block)
    if "def score" not in block:
        raise ReplyError("no_code", "the rewritten EVOLVE-BLOCK defines no score(query, index, state)")
    if _same_code(block, parts.block):
        raise ReplyError("no_change", "the rewrite is identical to the parent")
    return parts.join(_ensure_newline(block))


#: Module-level statements that define rather than compute: never a line lifted out of a function.
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


def _fragments(module_bound: set[str], new_tree: ast.Module) -> list[ast.stmt]:
    """Top-level statements of a reply's code, other than definitions and imports, that read names nothing at
    module level binds before them: lines lifted out of a function (``weights = idf * tf``), which would fail
    when the module is imported. ``module_bound``: builtins, the head's and the parent block's module names and
    the reply's definitions and imports."""
    bound, out = set(module_bound), []
    for stmt in new_tree.body:
        if not isinstance(stmt, _DEFINITIONS):
            if free_names(stmt) - bound:
                out.append(stmt)
            bound |= defined_names(stmt)
    return out


def _place_fragment(head: str, parent_block: str, new_code: str) -> str | None:
    """The parent block with a reply's lone lifted-out line put where it belongs, or None when the reply's code has
    no such line (or does not parse: the static check names the line). A reply asked for a diff often gives only
    the changed line in a code fence; when that line assigns a name (``weights = ...``, ``scores += ...``) that
    exactly one statement assigns among the parent's functions that have every name the line reads, it replaces
    that statement. Any other lifted-out line is a ``code_fragment`` failure: put at module level it would only
    fail when the program is imported."""
    try:
        head_tree, parent, new = parse_ast(head), parse_ast(parent_block), parse_ast(new_code)
    except SyntaxError:
        return None
    module_bound = set(dir(builtins)).union(*(defined_names(s) for t in (head_tree, parent) for s in t.body),
                                            *(defined_names(s) for s in new.body if isinstance(s, _DEFINITIONS)))
    fragments = _fragments(module_bound, new)
    if not fragments:
        return None
    stmt = fragments[0]
    target = (stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
              else getattr(stmt, "target", None))
    if len(new.body) == 1 and isinstance(target, ast.Name):
        needs = read_names(stmt) - module_bound
        same = [n for f in parent.body if isinstance(f, ast.FunctionDef) and needs <= bound_names(f)
                for n in ast.walk(f) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
                and target.id in {t.id for t in getattr(n, "targets", [getattr(n, "target", None)])
                                  if isinstance(t, ast.Name)}]
        if len(same) == 1:
            lines, old = parent_block.split("\n"), same[0]
            indent = _indent(lines[old.lineno - 1])
            code = textwrap.dedent(new_code.strip("\n")).split("\n")
            return "\n".join(lines[:old.lineno - 1] + [indent + c if c.strip() else c for c in code]
                             + lines[old.end_lineno:])
    first = (ast.get_source_segment(new_code, stmt) or "").split("\n")[0][:80]
    raise ReplyError("code_fragment", f"the reply's code has a line outside any function that uses names only a "
                                      f"function has ({first!r}); give the whole function it belongs in, or "
                                      "SEARCH/REPLACE blocks")


def _same_code(a: str, b: str) -> bool:
    """Equal up to layout and comments (when both parse)."""
    try:
        return ast.dump(parse_ast(a)) == ast.dump(parse_ast(b))
    except SyntaxError:
        return a.strip() == b.strip()


def unreachable_functions(block: str) -> list[str]:
    """The module-level functions of a block that nothing running reaches: not ``score`` or ``prepare``, and not
    named (called or referred to) by them, by a module-level statement, or by a function they reach. [] when the
    block does not parse (the static check names the line)."""
    try:
        tree = parse_ast(block)
    except SyntaxError:
        return []
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    reached = {name for name in ("score", "prepare") if name in defs}
    stack = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    stack += [defs[name] for name in reached]
    while stack:
        for name in {x.id for x in ast.walk(stack.pop()) if isinstance(x, ast.Name)} & set(defs) - reached:
            reached.add(name)
            stack.append(defs[name])
    return [name for name in defs if name not in reached]


def _canonical_code(code: str, drop_unreachable: bool) -> str:
    """The code of a block without docstrings, comments or layout (and without the functions nothing running
    reaches, with ``drop_unreachable``), its module-level functions in name order when their order cannot matter
    (unique names, no decorators, no module-level statement that calls anything at import): a reply that merged
    its functions back in another order, or moved one, ranks as before. Raises SyntaxError."""
    tree = parse_ast(code)
    dead = set(unreachable_functions(code)) if drop_unreachable else set()
    tree.body = [n for n in tree.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                              and n.name in dead)]
    text = normalized_code(ast.unparse(tree))
    if text is None:
        raise SyntaxError("does not parse")
    tree = parse_ast(text)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    others = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len({d.name for d in defs}) == len(defs) and not any(d.decorator_list for d in defs) \
            and not any(isinstance(n, ast.Call) for s in others for n in ast.walk(s)):
        tree.body = others + sorted(defs, key=lambda d: d.name)
    return ast.unparse(tree)


def check_changes_what_runs(parent_source: str, source: str) -> None:
    """Raise ``no_change`` when the candidate differs from the program it edits only by functions nothing calls
    (small models given helper code copy it and leave prepare and score as they were: the program ranks as
    before, and an evaluation is spent on it), or only by the order of its functions (a copy of its parent with the
    functions merged back in another order would otherwise be evaluated and archived as a new program; a copy
    up to layout, comments and docstrings is the archive's ``duplicate``). The message names the functions added,
    so a repair can call them."""
    parent, block = split_block(parent_source).block, split_block(source).block
    try:
        if _canonical_code(block, False) == _canonical_code(parent, False) \
                and normalized_code(block) != normalized_code(parent):  # (same up to comments: a duplicate, below)
            raise ReplyError("no_change", "the change only reorders functions, so the program ranks exactly as "
                                          "before")
        unused = [name for name in unreachable_functions(block) if name not in unreachable_functions(parent)]
        if unused and _canonical_code(block, True) == _canonical_code(parent, True):
            names = ", ".join(unused)
            raise ReplyError("no_change", f"the change only adds {names}, which score and prepare never call, so "
                                          f"the program ranks exactly as before: call {names} from prepare or score")
    except SyntaxError:
        return
    if essential_code(block) is not None and essential_code(block) == essential_code(parent) \
            and normalized_code(block) != normalized_code(parent):  # (same up to comments: a duplicate)
        raise ReplyError("no_change", "the change only adds or edits code that nothing uses (a value never read, a "
                                      "constant no function reads), so the program ranks exactly as before: use what "
                                      "it computes in what score returns")


def check_not_a_copy(source: str, shown: tuple[tuple[str, str], ...]) -> None:
    """Raise ``copy`` when the candidate is one of the programs its prompt showed besides the parent (``shown``:
    label, code), up to layout, comments and code nothing uses (``archive.essential_code``): it would rank exactly
    as that program, and evaluating it would tell nothing new (small models given a complete example program gave
    it back, exactly or with an unused line added)."""
    mine = essential_code(source)
    if mine is None:
        return
    for label, code in shown:
        if essential_code(code) == mine:
            raise ReplyError(COPY, f"the candidate is {label}, which the prompt showed, up to layout, comments and "
                                     "code nothing uses, so it would rank exactly as that program: write the idea "
                                     "into the program to improve instead")


def change_lines(old: str, new: str, limit: int = 30) -> str:
    """The lines of the evolve block of ``new`` that differ from ``old``'s, as ``- `` (removed) and ``+ `` (added)
    lines in order, at most ``limit`` of them ("" when the blocks are the same or a program has no block)."""
    try:
        a, b = split_block(old).block.splitlines(), split_block(new).block.splitlines()
    except ProgramError:
        return ""
    lines = [line[0] + " " + line[1:] for line in difflib.unified_diff(a, b, n=0, lineterm="")
             if line[:1] in "+-" and not line.startswith(("---", "+++")) and line[1:].strip()]
    if len(lines) > limit:
        lines = lines[:limit] + [f"(and {len(lines) - limit} more changed lines)"]
    return "\n".join(lines)


def check_prepare_reads_no_query(source: str) -> None:
    """Raise ``query_in_prepare`` when the block's ``prepare`` reads ``query`` (a name neither it nor the module
    binds) or asks for it as a parameter. ``prepare(index)`` runs once per collection, before any query, so the
    line raises whenever it runs (NameError, or TypeError for the parameter); small models, asked for a
    query-dependent idea, write it there, in fresh proposals and repairs alike, and the sandbox's NameError then
    often names another name met first (``K1``, ``MU``: no definition is borrowed for a program reading a name
    nobody defines), which misleads the repair. The message says where query-dependent work goes, and the candidate is
    not evaluated."""
    try:
        first, last = split_block(source).line_range()
        tree = parse_ast(source)
    except (ProgramError, SyntaxError):
        return  # the static check names the line
    module = set().union(*(defined_names(s) for s in tree.body))
    lines = source.split("\n")
    for f in tree.body:
        if not (isinstance(f, ast.FunctionDef) and f.name == "prepare" and first <= f.lineno <= last):
            continue
        params = [a.arg for a in (*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs)]
        reads = [n for n in ast.walk(f) if isinstance(n, ast.Name) and n.id == "query" and isinstance(n.ctx, ast.Load)]
        if "query" in params:
            where, line = "takes a parameter query", f.lineno
        elif reads and "query" not in bound_names(f) and "query" not in module:
            where, line = "reads query", min(n.lineno for n in reads)
        else:
            return
        raise ReplyError("query_in_prepare", f"prepare(index) {where} at line {line}, but prepare gets only the "
                                             "index and runs once per collection, before any query: return what "
                                             "does not depend on the query as the state, and do the rest in "
                                             "score(query, index, state)\n"
                                             + fence(lines[line - 1].strip(), 300, "that line (the candidate's code)"))


def _ensure_newline(block: str) -> str:
    return block if block.endswith("\n") else block + "\n"


def reply_prose(reply: str, limit: int) -> str:
    """What a reply says before its first code fence or SEARCH/REPLACE block (the idea, in the model's words), at
    most ``limit`` characters from its start; "" when the reply opens with code."""
    cut = min([m.start() for m in (re.search(r"```", reply), _SEARCH_OPENS.search(reply)) if m] or [len(reply)])
    prose = reply[:cut].strip()
    return prose if len(prose) <= limit else prose[:limit].rstrip() + " [...]"


def apply_reply(source: str, reply: str, mode: str, finish_reason: str | None = None) -> tuple[str, str]:
    """(candidate source, what was applied: "diff" or "full") from a reply.

    ``mode`` is what was asked for; models often answer in the other form (a whole block when a
    diff was asked, or SEARCH/REPLACE blocks for a rewrite), and either is accepted. A reply that hit the
    length limit (``finish_reason == "length"``) is ``truncated`` when what it gave is incomplete, including a
    diff cut off after some complete blocks (applying only those would not be the change the model meant).
    """
    at_marker = reply.rstrip().endswith(BLOCK_END)  # the reply's last line is the end marker (or a stop there)
    reply = _closed_at_block_end(reply)
    try:
        has_diff = bool(_DIFF.search(reply)) or "<<<<<<< SEARCH" in reply
        opened, complete = len(_SEARCH_OPENS.findall(reply)), len(_DIFF.findall(reply))
        if opened > complete and at_marker:  # stopped at the marker a SEARCH part quoted
            raise _quotes_a_marker()
        if finish_reason == "length" and opened > complete:
            raise ReplyError("truncated", f"the reply was cut off inside a SEARCH/REPLACE block ({complete} of "
                                          f"{opened} blocks complete), so none of it was applied")
        if has_diff or (mode == "diff" and not _FENCE.search(reply)):
            return apply_diff(source, reply), "diff"
        return apply_full(source, reply, finish_reason), "full"
    except ReplyError as e:
        if finish_reason == "length" and e.reason in ("no_code", "truncated", "diff_no_match"):
            raise ReplyError("truncated", f"the reply hit the max_tokens limit and was cut off ({e})") from None
        raise


_DEF_LINE = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(", re.MULTILINE)


def apply_statement_fix(source: str, first: int, last: int, reply: str, marker: str,
                        finish_reason: str | None = None, alone: bool = True) -> tuple[str, str]:
    """(candidate source, what was applied) from a reply to a statement repair of lines ``first``..``last`` of
    ``source`` (inside its EVOLVE-BLOCK). Whole functions (or SEARCH/REPLACE blocks) are applied as such
    (:func:`apply_reply`: "full" or "diff"); otherwise the reply's code, indented like the statement, replaces
    those lines ("statement"), unless ``alone`` is False (they are the header of an ``if``, ``for``, ...: its body
    would be cut off). A ``marker`` comment the reply copied is dropped."""
    if _DIFF.search(reply) or "<<<<<<<" in reply or any(_DEF_LINE.search(b) for b in _FENCE.findall(reply)):
        return apply_reply(source, _drop_marker(reply, marker), "diff", finish_reason)
    if not alone and _FENCE.search(reply):
        raise ReplyError("no_code", "the reply gave no complete function for a statement that cannot be replaced alone")
    blocks = _FENCE.findall(reply)
    if not blocks:
        if _fence_left_open(reply) or finish_reason == "length":
            raise ReplyError("truncated", "the reply opened a ``` code fence but never closed it (truncated?)")
        raise ReplyError("no_code", "the reply contained no Python code block with the corrected statement")
    fix = textwrap.dedent(_drop_marker(max(blocks, key=len), marker).strip("\n")).split("\n")
    lines = source.split("\n")
    old = lines[first - 1:last]
    if not any(f.strip() for f in fix):
        raise ReplyError("no_code", "the reply's code block was empty")
    if [f.strip() for f in fix if f.strip()] == [o.strip() for o in old if o.strip()]:
        raise ReplyError("no_change", "the corrected statement is the failing statement, unchanged")
    indent = _indent(old[0])
    fixed = lines[:first - 1] + [indent + f if f else f for f in fix] + lines[last:]
    return "\n".join(fixed), "statement"


def _drop_marker(text: str, marker: str) -> str:
    """``text`` without the ``marker`` comments (and what follows them on their line) that a reply copied."""
    return "\n".join(line.split(marker)[0].rstrip() if marker in line else line.rstrip() for line in text.split("\n"))
