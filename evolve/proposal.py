"""What the engine and every proposer share: a :class:`Proposal` on its way to the archive, what a
proposer may read (:class:`ArchiveView`), the :class:`Proposer` interface, and which failures a repair
round may try to fix (:func:`repairable`).

The engine (:mod:`evorank.evolve.engine.loop`) drives every proposer through the same steps, for each proposal:

1. ``choose_operator(rng, has_partner)``, main thread: the operator to record for the proposal. It
   draws from the proposal's own generator, so the draws are part of a run's determinism;
   :data:`CROSSOVER` asks the engine for a partner (``has_partner`` says whether there is one).
2. ``prepare(prop, view)``, main thread: read what the proposal needs from the run through an
   :class:`ArchiveView` (the archive belongs to the main thread), e.g. build a prompt.
3. ``fill(prop, rng)``, in a worker thread unless the proposer is ``instantaneous``: set
   ``prop.source``, or ``prop.failure_reason`` / ``failure_detail`` when no candidate came out, and
   the bookkeeping fields (model, tokens, cost, the raw response or a description). It must not
   touch the archive. An exception costs the proposal, not the run (the engine records it). When the
   model or tool could not be reached at all (connection, time-out, authentication, unknown model),
   ``fill`` sets ``prop.unavailable`` instead: such an attempt is not a proposal, nothing is archived,
   and enough of them in a row stop the run.
4. ``follow_up(prop, record)``, main thread, optional: after a proposal was archived as failed (or as a
   duplicate of an archived program) with a :func:`repairable` reason, a repair: a new :class:`Proposal`
   (operator :data:`REPAIR`, parent the failed record) that asks the same model or tool again, or None. The
   engine fills it like any other proposal. Proposers without ``follow_up`` are never asked.
5. ``close()`` when the engine is closed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from evorank.archive import ProgramRecord

CROSSOVER = "crossover"  # the operator for which the engine draws a partner (Proposal.other)
REPAIR = "repair"  # a follow-up request that fixes a failed proposal (its parent)
COMMAND = "command"  # a proposal written by an external command (a coding agent) editing a file
TRUSTED_EDITS_FEATURE = "trusted_edits"  # the feature saying what trusted code changed in a candidate before evaluation
REPAIR_KIND_FEATURE = "repair_kind"  # the feature saying how a repair was asked for (Proposal.repair_kind)
DIRECTION_FEATURE = "direction"  # the feature naming the direction a proposal's chain was given (Proposal.direction)
SAMPLE_RANKING_FEATURE = "sample_ranking"  # a program's ranking on the cascade's query sample (evaluators/cascade.py):
#                                           a candidate ranking as the program it started from is found before its full
#                                           evaluation
NO_OP = "no_op"  # the failure reason of a candidate that ran but ranks as the program it started from (not an elite)
COPY = "copy"  # the failure reason of a candidate that is a program its prompt showed, up to code nothing uses

# Failure reasons that a repair round cannot help with: the model or tool itself failed (llm:, command:,
# proposer:), the program tried to cheat the latency measurement, or its text is far beyond any program (too
# large or too deeply nested to read: a repair request would have to quote it).
_NOT_REPAIRABLE_PREFIXES = ("llm:", "command:", "proposer:", "latency_mismatch", "too_large:source", "too_complex",
                            "unreadable")


def repairable(reason: str | None) -> bool:
    """Whether a failed proposal with this failure reason is worth a repair round: its reply did not parse or
    apply (``no_code``, ``truncated``, ``diff_no_match``, ...), it failed the static checks (``syntax_error``,
    ``forbidden:...``), or it failed when run (``exception:KeyError``, ``invalid_scores:nan``, ``timeout``, ...)."""
    return bool(reason) and not reason.startswith(_NOT_REPAIRABLE_PREFIXES)


@dataclass
class Proposal:
    """A candidate on its way from the proposer to the archive."""

    iteration: int
    island: int
    generation: int
    operator: str
    parent: ProgramRecord  # for a repair: the failed proposal's record
    other: ProgramRecord | None = None  # the crossover partner
    source: str | None = None  # candidate program; None when no candidate could be made
    description: str = ""
    model: str | None = None  # who wrote it: a chat model, "cmd:NAME", "offline"; preset for a repair
    prompt: str | None = None
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failure_reason: str | None = None
    failure_detail: str | None = None
    messages: list[dict] | None = None  # the chat request (LLM proposals)
    finish_reason: str | None = None  # why the model stopped ("length": cut off at max_tokens)
    unavailable: str | None = None  # set by fill when the model/tool could not be reached: not a proposal
    repair_round: int = 0  # 0 for a fresh proposal, n for the n-th repair in a row
    origin: ProgramRecord | None = None  # for a repair: the evaluated program the first attempt started from
    edit_base: ProgramRecord | None = None  # what the reply edits when not the parent: for a repair that redoes a
    #                                         cut-off reply, the program that reply was editing
    statement: tuple[int, int, bool] | None = None  # for a statement repair: the lines of the edited program
    #                                         (first, last) a reply's code replaces, and whether it may replace them
    #                                         alone (not the header of an if, for, ...)
    opening: list[dict] | None = None  # the chat request that began the proposal's chain (system, first user
    #                                    message): a rewrite or shorter-reply repair asks again from there
    idea: str | None = None  # the prose of the chain's first reply (untrusted model text): what a rewrite redoes
    member: int | None = None  # which member of an ensemble writes it (EnsembleProposer)
    donors: tuple[tuple[str, str], ...] = ()  # (label, code) of the programs the prompt showed, to borrow the
    #                                           definitions of names the candidate reads but never defines from
    shown: tuple[tuple[str, str], ...] = ()  # (label, code) of the programs other than the parent the chain's prompt
    #                                          showed: a candidate that is one of them is a copy, not evaluated
    change: str | None = None  # the lines the reply's candidate changed in the program it edited (untrusted text):
    #                            what a repair shows as the change the proposal made
    sent: tuple[tuple[str, str], ...] = ()  # (how it was asked, digest) of each request sent before in its chain:
    #                                         a repair never sends one again, and asks for a shorter reply once
    repair_kind: str | None = None  # how a repair was asked for: "rewrite" (the idea again), "statement", "block",
    #                                 "shorter" (a cut-off reply asked again as a diff); recorded as a feature
    direction: str | None = None  # the direction the chain's first request gave (evolve/llm/directions.py); a
    #                               repair keeps it; recorded as a feature
    trusted_edits: str | None = None  # what trusted code changed in the model's candidate (missing names defined,
    #                                   arrays brought to the postings), recorded as a feature
    started_at: float = field(default_factory=time.time)

    @property
    def edits(self) -> ProgramRecord:
        """The program the reply's edits apply to: the parent, or ``edit_base`` when set."""
        return self.edit_base or self.parent

    @property
    def base(self) -> ProgramRecord:
        """The evaluated program this proposal descends from: the parent, or for a repair the program its first
        attempt started from (its seed head and stage-1 fitness are what the candidate is checked against)."""
        return self.origin or self.parent

    def to_record(self) -> ProgramRecord:
        """The proposal's archive record before evaluation: a proposal without code is recorded as a
        failure (fitness 0, with its failure reason) and keeps its parent's code; the response is the
        description when there was none (offline proposals)."""
        rec = ProgramRecord(
            code=self.source or self.parent.code, operator=self.operator, island=self.island,
            generation=self.generation, iteration=self.iteration,
            parent_ids=(self.parent.id,) + ((self.other.id,) if self.other else ()),
            model=self.model, prompt=self.prompt,
            response=self.response if self.response is not None else self.description,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, cost_usd=self.cost_usd,
            started_at=self.started_at,
        )
        if self.trusted_edits is not None:
            rec.features = {**rec.features, TRUSTED_EDITS_FEATURE: self.trusted_edits}
        if self.repair_kind is not None:
            rec.features = {**rec.features, REPAIR_KIND_FEATURE: self.repair_kind}
        if self.direction is not None:
            rec.features = {**rec.features, DIRECTION_FEATURE: self.direction}
        if self.source is None:
            rec.status, rec.failure_reason, rec.failure_detail = "failed", self.failure_reason, self.failure_detail
            rec.fitness = 0.0
        return rec


