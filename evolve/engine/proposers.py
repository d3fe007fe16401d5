"""Which proposer a run uses: the offline mutator, or the members of ``--llm`` (chat models and commands).

A proposer turns a :class:`~evorank.evolve.proposal.Proposal` (an iteration, its island, a parent and maybe a
crossover partner, all chosen by the engine) into candidate code; what the engine asks of one, and in which order,
is described in :mod:`evorank.evolve.proposal`. ``instantaneous`` proposers (the offline mutator) are filled
synchronously in batches (``config.batch_size``), which keeps runs reproducible under ``--seed``;
the others run up to ``concurrency`` fills at once in threads while the main thread evaluates finished proposals.

The proposers: :class:`OfflineProposer` (the genetic-programming mutator, :mod:`evorank.evolve.offline`),
:class:`~evorank.evolve.llm.proposer.LLMProposer` (chat models), :class:`~evorank.evolve.llm.commands.CommandProposer`
(an external program, e.g. a coding agent, edits a file) and :class:`~evorank.evolve.llm.ensemble.EnsembleProposer`
(a weighted mix of chat models and commands); :func:`make_proposer` picks from the run configuration.
"""
from __future__ import annotations

import numpy as np

from evorank.evaluators.metrics import FitnessSpec
from evorank.evolve.config import RunConfig
from evorank.evolve.llm.client import Budget, LLMClient
from evorank.evolve.llm.commands import CommandProposer
from evorank.evolve.llm.directions import allowed as allowed_directions
from evorank.evolve.llm.ensemble import EnsembleProposer, chat_settings, parse_llm_spec
from evorank.evolve.llm.prompts import PromptTemplates
from evorank.evolve.llm.proposer import LLMProposer, objective_text
from evorank.evolve.offline.crossover import crossover
from evorank.evolve.offline.mutator import mutate
from evorank.evolve.proposal import CROSSOVER, ArchiveView, Proposal, Proposer

__all__ = ["OfflineProposer", "make_proposer"]


class OfflineProposer:
    """The offline genetic-programming mutator (:mod:`evorank.evolve.offline.mutator`): no network,
    instantaneous, deterministic. Operator ``crossover`` (probability ``crossover_rate`` when there is
    a partner) recombines with the partner, ``offline`` applies point edits or, now and then, splices a whole
    evidence channel (field weight, proximity, term variants, a feedback pass; ``offline.splice``)."""

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
    """The proposer the configuration asks for: the offline mutator for ``llm = "offline"``, else the members
    of ``cfg.llm`` (chat models, API key from ``$<cfg.api_key_env>``, base URL from ``cfg.base_url`` or
    ``$OPENAI_BASE_URL``; ``cmd:`` commands), spending from ``budget`` and told the objective of ``spec``. Several
    members make an :class:`EnsembleProposer` that draws one per proposal by weight."""
    if cfg.offline:
        return OfflineProposer(cfg.operator_mix.get(CROSSOVER, 0.15))
    models, commands = parse_llm_spec(cfg.llm, cfg.commands)
    templates, objective = PromptTemplates.load(cfg.prompts_dir), objective_text(spec)
    members: list[tuple[float, Proposer]] = []
    if models:
        client = LLMClient(chat_settings(cfg, models), budget=budget)
        members.append((sum(m.weight for m in models),
                        LLMProposer(client, templates, objective, cfg.operator_mix, cfg.in_flight, cfg.repair_style,
                                    allowed_directions(cfg.directions, templates.directions()), cfg.seed)))
    for c in commands:
        members.append((c.weight, CommandProposer(c, templates, objective, cfg.command_timeout_s, cfg.in_flight)))
    if len(members) == 1:
        return members[0][1]
    return EnsembleProposer(members, cfg.seed, cfg.in_flight)
