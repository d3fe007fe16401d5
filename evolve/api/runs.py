"""A run as a Python object: ``open_run(path)`` returns a ``Run`` whose methods answer what ``evorank status``,
``top``, ``show``, ``lineage``, ``diff`` and ``export`` print, with the same functions those commands call.

Every method opens the archive read-only (safe while the run is being written) and reads inside one read
transaction, so each answer is one consistent state of the run. To combine several answers from the same state,
read them inside ``with run.snapshot():``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from evorank.archive import ProgramRecord, ProgramSummary, RunStore
from evorank.evolve.inspection.format import program_diff, short_names
from evorank.evolve.inspection.queries import (lineage, metric_comparison, open_run as open_store, resolve_id,
                                               run_status, top_programs, validation_fitness)

if TYPE_CHECKING:  # pragma: no cover
    import pandas


def require_pandas():
    """pandas, imported on first use (it is optional: ``pip install 'evorank[notebook]'``)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("this view is a pandas DataFrame: pip install pandas (or 'evorank[notebook]')") from None
    return pandas


@dataclass(frozen=True)
class Program:
    """One program of a run: its code, where it comes from and how it did.

    ``metrics`` is {collection: {metric: value}} on the run's train queries, ``validation_metrics`` the same on its
    validation queries; ``parent`` is the first parent's id (None for a seed), ``lineage`` the ids of its first-parent
    chain back to its seed, oldest first, ending at this program; ``explanation`` is what the proposer said of it
    (a model's reply, or the offline mutator's description). Code and replies are the run's text: hostile input,
    never to be executed or shown as markup without care."""

    id: int
    code: str
    operator: str
    island: int
    generation: int
    iteration: int
    status: str
    fitness: float | None
    validation_fitness: float | None
    metrics: dict[str, dict[str, float]]
    validation_metrics: dict[str, dict[str, float]]
    latency_ratio: float | None
    parent: int | None
    parent_ids: tuple[int, ...]
    lineage: tuple[int, ...]
    seed_name: str | None
    explanation: str | None
    failure_reason: str | None
    failure_detail: str | None
    model: str | None
    code_hash: str
    features: dict[str, Any] = field(repr=False)

    @classmethod
    def from_record(cls, rec: ProgramRecord, chain: list[ProgramRecord]) -> "Program":
        seed = chain[0] if chain and chain[0].operator == "seed" else None
        val = rec.features.get("val_metrics")
        return cls(id=rec.id, code=rec.code, operator=rec.operator, island=rec.island, generation=rec.generation,
                   iteration=rec.iteration, status=rec.status, fitness=rec.fitness,
                   validation_fitness=validation_fitness(rec), metrics=rec.metrics,
                   validation_metrics=val if isinstance(val, dict) else {}, latency_ratio=rec.latency_ratio,
                   parent=rec.parent_ids[0] if rec.parent_ids else None, parent_ids=tuple(rec.parent_ids),
                   lineage=tuple(r.id for r in chain), seed_name=seed.features.get("seed_name") if seed else None,
                   explanation=rec.response, failure_reason=rec.failure_reason, failure_detail=rec.failure_detail,
                   model=rec.model, code_hash=rec.code_hash, features=rec.features)


@dataclass(frozen=True)
class Comparison:
    """Two programs of a run side by side: ``rows`` hold, per collection (None: the whole run's fitness and
    latency) and metric, ``a``'s value, ``b``'s and ``b - a``; ``diff`` is the unified diff from ``a`` to ``b``."""

    a: Program
    b: Program
    rows: list[dict]
    diff: str

    def to_dataframe(self) -> "pandas.DataFrame":
        return require_pandas().DataFrame(self.rows)


def _program_rows(summaries: list[ProgramSummary]) -> tuple[list[dict], list[str]]:
    colls = list(dict.fromkeys(c for p in summaries for c in p.metrics))
    labels = short_names(colls)
    rows = []
    for p in summaries:
        val = p.features.get("val_fitness")
        row = {"id": p.id, "island": p.island, "generation": p.generation, "iteration": p.iteration,
               "operator": p.operator, "status": p.status, "failure_reason": p.failure_reason, "fitness": p.fitness,
               "val_fitness": val if isinstance(val, (int, float)) else None, "latency_ratio": p.latency_ratio,
               "parent": p.parent_ids[0] if p.parent_ids else None, "parent_ids": p.parent_ids,
               "seed_name": p.features.get("seed_name"), "model": p.model, "prompt_tokens": p.prompt_tokens,
               "completion_tokens": p.completion_tokens, "cost_usd": p.cost_usd, "created_at": p.created_at,
               "code_hash": p.code_hash}
        for c in colls:
            for m, v in (p.metrics.get(c) or {}).items():
                row[f"{labels[c]}:{m}"] = v
        rows.append(row)
    return rows, [labels[c] for c in colls]