class ArchiveView(Protocol):
    """What a proposer may read about the run while preparing a proposal (main thread only)."""

    seed_records: dict[str, ProgramRecord]  # seed name -> its evaluated record

    def inspirations(self, prop: Proposal) -> list[ProgramRecord]:
        """Other good programs to show next to the parent."""
        ...

    def recent_failures(self, prop: Proposal) -> list[ProgramRecord]:
        """Recent failed proposals of the parent's island, its own line first."""
        ...


class Proposer(Protocol):
    """Writes candidate programs for the engine (see the module docstring for the call order).

    Optional: ``follow_up(prop, record) -> Proposal | None`` (repairs; see the module docstring)."""

    instantaneous: bool  # fill takes no time worth overlapping: fill in synchronous batches
    concurrency: int  # fills that may run at once in threads (when not instantaneous)

    def choose_operator(self, rng: np.random.Generator, has_partner: bool) -> str:
        """The proposal's operator; CROSSOVER only when ``has_partner``."""
        ...

    def prepare(self, prop: Proposal, view: ArchiveView) -> None:
        """Main thread: read from the run what ``fill`` will need (into ``prop``)."""
        ...

    def fill(self, prop: Proposal, rng: np.random.Generator) -> None:
        """Produce ``prop.source`` or a failure reason; maybe in a worker thread; no archive access."""
        ...

    def close(self) -> None:
        """Release what the proposer holds (connections, processes)."""
        ...


def repair_of(prop: Proposal, failed: ProgramRecord, **fields) -> Proposal:
    """A repair of ``prop``, which was archived as ``failed``: same island and generation, parent the failed
    record, one round further; the engine gives it its own iteration number when it is sent."""
    return Proposal(iteration=0, island=prop.island, generation=prop.generation, operator=REPAIR, parent=failed,
                    repair_round=prop.repair_round + 1, origin=prop.base, member=prop.member, donors=prop.donors,
                    shown=prop.shown, opening=prop.opening, idea=prop.idea, direction=prop.direction, **fields)
