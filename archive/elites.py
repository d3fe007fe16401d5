"""MAP-Elites grids on islands, ring migration, and the consistency check.

State model: the programs table is the source of truth. Every placed
program row carries its island and cell; replaying placed rows in id order
through the cell rule (`features.beats`: strictly fitter wins, ties keep the
incumbent) yields the grids. Migrant copies are ordinary rows on the target
island, so replay needs nothing else; the `migrations` table records the
round for audit and for `verify`. `Islands` is the in-memory mirror the
loop samples from; `verify` re-derives the grids from the table and
compares them with the elite table written at insert time (and with an
in-memory `Islands`, if given).

Migration policy (ring, island i -> i+1 mod N): per round, each island
sends its k best native elites (k = max(1, round(rate * #native elites)),
best first, ties to the older program); migrant copies are never sent
again, so a program travels one hop per round at most and cannot flood the
ring. A candidate whose normalized code already lives (as an accepted
program) on the target island is skipped, not replaced by the next one:
"top k, minus what the neighbour already has" keeps rounds small and
predictable. A round is recorded atomically and at most once per
generation, so calling `migrate` again after a crash is a no-op.
"""

from __future__ import annotations

import json
from collections import Counter

from evorank.archive.features import Cell, GridSpec, beats, complete_features, refine
from evorank.archive.programs import ProgramRecord, normalized_code_hash, placeable


class ArchiveInconsistentError(RuntimeError):
    """verify() found discrepancies; `.problems` lists them."""

    def __init__(self, problems: list[str]):
        super().__init__("archive is inconsistent:\n  " + "\n  ".join(problems))
        self.problems = problems


def rank_key(rec: ProgramRecord):
    """Sort key, best first: higher fitness, then older id (a stored
    program beats an unstored one), then cell for a total order."""
    big = float("inf")
    return (-rec.fitness, rec.id if rec.id is not None else big, rec.cell or ())


def replay(placements) -> tuple[dict[tuple[int, Cell], int], Counter]:
    """Grid ownership from (id, island, cell, fitness) rows in id order:
    ({(island, cell): id}, visits Counter over (island, cell))."""
    owner: dict[tuple[int, Cell], tuple[int, float]] = {}
    visits: Counter = Counter()
    for pid, island, cell, fitness in placements:
        key = (island, cell)
        visits[key] += 1
        inc = owner.get(key)
        if inc is None or beats(fitness, inc[1]):
            owner[key] = (pid, fitness)
    return {k: v[0] for k, v in owner.items()}, visits


def migration_due(generation: int, every: int) -> bool:
    """Ring migration happens at generations every, 2*every, ...; every <= 0
    disables it."""
    return every > 0 and generation > 0 and generation % every == 0