class Run:
    """A run folder, read-only. ``open_run(path)`` makes one; see the module docstring for consistency."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        open_store(self.path).close()  # InspectError now for a folder that holds no run
        self._store: RunStore | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @contextmanager
    def snapshot(self) -> Iterator["Run"]:
        """Inside the block every method of this run reads the same state of the archive (one read transaction),
        however much the run writes meanwhile."""
        if self._store is not None:
            yield self
            return
        with open_store(self.path) as store:
            with store.read_snapshot():
                self._store = store
                try:
                    yield self
                finally:
                    self._store = None

    @contextmanager
    def _reading(self) -> Iterator[RunStore]:
        with self.snapshot():
            yield self._store

    def status(self) -> dict:
        """What ``evorank status --json`` prints: state, progress, outcomes and failure reasons, seeds, the best
        per island and overall (with its validation fitness), held-out measurements, tokens and cost."""
        with self._reading() as store:
            return run_status(store)

    def program_summaries(self) -> list[ProgramSummary]:
        """Every program without its code and texts, in id order (what ``programs`` is made of; no pandas)."""
        with self._reading() as store:
            return store.summaries()

    @property
    def programs(self) -> "pandas.DataFrame":
        """Every program as one row (index: id): island, iteration, operator, status, failure reason, fitness,
        validation fitness, latency ratio, parent, seed, model, tokens, cost, and a ``COLLECTION:METRIC`` column per
        collection and metric (short collection names, as ``evorank top`` shows them). Needs pandas."""
        pandas = require_pandas()
        rows, _ = _program_rows(self.program_summaries())
        frame = pandas.DataFrame(rows)
        return frame.set_index("id") if len(frame) else frame

    def program(self, ident: int | str = "best") -> Program:
        """One program: an id, ``best``, ``best@island:K``, a code-hash prefix or ``seed:NAME``."""
        with self._reading() as store:
            rec = resolve_id(store, ident)
            return Program.from_record(rec, lineage(store, rec))

    @property
    def best(self) -> Program | None:
        """The run's best program (chosen on the validation queries among the best by train fitness, as
        ``best.py``), or None before any program was accepted."""
        with self._reading() as store:
            rec = store.best_on_validation(int(store.config().get("best_of", 10)))
            return Program.from_record(rec, lineage(store, rec)) if rec else None

    def top(self, n: int = 10, by: str = "fitness", island: int | None = None) -> list[Program]:
        """The best accepted programs by ``by`` (fitness, latency, or a metric such as ndcg@10), as ``evorank top``."""
        with self._reading() as store:
            return [Program.from_record(r, lineage(store, r)) for r in top_programs(store, n, by, island)]

    def lineage(self, ident: int | str = "best") -> list[Program]:
        """The program's first-parent chain back to its seed, oldest first (``evorank lineage``)."""
        with self._reading() as store:
            chain = lineage(store, resolve_id(store, ident))
            return [Program.from_record(r, chain[: k + 1]) for k, r in enumerate(chain)]

    def compare(self, a: int | str, b: int | str) -> Comparison:
        """Two programs side by side: fitness, latency and every metric per collection, and the diff of their code."""
        with self._reading() as store:
            ra, rb = resolve_id(store, a), resolve_id(store, b)
            pa, pb = Program.from_record(ra, lineage(store, ra)), Program.from_record(rb, lineage(store, rb))
        rows = [{"collection": r["collection"], "metric": r["metric"], "a": r["parent"], "b": r["value"],
                 "delta": (r["value"] - r["parent"]) if r["value"] is not None and r["parent"] is not None else None}
                for r in metric_comparison(rb, ra, None)]
        return Comparison(pa, pb, rows, program_diff(ra, rb))

    def diff(self, ident: int | str, other: int | str | None = None, context: int = 3) -> str:
        """Unified diff from the program's parent (or ``other``) to the program (``evorank diff``)."""
        with self._reading() as store:
            rec = resolve_id(store, ident)
            base = resolve_id(store, other) if other is not None else (
                store.get(rec.parent_ids[0]) if rec.parent_ids else rec)
            return program_diff(base, rec, context)

    def export(self, ident: int | str = "best", path: str | Path | None = None, *, unverified: bool = False) -> Path:
        """Write the program as a standalone scorer module (``evorank export``); returns the file written. A program
        outside the exportable subset (docs/sandbox.md) raises ``ExportRefused`` (an ``EvorankError`` listing each
        line and why) unless ``unverified``, which writes it under a banner saying so."""
        from evorank.evolve.inspection.export import export_program

        written, _, _ = export_program(self.path, str(ident), path, unverified=unverified)
        return written


def open_run(path: str | Path) -> Run:
    """The run in folder ``path`` (what ``evorank run --out`` created), read-only; safe while it is being written."""
    return Run(path)
