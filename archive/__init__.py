"""evorank archive: every program of a run, and the elite population.

Modules (each short and single-purpose):
- programs  ProgramRecord; normalized_code_hash, essential_code, complexity (source-only measures)
- features  FeatureDim, GridSpec, feature resolution/binning, the cell rule `beats`
- schema    SQLite DDL, SCHEMA_VERSION, version refusal
- rows      ProgramRecord <-> programs-table row conversion (JSON cleaning, insert values)
- store     RunStore: one WAL SQLite db per run dir, one transaction per write
- queries   RunQueries (mixed into RunStore): read-only aggregate queries for inspection and the loop
- elites    Islands (MAP-Elites grids per island), ring migration, verify
- sampling  SamplingPolicy, rng_for, parent / inspiration selection

Typical loop usage::

    if fresh:
        store = RunStore.create(run_dir, config, seed, grid=spec, n_islands=4)
        islands = Islands.from_store(store)            # empty grids
    else:
        store = RunStore.open(run_dir)                 # single writer, locked
        islands = resume_islands(store)                # replay + verify, raises if inconsistent
    store.log_event("start" if fresh else "resume", {...})
    for it in range(store.iterations_done() + 1, total_iterations + 1):
        rng = rng_for(store.seed(), it)                # no RNG state across iterations
        parent = select_parent(islands, island, rng, policy)
        insp = select_inspirations(islands, island, parent, rng, policy)
        ...                                            # LLM + evaluation
        islands.add(store, ProgramRecord(..., iteration=it))   # one transaction
        if migration_due(generation, every):
            islands.migrate(store, generation, rate)   # atomic, idempotent per generation
    store.log_event("stop", {...}); store.close()

Readers (inspection while a run writes): RunStore.open(run_dir, readonly=True);
wrap multi-query reads in `with store.read_snapshot():`.

Public API (exact signatures):

programs:
    ProgramRecord(code, operator, island, generation, iteration, parent_ids=(),
        status="accepted", failure_reason=None, failure_detail=None, metrics={},
        fitness=None, latency_ms=None, latency_ratio=None, stage=0, model=None,
        prompt=None, response=None, prompt_tokens=0, completion_tokens=0,
        cost_usd=0.0, features={}, started_at=None,
        id=None, code_hash=None, created_at=None, cell=None)   # last 4 set by the store
        .is_migrant -> bool; .placeable -> bool
    OPERATORS, STATUSES, PRUNE, FUSE, NOT_IN_GRIDS   # a pruned best, a fusion: never placed in a grid
    normalized_code(code: str) -> str | None
    normalized_code_hash(code: str) -> str
    complexity(code: str) -> int
    essential_code(code: str) -> str | None   # what can change the ranking, canonical (copies compare equal)
features:
    FeatureDim(name: str, edges: tuple[float, ...], log: bool = False)
        .bin(value) -> int | None; .n_bins
    GridSpec(dimensions: tuple[FeatureDim, ...])
        .cell(features: dict) -> tuple[int, ...] | None; .names; .shape
        .to_dict() -> dict; GridSpec.from_dict(d) -> GridSpec
    default_grid_spec(metric: str | None = None, metric_edges=(...)) -> GridSpec
    feature_value(rec, name) -> float | None
    beats(challenger: float, incumbent: float) -> bool
store:
    RunStore.create(run_dir, config: dict, seed: int, versions: dict | None = None, *,
                    grid: GridSpec | None = None, n_islands: int = 1,
                    synchronous: str = "FULL") -> RunStore
    RunStore.open(run_dir, readonly: bool = False, *, synchronous: str = "FULL") -> RunStore
    .add_program(rec) -> int            .get(program_id) -> ProgramRecord
    .get_many(ids) -> dict[int, ProgramRecord]
    .programs(status=None, island=None, since_id=None) -> list[ProgramRecord]
    .count(status=None) -> int
    .has_code_hash(code_hash, island=None, status=None) -> int | None
    .iterations_done() -> int           .record_iteration(iteration) -> None
    .log_event(kind, data=None) -> None .events(kind=None) -> list[dict]
    .atomic()   # context manager: the writes inside commit as one transaction
    .config() -> dict  .seed() -> int  .versions() -> dict
    .grid_spec() -> GridSpec  .n_islands() -> int  .schema_version() -> int
    .placements(upto_id=None) -> list[(id, island, cell, fitness)]
    .elite_table() -> dict[(island, cell), id]
    .migration_done(generation) -> bool
    .record_migration(generation, moves: list[(ProgramRecord, int)]) -> list[ProgramRecord]
    .migrations() -> list[dict]        .summary() -> dict
    .integrity_check() -> str          .execute(sql, args=()) -> list[Row]   # ad hoc SQL only
    .read_snapshot()  (context manager: one consistent read transaction)
    .close(); context manager
    collect_versions() -> dict; ReadOnlyStoreError; StoreLockedError
queries (read-only, on every RunStore):
    .outcome_counts() -> list[OutcomeCount(operator, status, failure_reason, n)]
    .model_usage() -> list[ModelUsage(model, proposals, prompt_tokens, completion_tokens, cost_usd)]
    .operator_usage() -> list[OperatorUsage(operator, proposals, accepted, prompt_tokens, completion_tokens, cost_usd)]
    .creation_times() -> list[float]   .max_id() -> int   .placed_count() -> int
    .code_hash_matches(prefix) -> list[HashMatch(id, code_hash, status, operator)]
    .proposal_progress() -> (proposals, last iteration)
    .recent_failures(island, limit=20) -> list[ProgramRecord]   # newest first
    .summaries(since_id=None) -> list[ProgramSummary]   # every program without code, prompt, reply
    .seed_programs() -> list[ProgramRecord]   .children(program_id) -> list[ProgramSummary]
    .best_on_validation(top_n=10, island=None) -> ProgramRecord | None   .pruned_from(program_id) -> ProgramRecord | None
    .fusion() -> ProgramRecord | None   # the run's fusion of its island bests
schema:
    SCHEMA_VERSION; SchemaVersionError
elites:
    Islands(spec, n_islands)
    Islands.from_store(store, spec=None, n_islands=None, upto_id=None) -> Islands
    .offer(rec) -> bool   .add(store, rec) -> bool
    .migrate(store, generation: int, rate: float) -> list[int]
    .elites(island) -> list[ProgramRecord]   .all_elites()   .cells(island)
    .visits(island) -> dict   .best(island=None) -> ProgramRecord | None
    .snapshot() -> dict[int, dict[cell, id]]
    verify(store, spec=None, n_islands=None, islands=None, deep=False) -> list[str]
    resume_islands(store, spec=None, n_islands=None) -> Islands   # raises ArchiveInconsistentError
    migration_due(generation: int, every: int) -> bool
sampling:
    SamplingPolicy(exploit=0.7, explore=0.2, uniform=0.1, n_top=3, n_diverse=2,
                   tournament_size=3)
    rng_for(seed: int, iteration: int, stream: int = 0) -> np.random.Generator
    select_parent(islands, island, rng, policy=SamplingPolicy()) -> ProgramRecord
    choose_parent(islands, island, rng, policy=SamplingPolicy()) -> (ProgramRecord, mode)
    select_inspirations(islands, island, parent, rng, policy=SamplingPolicy())
        -> list[ProgramRecord]

Imports are light: stdlib + numpy only (nothing from evaluators/evolve).

Nothing here imports evolve/ or evaluators/: the archive stores what it is given.

May import: evorank.threadsafe_ast
"""

