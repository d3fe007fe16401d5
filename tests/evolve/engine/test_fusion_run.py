"""Fusing a run's island bests: the fusion is archived beside them, competes for the run's best on the validation
queries only, and a resumed run does not fuse the same programs again."""
from __future__ import annotations

import json

import pytest

from evorank.archive import FUSE, ProgramRecord, RunStore
from evorank.archive.programs import essential_code
from evorank.evaluators.program.fusion import members
from evorank.evaluators.program.source import program_path, split_block
from evorank.evolve.cli.main import main
from evorank.evolve.engine.fusion import fitting_fusion

SEED = program_path("bm25").read_text(encoding="utf-8")


def record(code: str, fitness: float, val: float, island: int = 0, operator: str = "offline",
           parents: tuple[int, ...] = ()) -> ProgramRecord:
    return ProgramRecord(code=code, operator=operator, island=island, generation=1, iteration=1, parent_ids=parents,
                         fitness=fitness, metrics={"c": {"ndcg@10": fitness}}, features={"val_fitness": val})


def test_the_fusion_is_the_best_only_where_its_validation_fitness_is_higher(tmp_path):
    with RunStore.create(tmp_path / "run", {}, 0, n_islands=2, synchronous="NORMAL") as store:
        a = record(SEED.replace("K1 = 0.9", "K1 = 1.1"), 1.05, 1.02, island=0)
        b = record(SEED.replace("K1 = 0.9", "K1 = 1.3"), 1.04, 1.03, island=1)
        store.add_program(a)
        store.add_program(b)
        assert store.best_on_validation(10).id == b.id
        lower = record(SEED.replace("B = 0.4", "B = 0.5"), 1.06, 1.025, operator=FUSE, parents=(b.id, a.id))
        store.add_program(lower)
        assert lower.cell is None  # a fusion never enters a grid
        assert store.best_on_validation(10).id == b.id  # higher train fitness, lower validation: not the best
        higher = record(SEED.replace("B = 0.4", "B = 0.6"), 1.01, 1.031, operator=FUSE, parents=(b.id, a.id))
        store.add_program(higher)
        assert store.fusion().id == higher.id
        assert store.best_on_validation(10).id == higher.id
        # one island's best is that island's program; its own best leaves migration copies out
        copy = record(b.code, b.fitness, 1.03, island=0, operator="migration", parents=(b.id,))
        store.add_program(copy)
        assert store.best_on_validation(10, island=0).id == copy.id
        assert store.best_on_validation(10, island=0, migrants=False).id == a.id


def test_members_are_taken_while_the_fusion_is_not_too_large():
    def large(k1: str) -> ProgramRecord:  # a block of about 140 lines: two fit the 400-line limit, three do not
        padding = "".join(f"PAD_{i} = B\n" for i in range(120))
        return record(SEED.replace("K1 = 0.9", f"K1 = {k1}\n" + padding), 1.0, 1.0)
    members = [large("1.1"), large("1.2"), large("1.3")]
    (source, kept), why = fitting_fusion(members)
    assert kept == members[:2] and why is None and split_block(source).block.count("\n") > 250


@pytest.mark.slow
def test_a_run_with_fuse_best_fuses_its_island_bests_once(tmp_path, cache_dir, capsys):
    out = tmp_path / "run"
    args = ["run", "--llm", "offline", "--suite", "demo", "--iterations", "60", "--workers", "1", "--seed", "3",
            "--out", str(out), "--quiet", "--fuse-best"]
    assert main(args) == 0
    with RunStore.open(out, readonly=True) as store:
        events = store.events("fusion")
        fused = [p for p in store.programs() if p.operator == FUSE]
        by_id = {p.id: p for p in store.programs()}
        best = store.best_on_validation(10)
        n_programs = len(store.programs())
    assert len(events) == 1 and len(fused) == 1
    event, fusion = events[0]["data"], fused[0]
    assert list(fusion.parent_ids) == event["members"] == event["candidates"][:len(event["members"])]
    assert len(event["members"]) >= 2 and fusion.cell is None and fusion.status == "accepted"
    assert [essential_code(m) for m in members(fusion.code)] == [essential_code(by_id[i].code)
                                                                   for i in event["members"]]
    assert event["val_fitness"] == fusion.features["val_fitness"]
    # the best is the fusion exactly when its validation fitness is higher than the best single program's
    assert (best.id == fusion.id) == (event["val_fitness"] > event["best_val_fitness"])
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["proposals_done"] == 60 and st["fusions"] == 1
    assert main(["lineage", str(out), str(fusion.id)]) == 0
    assert f"fused with #{event['members'][1]}" in capsys.readouterr().out
    # a resumed run that is already complete does not fuse the same programs again
    assert main(["run", "--resume", str(out), "--quiet", "--fuse-best"]) == 0
    with RunStore.open(out, readonly=True) as store:
        assert len(store.events("fusion")) == 1 and len(store.programs()) == n_programs
