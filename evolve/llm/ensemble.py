"""The members of ``--llm``: chat models and command proposers, weighted, and the proposer that mixes them.

``--llm`` (``RunConfig.llm``) is a comma-separated list of members, each with an optional weight after its
last colon (default 1):

* ``MODEL[:WEIGHT]``: a chat model of the OpenAI-compatible endpoint (``gpt-4o-mini``, ``gpt-4o:0.2``; Ollama
  tags such as ``qwen2.5-coder:1.5b`` stay names because ``1.5b`` is no number);
* ``cmd:COMMAND[:WEIGHT]``: an external command (:mod:`evorank.evolve.llm.commands`), e.g.
  ``cmd:aider --yes-always --no-git --message-file {prompt_file} {file}:0.3``. A command line cannot contain a
  comma here; define such commands by name in the config file (``[commands]`` table, ``name = "command line"``)
  and refer to them as ``cmd:NAME``.

A member is drawn per proposal with probability weight / total weight: chat models as a group first (the
client then picks among them by their weights), so a chat model's share is its own weight over the total.
"""
from __future__ import annotations

import os

import numpy as np

from evorank.archive import rng_for

from .commands import CommandSpec, program_of
from evorank.evolve.config import ConfigError, RunConfig
from .client import LLMSettings, ModelSpec, parse_models
from evorank.evolve.proposal import ArchiveView, Proposal, Proposer

MEMBER_STREAM = 3  # rng_for stream of the member draw (the engine uses streams 0-2)


def _weighted(text: str) -> tuple[str, float]:
    """(member, weight) from ``member[:weight]``: a weight is a plain number after the last colon."""
    name, sep, weight = text.rpartition(":")
    if sep and name.strip():
        try:
            return name.strip(), float(weight)
        except ValueError:
            pass
    return text.strip(), 1.0


def parse_llm_spec(text: str, named: dict[str, str] | None = None) -> tuple[list[ModelSpec], list[CommandSpec]]:
    """The chat models and commands of an ``--llm`` value; ``named`` maps command names (config ``commands``) to
    command lines. Raises ConfigError with the fix when the value names nothing usable."""
    named = named or {}
    models: list[ModelSpec] = []
    commands: list[CommandSpec] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("cmd:"):
            body, weight = _weighted(item[4:])
            if not body:
                raise ConfigError(f"--llm: '{item}' has no command; write cmd:COMMAND, e.g. "
                                  "'cmd:aider --yes-always --no-git --message-file {prompt_file} {file}'")
            if body in named:
                name, line = body, named[body]
            else:
                name, line = os.path.basename(program_of(body) or "command"), body
            taken = {c.name for c in commands}
            base, n = name, 2
            while name in taken:
                name, n = f"{base}#{n}", n + 1
            commands.append(CommandSpec(name, line, weight))
        else:
            models.extend(parse_models(item))
    if not models and not commands:
        raise ConfigError("--llm names no model and no command; give MODEL[:WEIGHT] and/or cmd:COMMAND[:WEIGHT] "
                          "items separated by commas, or 'offline'")
    bad = [f"{m.name}:{m.weight:g}" for m in models if m.weight <= 0] + \
          [f"{c.label}:{c.weight:g}" for c in commands if c.weight <= 0]
    if bad:
        raise ConfigError(f"--llm: weights must be positive numbers, got {', '.join(bad)}")
    return models, commands


def chat_settings(cfg: RunConfig, models: list[ModelSpec]) -> LLMSettings:
    """The chat client's settings for ``models``: API key from ``$<cfg.api_key_env>``, base URL from
    ``cfg.base_url`` or ``$OPENAI_BASE_URL``."""
    return LLMSettings(
        models=tuple(models), base_url=cfg.base_url or os.environ.get("OPENAI_BASE_URL"),
        api_key=os.environ.get(cfg.api_key_env), api_key_env=cfg.api_key_env, temperature=cfg.temperature,
        top_p=cfg.top_p, max_tokens=cfg.max_tokens, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries,
        backoff_base_s=cfg.backoff_base_s, prices=cfg.prices,
    )


class EnsembleProposer:
    """Several proposers by weight: each proposal's member is drawn in ``prepare`` from its own stream
    (``rng_for(seed, iteration, 3)``), so no other draw of the run moves; the operator is chosen by the first
    member (the chat models, when there are any), and a command member records ``command`` instead. A repair
    goes to the member that wrote the failed proposal."""

    instantaneous = False

    def __init__(self, members: list[tuple[float, Proposer]], seed: int, concurrency: int):
        if not members or any(w <= 0 for w, _ in members):
            raise ValueError("an ensemble needs members with positive weights")
        self.members = [m for _, m in members]
        weights = np.array([w for w, _ in members], dtype=float)
        self.p = weights / weights.sum()
        self.seed = seed
        self.concurrency = concurrency

    def choose_operator(self, rng: np.random.Generator, has_partner: bool) -> str:
        return self.members[0].choose_operator(rng, has_partner)

    def prepare(self, prop: Proposal, view: ArchiveView) -> None:
        rng = rng_for(self.seed, prop.iteration, MEMBER_STREAM)
        prop.member = int(rng.choice(len(self.members), p=self.p))
        self.members[prop.member].prepare(prop, view)

    def fill(self, prop: Proposal, rng: np.random.Generator) -> None:
        self.members[prop.member].fill(prop, rng)

    def set_collection_sizes(self, sizes: dict[str, tuple[int, int, int]]) -> None:
        for member in self.members:
            setter = getattr(member, "set_collection_sizes", None)
            if setter is not None:
                setter(sizes)

    def follow_up(self, prop: Proposal, failed) -> Proposal | None:
        follow_up = getattr(self.members[prop.member], "follow_up", None)
        return follow_up(prop, failed) if follow_up is not None else None

    def close(self) -> None:
        for m in self.members:
            m.close()