from evorank.archive.elites import (
    ArchiveInconsistentError,
    Islands,
    migration_due,
    resume_islands,
    verify,
)
from evorank.archive.features import FeatureDim, GridSpec, default_grid_spec, feature_value
from evorank.archive.programs import (
    FUSE,
    NOT_IN_GRIDS,
    OPERATORS,
    PRUNE,
    STATUSES,
    ProgramRecord,
    complexity,
    essential_code,
    normalized_code,
    normalized_code_hash,
)
from evorank.archive.sampling import (
    SamplingPolicy,
    choose_parent,
    rng_for,
    select_inspirations,
    select_parent,
)
from evorank.archive.queries import HashMatch, ModelUsage, OperatorUsage, OutcomeCount, ProgramSummary
from evorank.archive.schema import SCHEMA_VERSION, SchemaVersionError
from evorank.archive.store import ReadOnlyStoreError, RunStore, StoreLockedError, collect_versions

__all__ = [
    "ArchiveInconsistentError",
    "FUSE",
    "FeatureDim",
    "GridSpec",
    "HashMatch",
    "Islands",
    "ModelUsage",
    "NOT_IN_GRIDS",
    "OPERATORS",
    "OperatorUsage",
    "OutcomeCount",
    "PRUNE",
    "ProgramRecord",
    "ProgramSummary",
    "ReadOnlyStoreError",
    "RunStore",
    "SCHEMA_VERSION",
    "STATUSES",
    "SamplingPolicy",
    "SchemaVersionError",
    "StoreLockedError",
    "choose_parent",
    "collect_versions",
    "complexity",
    "default_grid_spec",
    "essential_code",
    "feature_value",
    "migration_due",
    "normalized_code",
    "normalized_code_hash",
    "resume_islands",
    "rng_for",
    "select_inspirations",
    "select_parent",
    "verify",
]
