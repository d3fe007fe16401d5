"""Run configuration: defaults, a TOML file, then command-line flags, resolved once and saved in the run.

Every field can be set in ``run.toml`` under the same name (see ``RunConfig``); a flag given on the
command line wins over the file. The resolved configuration is written to ``<run>/config.toml``
and into the archive, and ``--resume`` reads it back.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from evorank.evaluators.errors import EvorankError



class ConfigError(EvorankError):
    pass


#: the fitness presets (``evaluators.metrics.PRESETS``), named and described here so the command line need not
#: import numpy
FITNESS_NAMES = ("consistent", "rankevolve", "robust", "latency-aware")
FITNESS_HELP = (
    "consistent: 1 + the gain over BM25 (0.8 x R@100's + 0.2 x nDCG@10's, each loss counted twice), half the mean over "
    "collections and half the worst collection's, so a gain must hold everywhere; rankevolve: 0.8 x R@100 + 0.2 x "
    "nDCG@10 per collection, averaged (R@100 only on collections of 1,000+ documents); robust: 1 + the mean "
    "per-collection gain over BM25, losses counted twice; latency-aware: rankevolve discounted for programs slower than "
    "BM25, measured (a run with it is not reproducible)")
#: ``evorank run --batch``
BATCH_HELP = (
    "offline proposals made and evaluated together, their parents drawn from the archive before them (default: "
    "--workers when the run is created; saved with it): the same --seed and --batch give the same archive on any "
    "machine, unless measured latency steers the run")

#: How a chat model repairs a program that failed the static checks or when run (``repair_style``): ``rewrite``
#: asks for the idea again, written afresh on the program the proposal started from; ``fix`` asks for the failing
#: statement (or block) corrected. Replies that did not parse or apply, or were cut off, are asked the same way in
#: both.
REPAIR_STYLES = ("rewrite", "fix")

#: ``directions`` values besides comma-separated names (``evorank.evolve.llm.directions``): every direction of the
#: templates, or none (the model chooses from the system prompt's list).
ALL_DIRECTIONS = "all"
NO_DIRECTIONS = "none"


@dataclass
class RunConfig:
    # what to evolve and on what
    seeds: list[str] = field(default_factory=lambda: ["bm25", "ql_dirichlet"])
    suite: str | None = None  # None: "dev" when its data is here, else the built-in "demo"
    datasets: list[str] = field(default_factory=list)
    # "consistent" (gains over BM25 that hold on every collection and metric), "rankevolve", "robust" or
    # "latency-aware" (evaluators/metrics.py)
    fitness: str = "consistent"
    iterations: int = 100  # total proposals for the run (resume continues to this total)
    seed: int = 0
    # the proposer
    # "offline", or weighted members: chat models and commands, "gpt-4o-mini,gpt-4o:0.2,cmd:aider ...:0.3"
    # (see evolve/llm/ensemble.py); auto = OPENAI_* env present ? LLM : offline
    llm: str = "auto"
    base_url: str | None = None  # default: $OPENAI_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 2048
    request_timeout_s: float = 120.0
    max_retries: int = 4
    backoff_base_s: float = 1.0
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> {input, output} USD per 1M tokens
    in_flight: int = 4  # LLM proposals requested concurrently
    operator_mix: dict[str, float] = field(default_factory=lambda: {"diff": 0.6, "full": 0.25, "crossover": 0.15})
    prompts_dir: str | None = None
    inspirations: int = 3  # other programs shown in each prompt (half top, half diverse elites)
    repair_rounds: int = 1  # follow-up requests that try to fix a proposal that failed to parse, check or run
    # how a chat model is asked to repair a program that failed the static checks or when run: "rewrite" (the
    # idea again, written afresh on the program it started from) or "fix" (the failing statement or block edited)
    repair_style: str = "rewrite"
    # the way each diff or full LLM proposal is asked to improve its parent (evolve/llm/directions.py): "all" (one drawn
    # per proposal from the directions template), "none" (the model chooses), or comma-separated direction names
    directions: str = ALL_DIRECTIONS
    max_consecutive_llm_failures: int = 5  # stop (resumably) after this many attempts in a row reach no model
    preflight: bool = True  # one cheap request per chat model (and a look-up per command) before the run starts
    commands: dict[str, str] = field(default_factory=dict)  # name -> command line, used as cmd:NAME in llm
    command_timeout_s: float = 600.0  # time limit of one run of a command proposer
    # the evaluator
    workers: int = 0  # 0 = all cores
    # offline proposals made together and evaluated in parallel, their parents drawn from the archive as it was
    # before them; 0 = --workers when the run is created (then saved, so a resumed run keeps its batches)
    batch: int = 0
    eval_timeout_s: float = 60.0
    eval_memory_mb: int = 0  # 0: grows with the collection (1 GB + six float64 arrays of its postings)
    cascade: bool = True
    cascade_threshold: float = 0.9
    validation_fraction: float = 0.3  # of each collection's judged queries, held out of selection (evaluators.splits)
    best_of: int = 10  # the run's best: chosen on validation among this many best programs by train fitness
    # at the end of a run, remove each part of its best that the validation queries do not show to help
    # (evolve/engine/pruning.py); the pruned program is then the run's best. Off by default: on the dev suite it
    # lowered the best's fitness (bench/RESULTS.md)
    prune_best: bool = False
    # at the end of a run, fuse its best with the other islands' bests (CombSUM of z-scores,
    # evolve/engine/fusion.py); the fusion is then the run's best where its validation fitness is higher
    fuse_best: bool = False
    heldout: str | None = None  # suite or collections measured in the background for each new best (never steers)
    cluster: str | None = None  # Dask scheduler address (tcp://HOST:8786): evaluate there instead of local workers
    shard_queries: int = 0  # split collections into tasks of at most this many queries (0 = one task per collection)
    # the archive
    islands: int = 2
    migration_every: int = 10  # generations (proposals per island)
    migration_rate: float = 0.2
    # MAP-Elites axes (evolve/engine/descriptors.py); "latency_ratio" (measured) makes a run not reproducible
    descriptors: list[str] = field(default_factory=lambda: ["evidence", "balance", "complexity", "work"])
    latency_edges: list[float] = field(default_factory=lambda: [2.0])  # initial edges; adaptive (evolve.engine.descriptors)
    complexity_edges: list[float] = field(default_factory=lambda: [256.0])
    regrid_every: int = 25  # placements between refinements of the adaptive bins (0: never)
    grid_metric: str | None = None  # an extra MAP-Elites axis, e.g. "ndcg@10"
    # stopping
    budget_usd: float | None = None
    max_hours: float | None = None
    # where
    out: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def offline(self) -> bool:
        return self.llm == "offline"


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def from_dict(data: dict, source: str = "config") -> RunConfig:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    cfg = RunConfig()
    for k, v in data.items():
        setattr(cfg, k, v)
    validate(cfg, source)
    return cfg


def load_toml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def validate(cfg: RunConfig, source: str = "config") -> None:
    def bad(msg):
        raise ConfigError(f"{source}: {msg}")

    if not isinstance(cfg.iterations, int) or cfg.iterations < 0:
        bad(f"iterations must be a whole number >= 0, got {cfg.iterations!r}")
    if cfg.islands < 1:
        bad("islands must be >= 1")
    if not 0 <= cfg.validation_fraction < 1:
        bad(f"validation_fraction must be in [0, 1), got {cfg.validation_fraction!r}")
    if not isinstance(cfg.best_of, int) or cfg.best_of < 1:
        bad(f"best_of must be a whole number >= 1, got {cfg.best_of!r}")
    if cfg.fitness not in FITNESS_NAMES:
        bad(f"fitness must be one of {', '.join(FITNESS_NAMES)}, got {cfg.fitness!r}")
    mix = cfg.operator_mix
    if not mix or any(k not in ("diff", "full", "crossover") or v < 0 for k, v in mix.items()) or sum(mix.values()) <= 0:
        bad(f"operator_mix must weight diff/full/crossover with non-negative numbers, got {mix!r}")
    if not 0 < cfg.cascade_threshold <= 2:
        bad("cascade_threshold must be in (0, 2]")
    if cfg.in_flight < 1:
        bad("in_flight must be >= 1")
    if not cfg.seeds:
        bad("at least one seed program is needed")
    if not isinstance(cfg.batch, int) or cfg.batch < 0:
        bad(f"batch must be a whole number >= 0 (0: one proposal per worker), got {cfg.batch!r}")
    if not isinstance(cfg.shard_queries, int) or cfg.shard_queries < 0:
        bad(f"shard_queries must be a whole number >= 0, got {cfg.shard_queries!r}")
    if not isinstance(cfg.repair_rounds, int) or cfg.repair_rounds < 0:
        bad(f"repair_rounds must be a whole number >= 0 (0 turns repairs off), got {cfg.repair_rounds!r}")
    if cfg.repair_style not in REPAIR_STYLES:
        bad(f"repair_style must be one of {', '.join(REPAIR_STYLES)}, got {cfg.repair_style!r}")
    if not isinstance(cfg.directions, str):
        bad(f"directions must be a string ('all', 'none' or comma-separated names), got {cfg.directions!r}")
    if not isinstance(cfg.max_consecutive_llm_failures, int) or cfg.max_consecutive_llm_failures < 1:
        bad(f"max_consecutive_llm_failures must be a whole number >= 1, got {cfg.max_consecutive_llm_failures!r}")
    if not isinstance(cfg.command_timeout_s, (int, float)) or cfg.command_timeout_s <= 0:
        bad(f"command_timeout_s must be a positive number of seconds, got {cfg.command_timeout_s!r}")
    if not isinstance(cfg.commands, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                     for k, v in cfg.commands.items()):
        bad('commands must be a table of name = "command line", e.g. [commands] aider = "aider --yes-always ..."')


def save_toml(cfg: RunConfig, path: Path) -> None:
    import tomli_w

    path.write_text(tomli_w.dumps(cfg.to_dict()), encoding="utf-8")


def workers(cfg: RunConfig) -> int:
    return cfg.workers if cfg.workers and cfg.workers > 0 else (os.cpu_count() or 1)


def batch_size(cfg: RunConfig) -> int:
    """How many offline proposals are made (and evaluated) together: ``batch``, else one per worker."""
    return cfg.batch if cfg.batch > 0 else workers(cfg)


#: grid axes whose values are measured times, which depend on the machine's load
MEASURED_DESCRIPTORS = ("latency_ratio", "latency_ms")


def not_reproducible(cfg: RunConfig) -> list[str]:
    """Why two runs of this configuration with the same seed may differ (empty: they give the same archive).
    An offline run is reproducible unless measured latency steers it; a chat model's or a command's replies are
    never the same twice."""
    reasons = []
    if cfg.fitness == "latency-aware":
        reasons.append("the latency-aware fitness discounts measured latency, which depends on the machine's load")
    measured = [d for d in [*cfg.descriptors, cfg.grid_metric] if d in MEASURED_DESCRIPTORS]
    if measured:
        reasons.append(f"the MAP-Elites grid has a measured axis ({', '.join(measured)}), which depends on the "
                       "machine's load")
    if not cfg.offline:
        reasons.append("the proposals come from chat models or commands, whose replies differ between runs")
    return reasons
