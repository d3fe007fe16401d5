"""Prompt construction from template files (``evolve/llm/prompts/*.txt``), overridable per run.

A user folder given as ``prompts_dir`` may contain any of the template files; those found there
replace the shipped ones. Templates use ``$name`` placeholders (``string.Template``).

Program code is candidate text: a placeholder that quotes code (``$parent_code``, ``$other_code``, ``$block``,
``$context``, and the programs of ``$inspirations``) receives a whole Markdown code block made by
``output.code_block``, whose fence nothing in the code can close (a docstring holding ``` and a fake
"## Program 9 (fitness 0.9990)" heading stays inside it). A user template written for the earlier form, with the
placeholder between ```python fences of its own, is read as the placeholder alone. Quoted code is cut to
``QUOTE_CHARS`` characters (a failed candidate can be far larger than any program the checks accept).
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from evorank.evaluators.metrics import METRICS
from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.source import contract_text, split_block
from evorank.evaluators.program.checks import DEFAULT_MAX_SOURCE_BYTES
from evorank.evaluators.program.output import code_block, fence

from evorank.evolve.config import ConfigError, RunConfig
from evorank.threadsafe_ast import parse_ast

from .directions import Direction, allowed, parse_directions
from .failing_statement import FailingStatement, failing_line, marked_context, names_hint

SHIPPED = resources.files("evorank.evolve.llm") / "prompts"
TEMPLATES = ("system", "mutation", "diff_instructions", "full_instructions", "crossover_instructions",
             "command_instructions", "repair_instructions", "statement_repair_instructions",
             "truncated_instructions", "rewrite_repair_instructions", "directions")
# A placeholder for code that a template fences itself, as templates did before code blocks came whole.
_FENCED_PLACEHOLDER = re.compile(r"```python[ \t]*\n\$(parent_code|other_code|block|context)[ \t]*\n```")
QUOTE_CHARS = DEFAULT_MAX_SOURCE_BYTES
"""The most characters of one program a prompt quotes: the largest program the static checks accept."""
LINE_CHARS = 300
"""The most characters of one program line a prompt quotes."""


@dataclass(frozen=True)
class PromptTemplates:
    texts: dict[str, str]

    @classmethod
    def load(cls, override_dir: str | Path | None = None) -> "PromptTemplates":
        texts = {}
        for name in TEMPLATES:
            path = SHIPPED / f"{name}.txt"
            if override_dir is not None and (Path(override_dir) / f"{name}.txt").is_file():
                path = Path(override_dir) / f"{name}.txt"
            texts[name] = _FENCED_PLACEHOLDER.sub(r"$\1", path.read_text(encoding="utf-8"))
        return cls(texts)

    def render(self, name: str, /, **values) -> str:
        return string.Template(self.texts[name]).safe_substitute(**values)

    def echo_stops(self) -> tuple[str, ...]:
        """Where to end a reply that is echoing its prompt: the heading line just above the contract in the
        ``mutation`` template (``"\n# The program contract\n"``), which no answer writes as a line of its own, and
        the contract's first sentence (``"A ranking program is a self-contained Python module."``), which an echo
        that rewrites the headings (``**The program contract**``) still copies. Small models sometimes answer a
        long prompt by repeating it from the top; without a stop such a reply runs to the length limit (the
        contract alone is about 2,000 tokens) and is cut off with no code. Empty when the template does not show
        the contract."""
        lines = self.texts["mutation"].split("\n")
        at = [i for i, line in enumerate(lines) if line.strip() == "$contract"]
        if not at:
            return ()
        headings = [lines[i - 1] for i in at if i > 0 and lines[i - 1].startswith("#") and lines[i - 1].strip("# ")]
        first = prompt_contract().split("\n", 1)[0]
        sentence = re.match(r".*?\.(?=\s|$)", first)
        return (*(f"\n{h}\n" for h in headings), sentence.group(0) if sentence else first)

    def directions(self) -> dict[str, Direction]:
        """The directions a proposal may be given (``directions.txt``; :mod:`evorank.evolve.llm.directions`)."""
        return parse_directions(self.texts["directions"])


def request_digest(messages: list[dict]) -> str:
    """A digest of a request (chat messages, or a command's prompt as one message): two requests with the same
    digest ask exactly the same, and a repair never sends one its chain sent before."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def check_directions(cfg: RunConfig, source: str = "config") -> None:
    """Raise ConfigError when ``cfg.directions`` names a direction that the run's templates (``directions.txt``,
    maybe from ``cfg.prompts_dir``) do not have; the message names the unknown ones and the choices."""
    try:
        allowed(cfg.directions, PromptTemplates.load(cfg.prompts_dir).directions())
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def _fmt(x, digits=4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def metrics_table(program, seeds: dict[str, object]) -> str:
    """Per-collection metrics of ``program`` next to each seed's, as a compact text table."""
    if not program.metrics:
        return "(not evaluated)"
    header = " | ".join(["collection", *METRICS, *(f"{n} nDCG@10 / R@100" for n in seeds)])
    rows = [header, "-" * len(header)]
    for coll, m in sorted(program.metrics.items()):
        cells = [_fmt(m.get(k)) for k in METRICS]
        for seed in seeds.values():
            sm = seed.metrics.get(coll, {})
            cells.append(f"{_fmt(sm.get('ndcg@10'))} / {_fmt(sm.get('recall@100'))}")
        rows.append(f"{coll} | " + " | ".join(cells))
    return "\n".join(rows)


def quoted_code(code: str, limit: int = QUOTE_CHARS) -> str:
    """Program code as a prompt quotes it: a code block nothing inside can close, cut after ``limit`` characters."""
    if len(code) > limit:
        code = code[:limit] + f"\n# [... {len(code) - limit:,} more characters not shown]"
    return code_block(code)


def without_module_docstring(code: str) -> str:
    """A program as a prompt shows the program to improve: the whole module, less a docstring that opens it above
    the block. Evolution never changes that docstring (it is outside the block), so after a program's first change
    it describes the lineage's seed rather than the program (a crossover can leave BM25's header over query
    likelihood's code); the block's own docstrings describe what the program does. A reply that writes the module
    out again starts with it: the local 1.5B model copied a seed's header into 20 of 278 replies, 15 of which then
    ran to the length limit. Code that does not parse, or whose docstring is inside the block, is shown whole."""
    try:
        body = parse_ast(code).body
        marker_line = split_block(code).head.count("\n")  # the head ends with the block's start marker line
    except (SyntaxError, ValueError, ProgramError):  # SourceTooComplex is a SyntaxError
        return code
    if not body or not (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                        and isinstance(body[0].value.value, str)):
        return code
    lines = code.splitlines(keepends=True)
    first, last = body[0].lineno, body[0].end_lineno
    if last >= marker_line or any(line.strip() for line in lines[:first - 1]):
        return code
    return "".join(lines[last:]).lstrip("\n")


def failure_detail_text(text: str | None) -> str:
    """A failure detail as a prompt shows it. The first line is trusted text, cut to keep the prompt short; what
    follows is the program's own text, already cut and fenced by the evaluator (``output.failure_text``):
    never cut a fence open."""
    head, _, fenced = (text or "").partition("\n")
    return head[:300] + ("\n" + fenced if fenced else "")


#: Failure reasons a prompt's failures section can say something useful about: the candidate failed a static
#: check or raised (with the line it raised at). Replies that did not parse, echoes and cut-off replies are left out:
#: "avoid repeating them" says nothing a model can act on when there is nothing to show.
_ACTIONABLE = ("exception:", "forbidden:", "invalid_scores", "query_in_prepare", "missing_score")


def failures_text(failures) -> str:
    """The prompt section on recent failures, or "" when none has content a model can act on: each shown failure
    with its reason, the trusted first line of its detail, the program's own error text (fenced by the evaluator)
    and, when the sandbox named one, the line it failed at (quoted from the archived code, fenced). At most two."""
    items = []
    for f in failures:
        reason = f.failure_reason or ""
        line = failing_line(f.failure_detail)
        lines = (f.code or "").splitlines()
        at = "the line it failed at:\n" + quoted_code(lines[line - 1].strip(), LINE_CHARS) \
            if line is not None and 1 <= line <= len(lines) else ""
        if not reason.startswith(_ACTIONABLE) or (reason.startswith("exception:") and not at):
            continue
        items.append("- " + "\n".join(filter(None, [f"{reason}: {failure_detail_text(f.failure_detail)}", at])))
        if len(items) == 2:
            break
    if not items:
        return ""
    return "\n# Mistakes that made recent programs like it fail (do not repeat them)\n" + "\n".join(items) + "\n"


def inspirations_text(programs, block_of) -> str:
    """The prompt section showing other programs of the archive, or "" when there are none. The instruction that
    governs them comes before them."""
    if not programs:
        return ""
    parts = ["\n# Other programs of the archive, for ideas (do not copy them)"]
    for p in programs:
        parts.append(
            f"## Program {p.id} (fitness {_fmt(p.fitness)}, latency {_fmt(p.latency_ratio, 2)} x BM25)\n"
            + quoted_code(block_of(p.code).strip())
        )
    return "\n".join(parts) + "\n"


def direction_text(direction: Direction | None) -> str:
    """The task's first part: the idea to write into the program (\"\" for none). A direction names the evidence,
    the formula and where in a program it goes, with a helper where one is needed; its own text says, before the
    helper, that the helper is to be called, not copied (a reply that calls it without defining it gets the
    definition from trusted code: ``mend.names``, the direction's helpers are a proposal's first donors). A complete
    program shown with the direction was copied rather than adapted: the local 1.5B model gave back the example,
    exactly or with an unused line, instead of changing its parent."""
    if direction is None:
        return ""
    return f"Apply this idea to the program to improve ({direction.name}):\n{direction.text.strip()}\n\n"


#: The contract's sections on optional evidence (bold-headed paragraphs with their tables and examples): a prompt
#: documents one only when its task reads an index attribute the section documents.
OPTIONAL_SECTIONS = ("Term variants", "Token order and positions", "Fields")
_SECTION_START = re.compile(r"^(?:\*\*([^*\n]+)\.\*\*|## )", re.MULTILINE)  # a bold-headed paragraph or a heading
_INDEX_ATTRIBUTE = re.compile(r"\bindex\.(\w+)")
_TABLE_ATTRIBUTE = re.compile(r"^\| `index\.(\w+)", re.MULTILINE)


def prompt_contract(uses: str | None = None) -> str:
    """The program contract as a prompt shows it: without its closing example program, since the prompt shows the
    program to improve right after it (each program once per prompt).

    ``uses``: what the prompt's task works with (its direction, the programs it shows). Each of ``OPTIONAL_SECTIONS``
    is kept whole when ``uses`` reads an index attribute the section documents, and is otherwise named in one line
    with its attributes, so a prompt about idf does not carry a page on character n-grams and token positions;
    ``None`` keeps every section (a model free to choose its idea sees everything)."""
    text = contract_text()
    cut = text.find("\n## Example")
    text = text[:cut] if cut >= 0 else text
    if text.startswith("# "):  # its own title: the prompt's section header names it
        text = text.partition("\n")[2]
    if uses is None:
        return text.strip() + "\n"
    heads = [(0, "")] + [(m.start(), m.group(1) or "") for m in _SECTION_START.finditer(text)]
    sections = [(start, end, name) for (start, name), (end, _) in zip(heads, heads[1:] + [(len(text), "")])]
    core = "".join(text[start:end] for start, end, name in sections if name not in OPTIONAL_SECTIONS)
    general = set(_TABLE_ATTRIBUTE.findall(core))  # the core tables' attributes: no sign of an optional section
    read = set(_INDEX_ATTRIBUTE.findall(uses))
    for start, end, name in reversed(sections):  # from the end, so earlier offsets stay valid
        if name not in OPTIONAL_SECTIONS:
            continue
        own = [a for a in dict.fromkeys(_INDEX_ATTRIBUTE.findall(text[start:end])) if a not in general]
        if own and read.isdisjoint(own):
            listed = ", ".join(f"`index.{a}`" for a in own)
            text = text[:start] + f"**{name}**, documented when a task uses them: {listed}.\n\n" + text[end:]
    return text.strip() + "\n"


def build_messages(templates: PromptTemplates, kind: str, parent, seeds: dict[str, object], objective: str,
                   failures=(), inspirations=(), other=None, block_of=lambda code: code,
                   direction: Direction | None = None) -> list[dict]:
    """Chat messages for one proposal. ``kind`` is diff, full, crossover, or command (an external tool edits the
    file ``program.py`` in its working folder); ``direction`` is the way to improve the parent the prompt asks
    for (None: the model chooses)."""
    if kind == "command":
        instructions = templates.render("command_instructions", file="program.py")
    elif kind == "diff":
        instructions = templates.render("diff_instructions")
    elif kind == "full":
        instructions = templates.render("full_instructions")
    elif kind == "crossover":
        instructions = templates.render(
            "crossover_instructions", other_id=other.id, other_fitness=_fmt(other.fitness),
            other_code=quoted_code(block_of(other.code).strip()),
        )
    else:
        raise ValueError(f"unknown proposal kind {kind!r}")
    user = templates.render(
        "mutation",
        objective=objective,
        contract=prompt_contract(_task_text(kind, parent, other, inspirations, direction)),
        parent_id=parent.id,
        parent_fitness=_fmt(parent.fitness),
        parent_latency=_fmt(parent.latency_ratio, 2),
        parent_code=quoted_code(without_module_docstring(parent.code).strip()),
        metrics_table=metrics_table(parent, seeds),
        failures=failures_text(failures),
        inspirations=inspirations_text(inspirations, block_of),
        instructions=instructions,
        direction=direction_text(direction),
    )
    return [{"role": "system", "content": templates.render("system")}, {"role": "user", "content": user}]


def _task_text(kind: str, parent, other, inspirations, direction: Direction | None) -> str | None:
    """What a proposal's task works with, for ``prompt_contract``: its direction and the programs it shows; None
    (the whole contract) when the model is free to choose its idea (no direction, not a crossover)."""
    if direction is None and kind != "crossover":
        return None
    shown = [r.code for r in (parent, other, *inspirations) if r is not None]
    return "\n".join([direction.text if direction is not None else "", *shown])


#: Failures that usually come from mixing arrays of different lengths (per term, per document, per posting).
SHAPE_FAILURES = ("exception:ValueError", "exception:IndexError", "exception:AxisError")

def failing_line_text(code: str, detail: str | None) -> str:
    """The line a failure names, quoted from the failed program's archived code, or "" when the trusted first line
    of ``detail`` names none (``<collection>: score() ... raised ValueError at line 48``). The number comes from
    the sandbox; the text from trusted storage of the code the model wrote."""
    n, lines = failing_line(detail), code.splitlines()
    if n is None or not 1 <= n <= len(lines):
        return ""
    return f"It failed at line {n} of the program:\n{quoted_code(lines[n - 1].strip(), LINE_CHARS)}\n"


def array_sizes_text(reason: str | None, detail: str | None, sizes: dict[str, tuple[int, int, int]]) -> str:
    """For a shape or index error, the lengths of the arrays of the collection it happened on and how to bring
    one level to another; "" for other failures or an unknown collection."""
    if reason not in SHAPE_FAILURES:
        return ""
    collection = (detail or "").partition(": ")[0]
    if collection not in sizes:
        return ""
    n_docs, n_terms, n_postings = sizes[collection]
    return (f"On {collection}, arrays have {n_terms:,} entries per term (index.df, idf), {n_docs:,} per "
            f"document (index.doc_len) and {n_postings:,} per posting (index.term_doc.data); bring a per-term "
            "array x to the postings with np.repeat(x, np.diff(index.term_doc.indptr)) and a per-document one "
            "with x[index.term_doc.indices]; a query's terms are query.term_ids (per-term arrays: x[query.term_ids]).\n")


#: Why a change that ran (or would have) exactly as a program already there changed nothing, for a repair request.
_WHY = {
    "no_op": "A value that is the same for every document of a query (or zero everywhere), or one factor for all of "
             "them, changes no ranking, and neither does a value that score never returns: use evidence that differs "
             "between documents.",
    "copy": "A program shown to you, given back, tells nothing new: change the program to improve itself.",
    "no_change": "Code that nothing calls or reads changes nothing: what score returns must change.",
    "duplicate": "A program already evaluated, up to layout and comments, tells nothing new: what score returns must "
                 "change.",
}


def repair_message(templates: PromptTemplates, failed, block: str,
                   sizes: dict[str, tuple[int, int, int]] | None = None) -> str:
    """The follow-up user message asking to fix ``failed`` (an archived failed proposal): its failure reason (from
    the fixed vocabulary of trusted code) and detail (program text only fenced), the line it names, the array
    lengths of the collection for a shape error (``sizes``: name -> (documents, terms, postings)), and the
    EVOLVE-BLOCK to edit."""
    detail = failure_detail_text(failed.failure_detail)
    if failed.failure_reason in _WHY:
        detail += "\n" + _WHY[failed.failure_reason]
    return templates.render("repair_instructions", reason=failed.failure_reason, detail=detail,
                            where=failing_line_text(failed.code, failed.failure_detail),
                            sizes=array_sizes_text(failed.failure_reason, failed.failure_detail, sizes or {}),
                            block=quoted_code(block.strip("\n")))


def statement_repair_message(templates: PromptTemplates, failed, st: FailingStatement,
                             sizes: dict[str, tuple[int, int, int]] | None = None) -> str:
    """The request to rewrite only the statement ``st`` of ``failed`` (an archived program that raised there): the
    failure reason and detail (program text only fenced), the code around the statement with the statement
    marked, and what the error is about: array lengths for a shape error, the names that exist for a NameError."""
    if failed.failure_reason == "exception:NameError":
        hint = names_hint(st, failed.failure_detail)
    else:
        hint = array_sizes_text(failed.failure_reason, failed.failure_detail, sizes or {})
    return templates.render("statement_repair_instructions", reason=failed.failure_reason,
                            detail=failure_detail_text(failed.failure_detail), hint=hint,
                            context=quoted_code(marked_context(failed.code, st)))


#: How much of a chain's first reply a repair quotes as its idea (the start: replies.reply_prose).
IDEA_CHARS = 600

#: What a rewrite repair asks (``{base}``: the program the chain started from): after a change that ran, or would
#: have, exactly as a program already there, a change that moves documents; after any other failure, the same change
#: without the failure.
_AGAIN = "Write the idea into program {base} again, so that it ranks documents differently."
_FIX = "Make the same change again on program {base}, in a way that cannot fail like this."


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (up to the first full stop, question or exclamation mark followed by a space
    or a line end, or the first blank line), whitespace-trimmed."""
    text = text.strip()
    ends = [m.end() for m in (re.search(r"[.!?](\s|$)", text), re.search(r"\n\s*\n", text)) if m]
    return text[:min(ends)].strip() if ends else text


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def repeats_prompt(idea: str | None, prompt: str) -> bool:
    """Whether a reply's own words (``idea``) are the prompt's text given back rather than an idea: the first
    sentence, its words alone (markdown marks, punctuation and layout aside), at least six of them, is a passage of
    ``prompt``. A small model often starts its reply by echoing the prompt's first section; quoting that back to it
    as "your reply said" would be a second copy of the prompt, not its idea."""
    if not idea:
        return False
    said = _words(first_sentence(idea))
    return len(said.split()) >= 6 and said in _words(prompt)


def attempt_text(idea: str | None, direction: str | None, change: str | None) -> tuple[str, str]:
    """(the idea, the change) of an earlier attempt as a repair shows them: the direction it was given, and the
    lines its candidate changed (candidate code, in a code block nothing inside can close) or, where there are
    none (a reply cut off or without code), the first sentence of the model's own words (fenced: untrusted
    text); "" for each that is missing. The change says what was tried; the model's explanation quoted whole
    beside it is what a model continues, instead of writing code."""
    where = f"You were applying the idea above ({direction})" if direction else "You proposed a change"
    idea = first_sentence(idea) if idea and not change else None
    said = fence(idea, len(idea), f"{where}; your reply said (quoted)") if idea else where + "."
    shown = ("\nthe lines your change removed (-) and added (+):\n" + code_block(change, "diff")) if change else ""
    return said, shown


def rewrite_repair_message(templates: PromptTemplates, opening: list[dict], idea: str | None, failed, base_id: int,
                           sizes: dict[str, tuple[int, int, int]] | None = None, change: str | None = None,
                           direction: str | None = None) -> list[dict]:
    """The chat request asking for the idea of a chain again, written afresh on program ``base_id``: the chain's
    first request (``opening``: system and user message, which shows that program and the direction) with, added
    to its user message, the earlier attempt (the direction, the model's own words ``idea`` and the lines its
    candidate changed, ``change``: both fenced), why ``failed`` (this proposal's own archived failure) could not be
    used (trusted reason, program text fenced), the line it names and, for a shape error, the array lengths, and
    what to do about it: the same change without the failure, or for a change that ranked as before, a copy or
    code nothing uses, a change that moves documents."""
    said, shown = attempt_text(idea, direction, change)
    reason = failed.failure_reason or ""
    again = (_AGAIN + " " + _WHY[reason] if reason in _WHY else _FIX).format(base=base_id)
    ask = templates.render("rewrite_repair_instructions", idea=said, change=shown, reason=failed.failure_reason,
                           detail=failure_detail_text(failed.failure_detail),
                           where=failing_line_text(failed.code, failed.failure_detail),
                           sizes=array_sizes_text(failed.failure_reason, failed.failure_detail, sizes or {}),
                           base_id=base_id, task=again)
    *head, first_user = opening
    return [*head, {"role": "user", "content": first_user["content"].rstrip() + "\n\n" + ask.strip() + "\n"}]


def truncated_message(templates: PromptTemplates, opening: list[dict], idea: str | None, max_tokens: int,
                      direction: str | None = None) -> list[dict]:
    """The chat request after a reply was cut off at ``max_tokens``: the chain's first request again (``opening``,
    a conversation that does not grow by the cut reply) with the idea that reply gave (fenced) and a request for
    the same change, much shorter."""
    said, _ = attempt_text(idea, direction, None)
    ask = templates.render("truncated_instructions", idea=said, max_tokens=max_tokens)
    *head, first_user = opening
    return [*head, {"role": "user", "content": first_user["content"].rstrip() + "\n\n" + ask.strip() + "\n"}]
