"""Sampling: determinism from (seed, iteration) and recorded results only."""

from collections import Counter

import numpy as np
import pytest

from evorank.archive import (
    FeatureDim,
    GridSpec,
    Islands,
    ProgramRecord,
    RunStore,
    SamplingPolicy,
    choose_parent,
    rng_for,
    select_inspirations,
    select_parent,
)

SPEC = GridSpec((FeatureDim("complexity", (10, 20, 40)), FeatureDim("latency_ratio", (0.5, 1, 2, 4), log=True)))


def make_run(path, n=90, n_islands=3, seed=21):
    """A recorded run: programs with pseudo-random fitness and features."""
    store = RunStore.create(path, {}, seed=seed, versions={}, grid=SPEC, n_islands=n_islands, synchronous="NORMAL")
    islands = Islands.from_store(store)
    gen = np.random.default_rng(0)
    for k in range(1, n + 1):
        islands.add(
            store,
            ProgramRecord(
                code=f"def f(x):\n    return x * {k}\n",
                operator="diff",
                island=k % n_islands,
                generation=k // n_islands,
                iteration=k,
                fitness=float(gen.random()),
                features={"complexity": float(gen.integers(1, 60)), "latency_ratio": float(2 ** gen.uniform(-2, 3))},
            ),
        )
        if k % 30 == 0:
            islands.migrate(store, k // 30, 0.3)
    return store, islands


def choices(islands, seed, iterations, policy=SamplingPolicy()):
    out = []
    for it in iterations:
        rng = rng_for(seed, it)
        island = it % islands.n_islands
        parent = select_parent(islands, island, rng, policy)
        insp = select_inspirations(islands, island, parent, rng, policy)
        out.append((parent.id, tuple(i.id for i in insp)))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    store, islands = make_run(path)
    store.close()
    return path, islands


def test_same_seed_and_results_give_same_choices(run, tmp_path):
    path, live = run
    store = RunStore.open(path, readonly=True)
    rebuilt = Islands.from_store(store)  # e.g. after a resume
    its = range(1, 201)
    assert choices(live, 21, its) == choices(rebuilt, 21, its)
    # Same recorded results produced again from scratch: same choices.
    other_store, other = make_run(tmp_path / "again")
    assert choices(other, 21, its) == choices(live, 21, its)
    other_store.close()
    store.close()


def test_no_hidden_state_across_iterations(run):
    _, islands = run
    forward = choices(islands, 21, range(1, 101))
    backward = choices(islands, 21, range(100, 0, -1))[::-1]
    assert forward == backward
    # Iterations 51..100 choose the same whether or not 1..50 ran first.
    assert choices(islands, 21, range(51, 101)) == forward[50:]


def test_different_seeds_differ(run):
    _, islands = run
    a = choices(islands, 21, range(1, 101))
    b = choices(islands, 22, range(1, 101))
    assert sum(x != y for x, y in zip(a, b)) > 30


def test_rng_for_contract():
    assert rng_for(1, 2).random() == rng_for(1, 2).random()
    assert rng_for(1, 2).random() != rng_for(1, 2, stream=1).random()
    # numpy maps [a, b] and [a, b, 0] to one state; keys must not collide.
    assert rng_for(1, 0).random() != rng_for(1, 0, 1).random() != rng_for(0, 1).random()
    with pytest.raises(ValueError):
        rng_for(-1, 0)


def test_mode_mix_follows_policy(run):
    _, islands = run
    modes = Counter(choose_parent(islands, 0, rng_for(5, it))[1] for it in range(3000))
    assert abs(modes["exploit"] / 3000 - 0.7) < 0.04
    assert abs(modes["explore"] / 3000 - 0.2) < 0.04
    assert abs(modes["uniform"] / 3000 - 0.1) < 0.03
    only_explore = SamplingPolicy(exploit=0, explore=1, uniform=0)
    assert {choose_parent(islands, 0, rng_for(5, it), only_explore)[1] for it in range(50)} == {"explore"}


def test_exploit_prefers_fitter_and_explore_prefers_rare_cells(run):
    _, islands = run
    elites = islands.elites(0)
    mean_fit = np.mean([e.fitness for e in elites])
    exploit = SamplingPolicy(exploit=1, explore=0, uniform=0)
    picks = [select_parent(islands, 0, rng_for(5, it), exploit) for it in range(300)]
    assert np.mean([p.fitness for p in picks]) > mean_fit
    explore = SamplingPolicy(exploit=0, explore=1, uniform=0)
    visits = islands.visits(0)
    median = np.median([visits[e.cell] for e in elites])
    picks = [select_parent(islands, 0, rng_for(5, it), explore) for it in range(100)]
    assert all(visits[p.cell] <= median for p in picks)


def test_inspirations_shape(run):
    _, islands = run
    policy = SamplingPolicy(n_top=3, n_diverse=2)
    for it in range(1, 60):
        rng = rng_for(3, it)
        parent = select_parent(islands, 1, rng, policy)
        insp = select_inspirations(islands, 1, parent, rng, policy)
        ids = [i.id for i in insp]
        assert parent.id not in ids and len(set(ids)) == len(ids) <= 5
        assert all(i.code_hash != parent.code_hash for i in insp)
        top = insp[:3]
        assert [t.fitness for t in top] == sorted((t.fitness for t in top), reverse=True)
        others = [e for e in islands.elites(1) if e.id != parent.id and e.code_hash != parent.code_hash]
        assert top[0].fitness == max(e.fitness for e in others)
        top_cells = {parent.cell} | {t.cell for t in top}
        assert all(d.cell not in top_cells for d in insp[3:])


def test_empty_island_and_empty_archive(tmp_path):
    store = RunStore.create(tmp_path, {}, seed=1, versions={}, grid=SPEC, n_islands=2, synchronous="NORMAL")
    islands = Islands.from_store(store)
    with pytest.raises(LookupError):
        select_parent(islands, 0, rng_for(1, 1))
    islands.add(store, ProgramRecord(code="x = 1", operator="seed", island=0, generation=0, iteration=0,
                                     fitness=0.1, latency_ratio=1.0))
    # Island 1 has no elites yet: it borrows the archive's.
    assert select_parent(islands, 1, rng_for(1, 1)).island == 0
    store.close()
