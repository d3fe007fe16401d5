"""A docstring that describes an evolved program, for the files people take away (``best.py``, ``export``).

Evolution may only change the EVOLVE-BLOCK, so an evolved program keeps its seed's module docstring
("BM25 as Lucene scores it (k1=0.9, b=0.4)") however far its formula has moved. The archive keeps it
that way (the head must stay byte-identical to the seed's); the files written for users get a docstring
of their own instead: what the program is, where it comes from, the evidence it reads, and its lineage
step by step with each step's own explanation. An explanation written by an LLM is the model's text:
it is cut to one line and labelled as such.
"""
from __future__ import annotations

import ast
import re

from evorank.threadsafe_ast import parse_ast

from .evidence import evidence_kinds

_PLAIN = re.compile(r"[^\w .,;:()\[\]+\-*/=<>%'^!?&|@#~]")


def _one_line(text: str | None, limit: int = 110) -> str:
    """The first line of prose in ``text`` (no code fence, no SEARCH/REPLACE marker), made harmless in a
    docstring and cut to ``limit`` characters."""
    for line in (text or "").splitlines():
        line = line.strip().strip("#").strip()
        if not line or line.startswith(("```", "<<<<<<<", "=======", ">>>>>>>", "def ", "import ", "return ")):
            continue
        line = _PLAIN.sub(" ", line.replace('"""', "'''").replace("\\", "/"))
        return line[:limit] + ("..." if len(line) > limit else "")
    return ""


def program_docstring(rec, chain, seed_name: str | None, run_name: str) -> str:
    """The text of the docstring: ``chain`` is the program's lineage, oldest (its seed) first."""
    fit = f"{rec.fitness:.4f}" if rec.fitness is not None else "-"
    val = rec.features.get("val_fitness")
    val_text = f", validation {val:.4f}" if isinstance(val, (int, float)) else ""
    kinds = sorted(evidence_kinds(rec.code))
    lines = [f"Ranking program #{rec.id} evolved by evorank in run {run_name} from the {seed_name or '?'} seed "
             f"(fitness {fit}{val_text}).", "",
             "Evidence it reads besides term statistics: " + (", ".join(kinds) if kinds else "none") + ".", ""]
    if chain and chain[0].operator == "seed":
        seed_doc = ast.get_docstring(parse_ast(chain[0].code)) or ""
        lines += [f"Its seed: {_one_line(seed_doc)}", ""]
    steps = [r for r in chain if r.operator != "seed"]
    if steps:
        lines.append(f"Lineage ({len(steps)} step(s) from the seed, oldest first; model explanations are the model's "
                     "own words):")
        prev = chain[0]
        for r in steps:
            delta = (f" {r.fitness - prev.fitness:+.4f}" if r.fitness is not None and prev.fitness is not None else "")
            who = f"{r.operator}" + (f" by {r.model}" if r.model and r.model != "offline" else "")
            lines.append(f"  #{r.id} {who}{delta}: {_one_line(r.response) or '-'}")
            prev = r
    return "\n".join(lines)


def with_docstring(code: str, text: str) -> str:
    """``code`` with its module docstring replaced by ``text`` (added when it has none)."""
    text = text.replace('"""', "'''").replace("\\", "/")
    doc = f'"""{text}\n"""\n'
    try:
        tree = parse_ast(code)
    except SyntaxError:  # code that does not parse (or is too large to): the docstring goes on top
        return doc + code
    first = tree.body[0] if tree.body else None
    lines = code.splitlines(keepends=True)
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        return "".join(lines[:first.lineno - 1]) + doc + "".join(lines[first.end_lineno:])
    return doc + code