class Islands:
    """In-memory grids of all islands (mirror of the store).

    Use `from_store` to build (or rebuild on resume) and `add` to record a
    new program in the store and the grid together. `offer` alone is for
    store-less use (tests, what-if analysis).
    """

    def __init__(self, spec: GridSpec, n_islands: int):
        if n_islands < 1:
            raise ValueError("need at least one island")
        self.spec = spec
        self.n_islands = n_islands
        self._grids: list[dict[Cell, ProgramRecord]] = [{} for _ in range(n_islands)]
        self._visits: list[Counter] = [Counter() for _ in range(n_islands)]

    @classmethod
    def from_store(
        cls, store, spec: GridSpec | None = None, n_islands: int | None = None, upto_id: int | None = None
    ) -> "Islands":
        """Derive the grids by replaying the store's placed programs in id
        order (only those with id <= upto_id, if given: the grid as it was
        then). `spec`/`n_islands` default to the run's; passing different
        ones raises ValueError (cells were recorded under the run's spec)."""
        spec, n_islands, _ = _run_shape(store, spec, n_islands, strict=True)
        islands = cls(spec, n_islands)
        with store.read_snapshot():
            owner, visits = replay(store.placements(upto_id))
            recs = store.get_many(owner.values())
        for (island, cell), pid in owner.items():
            islands._grids[island][cell] = recs[pid]
        for (island, cell), n in visits.items():
            islands._visits[island][cell] = n
        return islands

    # ------------------------------------------------------------ updates

    def offer(self, rec: ProgramRecord) -> bool:
        """Place `rec` on its island; True if it became its cell's elite.
        Only accepted programs with a finite fitness and a full set of grid
        features are placed; others return False."""
        if not 0 <= rec.island < self.n_islands:
            raise ValueError(f"island {rec.island} out of range for {self.n_islands} islands")
        if not rec.placeable:
            return False
        cell = rec.cell
        if cell is None:
            if rec.id is not None:
                return False  # the store already found it not placeable
            cell = self.spec.cell(complete_features(rec, self.spec))
            if cell is None:
                return False
            rec.cell = cell
        grid = self._grids[rec.island]
        self._visits[rec.island][cell] += 1
        inc = grid.get(cell)
        if inc is None or beats(rec.fitness, inc.fitness):
            grid[cell] = rec
            return True
        return False

    def add(self, store, rec: ProgramRecord) -> bool:
        """store.add_program(rec) then offer(rec): the way the loop records
        a program. Returns whether it became an elite."""
        store.add_program(rec)
        return self.offer(rec)

    def migrate(self, store, generation: int, rate: float) -> list[int]:
        """One ring-migration round (see module docstring); returns the ids
        of the copies written. Idempotent per generation."""
        if not 0 < rate <= 1:
            raise ValueError(f"migration rate must be in (0, 1], got {rate}")
        if self.n_islands < 2 or store.migration_done(generation):
            return []
        # Plan from the pre-round state of every island, then write.
        moves: list[tuple[ProgramRecord, int]] = []
        for src_island in range(self.n_islands):
            target = (src_island + 1) % self.n_islands
            native = sorted((e for e in self.elites(src_island) if not e.is_migrant), key=rank_key)
            if not native:
                continue
            k = max(1, int(rate * len(native) + 0.5))
            sent: set[str] = set()
            for src in native[:k]:
                h = src.code_hash or normalized_code_hash(src.code)
                if h in sent or store.has_code_hash(h, island=target, status="accepted") is not None:
                    continue
                sent.add(h)
                moves.append((src, target))
        copies = store.record_migration(generation, moves)
        for copy in copies:
            self.offer(copy)
        return [c.id for c in copies]

    # ------------------------------------------------------------ queries

    def elites(self, island: int) -> list[ProgramRecord]:
        """The island's elites in cell order (deterministic)."""
        grid = self._grids[island]
        return [grid[c] for c in sorted(grid)]

    def all_elites(self) -> list[ProgramRecord]:
        return [e for i in range(self.n_islands) for e in self.elites(i)]

    def cells(self, island: int) -> dict[Cell, ProgramRecord]:
        return dict(self._grids[island])

    def visits(self, island: int) -> dict[Cell, int]:
        """How many placed programs ever landed in each occupied cell (the
        exploration signal used by sampling)."""
        return dict(self._visits[island])

    def best(self, island: int | None = None) -> ProgramRecord | None:
        pool = self.all_elites() if island is None else self.elites(island)
        return min(pool, key=rank_key) if pool else None

    def snapshot(self) -> dict[int, dict[Cell, int | None]]:
        """{island: {cell: program id}}; comparable across rebuilds."""
        return {i: {c: r.id for c, r in sorted(g.items())} for i, g in enumerate(self._grids)}

    def __len__(self) -> int:
        return sum(len(g) for g in self._grids)


def _run_shape(store, spec, n_islands, strict: bool):
    run_spec, run_n = store.grid_spec(), store.n_islands()
    problems = []
    if spec is not None and spec != run_spec:
        problems.append(f"grid spec {spec.to_dict()} differs from the run's {run_spec.to_dict()}")
    if n_islands is not None and n_islands != run_n:
        problems.append(f"n_islands {n_islands} differs from the run's {run_n}")
    if problems and strict:
        raise ValueError("; ".join(problems) + " (the grid shape is fixed per run)")
    return run_spec, run_n, problems


def verify(
    store,
    spec: GridSpec | None = None,
    n_islands: int | None = None,
    islands: Islands | None = None,
    deep: bool = False,
    max_problems: int = 50,
) -> list[str]:
    """Re-derive the grids from the programs table and compare; [] when
    consistent. Checks: spec/n_islands match the run; each row's stored
    cell equals the cell recomputed from its stored features; replayed grid
    == elite table written at insert time (== `islands`, if given);
    iteration counter >= every recorded iteration; every migrant copy has
    exactly one migrations row, same code/fitness as a native source on the
    previous ring island, and its code was not already on the target.
    deep=True also recomputes every normalized code hash (parses every
    program; slow on big runs)."""
    with store.read_snapshot():
        problems = _verify(store, spec, n_islands, islands, deep)
    if len(problems) > max_problems:
        problems = problems[:max_problems] + [f"... and {len(problems) - max_problems} more"]
    return problems


