"""Read-only questions about a run's programs, answered in SQL: the queries behind the inspection
commands (``evorank status``, ``show``, ``report``) and the loop's progress and prompt context.

``RunQueries`` is mixed into ``RunStore``, which supplies the connection (``self._conn``) and
``iterations_done()``; every method here only reads, so each works on a store opened with
``readonly=True`` as well as on the writer. Wrap several calls in ``store.read_snapshot()`` to
see one consistent state of a live run.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from evorank.archive.features import decode_cell
from evorank.archive.programs import FUSE, NOT_IN_GRIDS, PRUNE, ProgramRecord
from evorank.archive.rows import record_from_row

# Programs that count as proposals: everything the loop proposed (iteration > 0), not the
# migration copies the store writes itself.
PROPOSALS_WHERE = "iteration > 0 AND operator != 'migration'"


@dataclass(frozen=True)
class OutcomeCount:
    """How many programs share one (operator, status, failure reason)."""

    operator: str
    status: str
    failure_reason: str | None
    n: int


@dataclass(frozen=True)
class ModelUsage:
    """Proposals, tokens and cost of one model (None: proposals made without an LLM)."""

    model: str | None
    proposals: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class OperatorUsage:
    """Proposals, accepted programs, tokens and cost of one operator (diff, full, repair, command, ...)."""

    operator: str
    proposals: int
    accepted: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class HashMatch:
    """A program whose normalized code hash starts with a given prefix."""

    id: int
    code_hash: str
    status: str
    operator: str


# Every column of the programs table but the large texts (code, failure detail, prompt, reply): what a view of
# many programs needs.
SUMMARY_COLUMNS = ("id", "code_hash", "parent_ids", "island", "generation", "iteration", "operator", "status",
                   "failure_reason", "metrics", "fitness", "latency_ms", "latency_ratio", "features", "cell", "stage",
                   "model", "prompt_tokens", "completion_tokens", "cost_usd", "created_at")


@dataclass(frozen=True)
class ProgramSummary:
    """One program without its texts (code, failure detail, prompt, reply): what tables and plots of a whole
    run read, at a fraction of the cost of full records."""

    id: int
    code_hash: str
    parent_ids: tuple[int, ...]
    island: int
    generation: int
    iteration: int
    operator: str
    status: str
    failure_reason: str | None
    fitness: float | None
    latency_ms: float | None
    latency_ratio: float | None
    stage: int
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    created_at: float
    cell: tuple | None = None
    metrics: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)


def _summary_from_row(row) -> ProgramSummary:
    values = {k: row[k] for k in SUMMARY_COLUMNS}
    values["parent_ids"] = tuple(json.loads(values["parent_ids"]))
    values["metrics"] = json.loads(values["metrics"])
    values["features"] = json.loads(values["features"])
    values["cell"] = decode_cell(values["cell"])
    return ProgramSummary(**values)


class RunQueries:
    """Read-only queries over the programs table (a mixin of ``RunStore``)."""

    _conn: sqlite3.Connection

    def count(self, status: str | None = None) -> int:
        """Number of programs, optionally only those with this status."""
        if status is None:
            return self._conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0]
        return self._conn.execute(
            "SELECT COUNT(*) FROM programs WHERE status = ?", (status,)
        ).fetchone()[0]

    def summary(self) -> dict:
        """Counts by status and total tokens / cost, for inspection."""
        by_status = dict(
            self._conn.execute("SELECT status, COUNT(*) FROM programs GROUP BY status").fetchall()
        )
        p, c, cost = self._conn.execute(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0) FROM programs"
        ).fetchone()
        return {
            "programs": sum(by_status.values()),
            "by_status": by_status,
            "prompt_tokens": p,
            "completion_tokens": c,
            "cost_usd": cost,
            "iterations_done": self.iterations_done(),
        }

    def outcome_counts(self) -> list[OutcomeCount]:
        """Program counts grouped by operator, status and failure reason (seeds and migration
        copies included: the operator tells them apart), in that sort order."""
        found = self._conn.execute(
            "SELECT operator, status, failure_reason, COUNT(*) FROM programs "
            "GROUP BY operator, status, failure_reason ORDER BY operator, status, failure_reason"
        ).fetchall()
        return [OutcomeCount(r[0], r[1], r[2], r[3]) for r in found]

    def model_usage(self) -> list[ModelUsage]:
        """Per-model proposals, prompt/completion tokens and cost (migration copies and seeds
        left out), the most used model first."""
        found = self._conn.execute(
            "SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            f"COALESCE(SUM(cost_usd), 0.0) FROM programs WHERE {PROPOSALS_WHERE} "
            "GROUP BY model ORDER BY COUNT(*) DESC, model"
        ).fetchall()
        return [ModelUsage(r[0], r[1], r[2], r[3], float(r[4])) for r in found]

    def operator_usage(self) -> list[OperatorUsage]:
        """Per-operator proposals, accepted programs, prompt/completion tokens and cost (migration copies and
        seeds left out), the most used operator first."""
        found = self._conn.execute(
            "SELECT operator, COUNT(*), COALESCE(SUM(status = 'accepted'), 0), COALESCE(SUM(prompt_tokens), 0), "
            f"COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_usd), 0.0) FROM programs WHERE {PROPOSALS_WHERE} "
            "GROUP BY operator ORDER BY COUNT(*) DESC, operator"
        ).fetchall()
        return [OperatorUsage(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in found]

    def feature_sums(self, names: list[str]) -> dict[str, float]:
        """The sum over all programs of each named numeric feature (programs without it count 0), summed in SQL
        instead of loading every program."""
        cols = ", ".join("COALESCE(SUM(json_extract(features, ?)), 0)" for _ in names)
        row = self._conn.execute(f"SELECT {cols} FROM programs", [f'$."{n}"' for n in names]).fetchone()
        return dict(zip(names, row))

    def creation_times(self) -> list[float]:
        """When each program was archived (unix time), oldest first."""
        return [r[0] for r in self._conn.execute("SELECT created_at FROM programs ORDER BY created_at")]

    def max_id(self) -> int:
        """The highest program id (ids run from 1), 0 for a run without programs."""
        return self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM programs").fetchone()[0]

    def placed_count(self) -> int:
        """How many programs have a grid cell (accepted, with every grid feature; migration copies included)."""
        return self._conn.execute("SELECT COUNT(*) FROM programs WHERE cell IS NOT NULL").fetchone()[0]

    def code_hash_matches(self, prefix: str) -> list[HashMatch]:
        """Programs whose normalized code hash starts with ``prefix`` (hex, any case), in id
        order; several rows can share one hash (seeds on every island, migration copies,
        duplicates)."""
        prefix = prefix.lower()
        found = self._conn.execute(
            "SELECT id, code_hash, status, operator FROM programs WHERE substr(code_hash, 1, ?) = ? ORDER BY id",
            (len(prefix), prefix),
        ).fetchall()
        return [HashMatch(r[0], r[1], r[2], r[3]) for r in found]

    def proposal_progress(self) -> tuple[int, int]:
        """(proposals archived, highest iteration among them): programs with iteration > 0 that
        are not migration copies; (0, 0) before the first proposal."""
        n, last = self._conn.execute(
            f"SELECT COUNT(*), COALESCE(MAX(iteration), 0) FROM programs WHERE {PROPOSALS_WHERE}"
        ).fetchone()
        return int(n), int(last)

    def summaries(self, since_id: int | None = None) -> list[ProgramSummary]:
        """Every program (only those with an id above ``since_id``, if given: for following a live run) without
        its texts, in id order."""
        sql = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM programs"
        args: tuple = ()
        if since_id is not None:
            sql, args = sql + " WHERE id > ?", (since_id,)
        return [_summary_from_row(r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    def seed_programs(self) -> list[ProgramRecord]:
        """The seed programs (every island's copy), in id order."""
        found = self._conn.execute("SELECT * FROM programs WHERE operator = 'seed' ORDER BY id").fetchall()
        return [record_from_row(r) for r in found]

    def children(self, program_id: int) -> list[ProgramSummary]:
        """The programs that name ``program_id`` among their parents (migration copies included), in id order."""
        found = self._conn.execute(
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM programs WHERE id > ? AND EXISTS "
            "(SELECT 1 FROM json_each(programs.parent_ids) WHERE json_each.value = ?) ORDER BY id",
            (program_id, program_id),
        ).fetchall()
        return [_summary_from_row(r) for r in found]

    def recent_failures(self, island: int, limit: int = 20) -> list[ProgramRecord]:
        """Up to ``limit`` programs with status 'failed' on ``island``, newest (highest id) first."""
        found = self._conn.execute(
            "SELECT * FROM programs WHERE status = 'failed' AND island = ? ORDER BY id DESC LIMIT ?",
            (island, limit),
        ).fetchall()
        return [record_from_row(r) for r in found]

    def best_on_validation(self, top_n: int = 10, island: int | None = None,
                           migrants: bool = True) -> ProgramRecord | None:
        """The run's best program: among the ``top_n`` accepted programs with the highest (train) fitness, the one
        with the highest validation fitness (``features['val_fitness']``; ties, or runs without a validation
        split, go to the higher train fitness, then the older program). Over the whole run migration copies are
        left out (their originals compete); on one ``island`` they count, as its programs, unless ``migrants`` is
        false (the island's own best, e.g. to fuse with another island's). Over the whole run, the
        fusion of the island bests (``fusion``) where its validation fitness is higher than that program's; else,
        where that program was pruned at the end of the run (``pruned_from``), the pruned program. None when
        nothing is accepted yet."""
        sql = ("SELECT * FROM programs WHERE status = 'accepted' AND fitness IS NOT NULL AND operator NOT IN "
               f"({', '.join('?' * len(NOT_IN_GRIDS))})"
               + (" AND island = ?" if island is not None else "")
               + (" AND operator != 'migration'" if island is None or not migrants else "")
               + " ORDER BY fitness DESC, id LIMIT ?")
        args = (*NOT_IN_GRIDS, island, top_n) if island is not None else (*NOT_IN_GRIDS, top_n)
        top = [record_from_row(r) for r in self._conn.execute(sql, args).fetchall()]
        if not top:
            return None

        def key(rec: ProgramRecord):
            val = rec.features.get("val_fitness")
            return (val if isinstance(val, (int, float)) else float("-inf"), rec.fitness, -rec.id)

        chosen = max(top, key=key)
        fused = self.fusion() if island is None else None
        if fused is not None and key(fused)[:2] > key(chosen)[:2]:
            return fused
        return self.pruned_from(chosen.id) or chosen

    def fusion(self) -> ProgramRecord | None:
        """The run's fusion of its island bests (operator ``fusion``, accepted; the newest), None if there is none."""
        row = self._conn.execute("SELECT * FROM programs WHERE operator = ? AND status = 'accepted' AND fitness IS NOT "
                                 "NULL ORDER BY id DESC LIMIT 1", (FUSE,)).fetchone()
        return record_from_row(row) if row is not None else None

    def pruned_from(self, program_id: int) -> ProgramRecord | None:
        """The program pruned from ``program_id`` at the end of a run (operator ``prune``), None if there is none."""
        for row in self._conn.execute("SELECT * FROM programs WHERE operator = ? AND status = 'accepted' ORDER BY id",
                                      (PRUNE,)).fetchall():
            rec = record_from_row(row)
            if rec.parent_ids == (program_id,):
                return rec
        return None
