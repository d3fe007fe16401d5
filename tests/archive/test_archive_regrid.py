"""Adaptive bins: re-binning adds edges only, places every program again, and never loses an elite."""
from __future__ import annotations

import numpy as np
import pytest

from evorank.archive import FeatureDim, GridSpec, Islands, ProgramRecord, RunStore, verify
from evorank.archive.elites import regrid
from evorank.archive.features import refine

GRID = GridSpec((
    FeatureDim("evidence", (1.0, 2.0)),
    FeatureDim("balance", (0.0,), adaptive=True, max_bins=6),
    FeatureDim("size", (100.0,), log=True, adaptive=True, max_bins=5),
))


def fill(store: RunStore, n: int, seed: int, islands: Islands) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        rec = ProgramRecord(code=f"# program {seed}-{i}\n", operator="offline", island=int(rng.integers(2)),
                            generation=i, iteration=i + 1, fitness=float(rng.random()),
                            features={"evidence": float(rng.integers(0, 4)), "balance": float(rng.normal(0, 0.05)),
                                      "size": float(rng.lognormal(5, 1))})
        if i % 9 == 0:
            rec.status, rec.fitness = "failed", 0.0  # archived, never placed
        islands.add(store, rec)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regrid_keeps_every_elite_and_adds_cells(tmp_path, seed):
    store = RunStore.create(tmp_path / "run", {}, 0, grid=GRID, n_islands=2, synchronous="NORMAL")
    islands = Islands.from_store(store)
    fill(store, 300, seed, islands)
    before = store.elite_table()
    new_islands = regrid(store, min_split=8)
    assert new_islands is not None
    spec = store.grid_spec()
    assert len(spec.dimensions[1].edges) > 1 and len(spec.dimensions[2].edges) > 1
    assert spec.dimensions[0] == GRID.dimensions[0]  # not adaptive: untouched
    for old, new in zip(GRID.dimensions, spec.dimensions):
        assert set(old.edges) <= set(new.edges) and new.n_bins <= max(new.max_bins, old.n_bins)
    after = store.elite_table()
    assert set(before.values()) <= set(after.values())  # no elite lost
    assert len(after) > len(before)
    assert verify(store, islands=new_islands) == []
    assert {(i, c): r.id for i in range(2) for c, r in new_islands.cells(i).items()} == after
    # placing continues under the new spec, and a second regrid with nothing new to split changes nothing
    fill(store, 20, seed + 10, new_islands)
    assert verify(store, islands=new_islands) == []
    store.close()


def test_refine_splits_the_crowded_bin_at_its_median_and_stops():
    dim = FeatureDim("x", (0.0,), adaptive=True, max_bins=4)
    spec = GridSpec((dim,))
    values = {"x": [0.1 * i for i in range(1, 41)]}  # all above the only edge
    new = refine(spec, values, min_split=8)
    assert new.dimensions[0].n_bins == 4 and new.dimensions[0].edges[0] == 0.0
    assert refine(spec, {"x": [1.0, 1.0, 1.0]}, min_split=8) == spec  # too few to split
    fixed = GridSpec((FeatureDim("x", (0.0,)),))
    assert refine(fixed, values) == fixed
    assert GridSpec.from_dict(new.to_dict()) == new