def _verify(store, spec, n_islands, islands, deep) -> list[str]:
    _, _, problems = _run_shape(store, spec, n_islands, strict=False)
    spec, n = store.grid_spec(), store.n_islands()

    rows = store.execute(
        "SELECT id, code, code_hash, island, status, fitness, features, cell, operator, "
        "parent_ids, iteration FROM programs ORDER BY id"
    )
    by_id = {}
    on_island: set[tuple[int, str]] = set()
    migrant_ids = []
    max_iter = 0
    for r in rows:
        pid = r["id"]
        by_id[pid] = r
        max_iter = max(max_iter, r["iteration"])
        if not 0 <= r["island"] < n:
            problems.append(f"program {pid}: island {r['island']} out of range")
        expected = spec.cell(json.loads(r["features"])) if placeable(r["status"], r["fitness"], r["operator"]) \
            else None
        stored = None if r["cell"] is None else tuple(json.loads(r["cell"]))
        if stored != expected:
            problems.append(f"program {pid}: stored cell {stored} != recomputed {expected}")
        if deep and normalized_code_hash(r["code"]) != r["code_hash"]:
            problems.append(f"program {pid}: code_hash does not match its code")
        if r["operator"] == "migration":
            migrant_ids.append(pid)
            if (r["island"], r["code_hash"]) in on_island:
                problems.append(f"migrant {pid}: code already on island {r['island']}")
        if r["status"] == "accepted":
            on_island.add((r["island"], r["code_hash"]))
    if max_iter > store.iterations_done():
        problems.append(f"iterations_done {store.iterations_done()} < recorded iteration {max_iter}")

    derived, _ = replay(store.placements())
    table = store.elite_table()
    for key in sorted(set(derived) | set(table)):
        if derived.get(key) != table.get(key):
            problems.append(
                f"island {key[0]} cell {key[1]}: replay gives {derived.get(key)}, "
                f"elite table has {table.get(key)}"
            )
    if islands is not None:
        mem = {(i, c): pid for i, g in islands.snapshot().items() for c, pid in g.items()}
        for key in sorted(set(derived) | set(mem)):
            if derived.get(key) != mem.get(key):
                problems.append(
                    f"island {key[0]} cell {key[1]}: replay gives {derived.get(key)}, "
                    f"in-memory grid has {mem.get(key)}"
                )

    migrations = {}
    for m in store.migrations():
        if m["copy_id"] in migrations:
            problems.append(f"migrant {m['copy_id']}: recorded twice")
        migrations[m["copy_id"]] = m
    for pid in migrant_ids:
        m = migrations.pop(pid, None)
        copy = by_id[pid]
        if m is None:
            problems.append(f"migrant {pid}: no migrations row")
            continue
        src = by_id.get(m["source_id"])
        if src is None:
            problems.append(f"migrant {pid}: source {m['source_id']} missing")
            continue
        if json.loads(copy["parent_ids"]) != [src["id"]]:
            problems.append(f"migrant {pid}: parent_ids != [{src['id']}]")
        if src["operator"] == "migration":
            problems.append(f"migrant {pid}: source {src['id']} is itself a migrant")
        if src["code_hash"] != copy["code_hash"] or src["fitness"] != copy["fitness"]:
            problems.append(f"migrant {pid}: code or fitness differs from source {src['id']}")
        if copy["island"] != m["target_island"] or m["target_island"] != (src["island"] + 1) % n:
            problems.append(f"migrant {pid}: not a ring move from island {src['island']}")
    for copy_id in migrations:
        problems.append(f"migrations row for {copy_id} but that program is not a migrant copy")
    return problems


def resume_islands(store, spec: GridSpec | None = None, n_islands: int | None = None) -> Islands:
    """Rebuild islands from the store and verify them; raise
    ArchiveInconsistentError on any discrepancy. The loop's resume path."""
    islands = Islands.from_store(store, spec, n_islands)
    problems = verify(store, spec, n_islands, islands=islands)
    if problems:
        raise ArchiveInconsistentError(problems)
    return islands


def regrid(store, min_split: int = 8) -> Islands | None:
    """Refine the run's adaptive feature dimensions from the values of its placed programs (``features.refine``)
    and, if any edge was added, re-place every program and rebuild the elite tables in one transaction.
    Returns the new ``Islands`` (None when nothing changed). Every elite stays an elite: new cells only split
    old ones."""
    spec = store.grid_spec()
    if not any(d.adaptive for d in spec.dimensions):
        return None
    rows = [r for r in store.programs() if r.cell is not None]
    values = {d.name: [r.features.get(d.name) for r in rows] for d in spec.dimensions if d.adaptive}
    new = refine(spec, values, min_split)
    if new == spec:
        return None
    cells = {r.id: new.cell(r.features) for r in rows}
    owner, _ = replay((r.id, r.island, cells[r.id], r.fitness) for r in rows if cells[r.id] is not None)
    store.replace_grid(new, cells, owner)
    return Islands.from_store(store)
