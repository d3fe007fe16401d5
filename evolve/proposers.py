"""Proposers: who writes the candidate programs that the engine (:mod:`evorank.evolve.loop`) evaluates.

A proposer turns a :class:`Proposal` (an iteration, its island, a parent and maybe a crossover
partner, all chosen by the engine) into candidate code. The engine drives every proposer through
the same steps, for each proposal:

1. ``choose_operator(rng, has_partner)``, main thread: the operator to record for the proposal. It
   draws from the proposal's own generator, so the draws are part of a run's determinism;
   :data:`CROSSOVER` asks the engine for a partner (``has_partner`` says whether there is one).
2. ``prepare(prop, view)``, main thread: read what the proposal needs from the run through an
   :class:`ArchiveView` (the archive belongs to the main thread), e.g. build a prompt.
3. ``fill(prop, rng)``, in a worker thread unless the proposer is ``instantaneous``: set
   ``prop.source``, or ``prop.failure_reason`` / ``failure_detail`` when no candidate came out, and
   the bookkeeping fields (model, tokens, cost, the raw response or a description). It must not
   touch the archive. An exception costs the proposal, not the run (the engine records it).
4. ``close()`` when the engine is closed.

``instantaneous`` proposers (the offline mutator) are filled synchronously in batches of one
proposal per evaluation worker, which keeps runs deterministic under ``--seed``; the others run up
to ``concurrency`` fills at once in threads while the main thread evaluates finished proposals.

Two proposers exist: :class:`LLMProposer` (a chat model through :class:`~evorank.evolve.llm.LLMClient`)
and :class:`OfflineProposer` (the genetic-programming mutator); :func:`make_proposer` picks one
from the run configuration.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from evorank.archive import ProgramRecord
from evorank.evaluators.metrics import FitnessSpec
from evorank.evaluators.program import split_block

from .config import RunConfig
from .llm import Budget, LLMClient, LLMSettings, parse_models
from .offline_crossover import crossover
from .offline_mutator import mutate
from .operators import ReplyError, apply_reply
from .prompts import PromptTemplates, build_messages

CROSSOVER = "crossover"  # the operator for which the engine draws a partner (Proposal.other)


@dataclass
class Proposal:
    """A candidate on its way from the proposer to the archive."""

    iteration: int
    island: int
    generation: int
    operator: str
    parent: ProgramRecord
    other: ProgramRecord | None = None  # the crossover partner
    source: str | None = None  # candidate program; None when no candidate could be made
    description: str = ""
    model: str | None = None
    prompt: str | None = None
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failure_reason: str | None = None
    failure_detail: str | None = None
    messages: list[dict] | None = None  # the chat request (LLM proposals)
    started_at: float = field(default_factory=time.time)

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
    """Writes candidate programs for the engine (see the module docstring for the call order)."""

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


# -- the objective, in words ---------------------------------------------------------------------

_METRIC_LABELS = {"ndcg": "nDCG", "recall": "Recall", "map": "MAP", "mrr": "MRR", "precision": "P"}


def metric_label(name: str) -> str:
    """How a metric is written for people: ``recall@100`` -> ``Recall@100``, ``ndcg@10`` -> ``nDCG@10``."""
    base, at, cutoff = name.partition("@")
    return _METRIC_LABELS.get(base.lower(), base) + at + cutoff


def objective_text(spec: FitnessSpec) -> str:
    """The fitness ``spec`` as the sentence a proposer is given as its objective, e.g. "Maximise
    fitness = 0.8 x mean Recall@100 + 0.2 x mean nDCG@10 over the evaluation collections (...)"."""
    formula = ""
    for metric, weight in spec.weights.items():
        term = f"{abs(weight):g} x mean {metric_label(metric)}"
        if not formula:
            formula = f"-{term}" if weight < 0 else term
        else:
            formula += f" - {term}" if weight < 0 else f" + {term}"
    if spec.latency_exponent:
        latency = ("Programs slower than BM25 are penalised: fitness x (BM25 latency / latency)"
                   f"^{spec.latency_exponent:g}.")
    else:
        latency = "Also keep scoring about as fast as BM25; latency is reported."
    return (f"Maximise fitness = {formula} over the evaluation collections "
            f"(macro average; a program that fails on any collection scores 0). {latency}")


# -- the proposers -------------------------------------------------------------------------------

