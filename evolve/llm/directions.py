"""Directions: the one idea a chat model is asked to write into its parent in a proposal.

The system prompt names a dozen families of ideas (saturation, smoothing, proximity, fields, feedback, ...), and a
model left to choose mixes them or reaches for index attributes that do not exist (with a small local model,
Qwen2.5-Coder-1.5B, most failures named attributes the contract lacks: ``bench/RESULTS.md``). So each diff or full-rewrite proposal is
given ONE direction (``evolve/llm/prompts/directions.txt``, overridable like every template): the technique, not a
program: what evidence it uses, which formula, where in a program it goes, and a helper written against the
contract where the evidence needs more than a line of numpy (offered to be called; trusted code adds its definition
to a candidate that calls it). Shown a complete ``prepare`` and ``score`` with the direction, the small model gave
that program back (exactly, or with an unused line added) instead of changing its parent: it ran, and said nothing
about the parent. A directions file may still hold a second ```python block, a complete program
(:attr:`Direction.example`); a candidate that is that program is then refused as a copy. Which direction is drawn
from the run's seed and the proposal's iteration (reproducible on resume, independent of islands), among those the
run allows (``--directions``); it is recorded as the proposal's ``direction`` feature, and its repairs keep it.

Prompt sampling of this kind is FunSearch's and AlphaEvolve's way to keep a population diverse; here it also
decides what the model can get right.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from importlib import resources

from evorank.evolve.config import ALL_DIRECTIONS as ALL
from evorank.evolve.config import NO_DIRECTIONS as NONE

_SECTION = re.compile(r"^## (\w+)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Direction:
    name: str
    text: str  # the technique and its helper code, as shown in the prompt

    @property
    def code(self) -> str:
        """The helper code: the section's first ```python block ("" when it has none)."""
        return self._block(0)

    @property
    def example(self) -> str:
        """A complete ``prepare`` and ``score`` calling the helpers: the section's second ```python block ("" when
        it has none, as the shipped directions do)."""
        return self._block(1)

    @property
    def program_block(self) -> str:
        """The helpers and the example, as one EVOLVE-BLOCK (a donor of definitions; with an example, what a reply
        copying it would run)."""
        return f"{self.code}\n\n{self.example}" if self.example else self.code

    def _block(self, n: int) -> str:
        blocks = self.text.split("```python\n")[1:]
        return blocks[n].split("```", 1)[0] if len(blocks) > n else ""


def parse_directions(text: str) -> dict[str, Direction]:
    """The sections of a directions template (``## name`` lines start them; text before the first is a comment
    for people), in file order."""
    marks = list(_SECTION.finditer(text))
    out = {}
    for m, nxt in zip(marks, [*marks[1:], None]):
        body = text[m.end():nxt.start() if nxt else len(text)].strip("\n")
        out[m.group(1)] = Direction(m.group(1), body)
    return out


def shipped_directions() -> tuple[str, ...]:
    """The names of the directions shipped in ``evolve/llm/prompts/directions.txt``."""
    text = (resources.files("evorank.evolve.llm") / "prompts" / "directions.txt").read_text(encoding="utf-8")
    return tuple(parse_directions(text))


def allowed(spec: str, known: dict[str, Direction]) -> tuple[str, ...]:
    """The direction names a ``--directions`` value allows: ``all``, ``none`` or comma-separated names. Raises
    ValueError naming the unknown ones and the choices."""
    spec = spec.strip()
    if spec == ALL:
        return tuple(known)
    if spec == NONE:
        return ()
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown direction(s) {', '.join(unknown) or repr(spec)}; choose '{ALL}', '{NONE}' or "
                         f"some of: {', '.join(known)}")
    return names


def choose(names: tuple[str, ...], seed: int, iteration: int) -> str | None:
    """The direction of the proposal of ``iteration`` in a run with ``seed`` (None when none is allowed)."""
    if not names:
        return None
    return names[random.Random(f"{seed}:{iteration}").randrange(len(names))]  # str seeds hash the same everywhere
