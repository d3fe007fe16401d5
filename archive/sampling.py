"""Parent and inspiration selection for one loop iteration.

Policy (per parent draw, mixing ratios configurable, default 0.7/0.2/0.1):
- exploit (0.7): tournament of `tournament_size` elites drawn uniformly
  from the island, fittest wins. Tournaments only use fitness ranks, so
  they work for any fitness scale or sign (unlike fitness-proportional
  selection) and their pressure does not collapse when all elites have
  nearly equal fitness.
- explore (0.2): uniform over elites of under-explored cells, i.e. cells
  whose visit count (placed programs that ever landed there) is at most the
  island's median. Those elites sit where the search has spent little
  effort, often at the edge of the occupied feature space (fast or small
  scorers), which is where MAP-Elites finds its stepping stones.
- uniform (0.1): uniform over all of the island's elites, a floor of
  randomness so no elite is starved whatever the other two do.
An island with no elites yet borrows the whole archive's elites (early in a
run, before each island's seed is placed), and an empty archive raises.

Inspirations: the island's top `n_top` elites (excluding the parent and its
code), plus `n_diverse` elites drawn uniformly from cells not already
represented (the parent's and the top ones'), so the prompt shows both what
works best and what works differently.

Determinism: every draw comes from `rng_for(seed, iteration)`, a fresh
Generator per iteration and never state carried across iterations. Given the
same run seed, iteration number and recorded results (hence the same
islands), the choices are identical, so a resumed run re-makes exactly the
choices an uninterrupted one would have made. Candidate lists are always in
a fixed order (cells sorted, ties by id) so draws map to the same programs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evorank.archive.elites import Islands, rank_key
from evorank.archive.programs import ProgramRecord

MODES = ("exploit", "explore", "uniform")


@dataclass(frozen=True)
class SamplingPolicy:
    """Mixing ratios (need not sum to 1; normalized) and inspiration counts."""

    exploit: float = 0.7
    explore: float = 0.2
    uniform: float = 0.1
    n_top: int = 3
    n_diverse: int = 2
    tournament_size: int = 3

    def __post_init__(self):
        weights = (self.exploit, self.explore, self.uniform)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"mixing ratios must be >= 0 with a positive sum, got {weights}")
        if self.n_top < 0 or self.n_diverse < 0 or self.tournament_size < 1:
            raise ValueError("n_top, n_diverse must be >= 0 and tournament_size >= 1")

    def probabilities(self) -> tuple[float, float, float]:
        total = self.exploit + self.explore + self.uniform
        return (self.exploit / total, self.explore / total, self.uniform / total)


def rng_for(seed: int, iteration: int, stream: int = 0) -> np.random.Generator:
    """Generator for one iteration's draws. `stream` separates independent
    uses within an iteration (e.g. island choice vs. parent choice).

    The entropy is always a fixed-length triple: numpy's SeedSequence maps
    [a, b] and [a, b, 0] to the same state, so variable-length keys could
    collide."""
    if min(seed, iteration, stream) < 0:
        raise ValueError("seed, iteration and stream must be non-negative")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(iteration), int(stream)]))


def _pool(islands: Islands, island: int) -> list[ProgramRecord]:
    pool = islands.elites(island)
    if not pool:
        pool = islands.all_elites()
    if not pool:
        raise LookupError("the archive has no elites yet; record the seed programs first")
    return pool


def _tournament(pool, rng, size) -> ProgramRecord:
    idx = rng.choice(len(pool), size=min(size, len(pool)), replace=False)
    return min((pool[i] for i in idx), key=rank_key)


def _under_explored(islands: Islands, pool, rng) -> ProgramRecord:
    visits = [islands.visits(e.island).get(e.cell, 1) for e in pool]
    threshold = float(np.median(visits))
    candidates = [e for e, v in zip(pool, visits) if v <= threshold]
    return candidates[int(rng.integers(len(candidates)))]


def choose_parent(
    islands: Islands, island: int, rng: np.random.Generator, policy: SamplingPolicy = SamplingPolicy()
) -> tuple[ProgramRecord, str]:
    """select_parent that also says which mode picked it (for logging)."""
    pool = _pool(islands, island)
    p_exploit, p_explore, _ = policy.probabilities()
    u = rng.random()
    if u < p_exploit:
        return _tournament(pool, rng, policy.tournament_size), "exploit"
    if u < p_exploit + p_explore:
        return _under_explored(islands, pool, rng), "explore"
    return pool[int(rng.integers(len(pool)))], "uniform"


def select_parent(
    islands: Islands, island: int, rng: np.random.Generator, policy: SamplingPolicy = SamplingPolicy()
) -> ProgramRecord:
    """Parent for the next mutation on `island` (see module docstring)."""
    return choose_parent(islands, island, rng, policy)[0]


def select_inspirations(
    islands: Islands,
    island: int,
    parent: ProgramRecord,
    rng: np.random.Generator,
    policy: SamplingPolicy = SamplingPolicy(),
) -> list[ProgramRecord]:
    """Top-`n_top` elites of the island, then `n_diverse` elites from other
    cells; never the parent or a copy of its code. Best first, then the
    diverse picks in draw order."""

    def same_as_parent(e: ProgramRecord) -> bool:
        if e is parent or (parent.id is not None and e.id == parent.id):
            return True
        return parent.code_hash is not None and e.code_hash == parent.code_hash

    pool = [e for e in islands.elites(island) if not same_as_parent(e)]
    top = sorted(pool, key=rank_key)[: policy.n_top]
    taken_cells = {parent.cell} | {e.cell for e in top}
    taken = {id(e) for e in top}
    rest = [e for e in pool if id(e) not in taken and e.cell not in taken_cells]
    diverse: list[ProgramRecord] = []
    if rest and policy.n_diverse:
        idx = rng.choice(len(rest), size=min(policy.n_diverse, len(rest)), replace=False)
        diverse = [rest[i] for i in idx]
    return top + diverse