class LLMProposer:
    """A chat model writes each candidate: a prompt built from the archive (main thread), one chat
    completion (worker thread), and the reply applied to the parent as a SEARCH/REPLACE diff or a
    full rewrite of the block.

    Operators are drawn from ``operator_mix`` (``diff`` / ``full`` / ``crossover``); a crossover
    without a partner becomes a ``diff``. The operator recorded for ``diff`` and ``full`` is what the
    reply really was.
    """

    instantaneous = False

    def __init__(self, client: LLMClient, templates: PromptTemplates, objective: str,
                 operator_mix: dict[str, float], concurrency: int):
        self.client = client
        self.templates = templates
        self.objective = objective
        self.operator_mix = dict(operator_mix)
        self.concurrency = concurrency

    def choose_operator(self, rng: np.random.Generator, has_partner: bool) -> str:
        kinds = sorted(self.operator_mix)
        w = np.array([self.operator_mix[k] for k in kinds], dtype=float)
        operator = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        return "diff" if operator == CROSSOVER and not has_partner else operator

    def prepare(self, prop: Proposal, view: ArchiveView) -> None:
        """Build the chat messages (``prop.messages``; the user message is ``prop.prompt``)."""
        insp = view.inspirations(prop)
        prop.messages = build_messages(
            self.templates, prop.operator, prop.parent, view.seed_records, self.objective,
            failures=view.recent_failures(prop), inspirations=insp, other=prop.other,
            block_of=lambda code: split_block(code).block,
        )
        prop.prompt = prop.messages[-1]["content"]

    def fill(self, prop: Proposal, rng: np.random.Generator) -> None:
        kind = prop.operator
        completion = self.client.complete(prop.messages, rng)
        prop.model = completion.model
        prop.prompt_tokens, prop.completion_tokens = completion.prompt_tokens, completion.completion_tokens
        prop.cost_usd = completion.cost_usd
        prop.response = completion.text
        if completion.text is None:
            prop.failure_reason = f"llm:{completion.error}"
            prop.failure_detail = "; ".join(completion.retry_log)[-500:]
            return
        try:
            prop.source, applied = apply_reply(prop.parent.code, completion.text, "diff" if kind == "diff" else "full",
                                               completion.finish_reason)
        except ReplyError as e:
            prop.failure_reason, prop.failure_detail = e.reason, str(e)
            return
        if kind != CROSSOVER:
            prop.operator = applied  # record what the reply really was

    def close(self) -> None:
        pass  # the HTTP client closes with the process


class OfflineProposer:
    """The offline genetic-programming mutator (:mod:`evorank.evolve.offline_mutator`): no network,
    instantaneous, deterministic. Operator ``crossover`` (probability ``crossover_rate`` when there is
    a partner) recombines with the partner, ``offline`` applies point edits."""

    instantaneous = True
    concurrency = 1

    def __init__(self, crossover_rate: float):
        self.crossover_rate = crossover_rate

    def choose_operator(self, rng: np.random.Generator, has_partner: bool) -> str:
        return CROSSOVER if rng.random() < self.crossover_rate and has_partner else "offline"

    def prepare(self, prop: Proposal, view: ArchiveView) -> None:
        pass  # the mutator reads nothing but the parents

    def fill(self, prop: Proposal, rng: np.random.Generator) -> None:
        if prop.operator == CROSSOVER:
            m = crossover(prop.parent.code, prop.other.code, rng)
        else:
            m = mutate(prop.parent.code, rng)
        prop.source, prop.description, prop.model = m.source, m.description, "offline"

    def close(self) -> None:
        pass


def make_proposer(cfg: RunConfig, budget: Budget, spec: FitnessSpec) -> Proposer:
    """The proposer the configuration asks for: the offline mutator for ``llm = "offline"``, else the
    chat models of ``cfg.llm`` (API key from ``$<cfg.api_key_env>``, base URL from ``cfg.base_url`` or
    ``$OPENAI_BASE_URL``), spending from ``budget`` and told the objective of ``spec``."""
    if cfg.offline:
        return OfflineProposer(cfg.operator_mix.get(CROSSOVER, 0.15))
    client = LLMClient(
        LLMSettings(
            models=tuple(parse_models(cfg.llm)), base_url=cfg.base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get(cfg.api_key_env), temperature=cfg.temperature, top_p=cfg.top_p,
            max_tokens=cfg.max_tokens, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries,
            backoff_base_s=cfg.backoff_base_s, prices=cfg.prices,
        ),
        budget=budget,
    )
    return LLMProposer(client, PromptTemplates.load(cfg.prompts_dir), objective_text(spec), cfg.operator_mix,
                       cfg.in_flight)
