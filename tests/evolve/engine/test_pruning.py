"""Pruning a run's best: a part is kept only where the validation queries show it helps; the pruned program is the
run's best, archived beside (never instead of) the program it came from."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from evorank.archive import RunStore
from evorank.evaluators.evaluate import CollectionResult, SuiteResult
from evorank.evaluators.metrics import fitness_spec
from evorank.evaluators.parallel import CandidateResult
from evorank.evaluators.program.parts import parts
from evorank.evaluators.program.source import program_path
from evorank.evolve.cli.main import main
from evorank.evolve.engine.pruning import prune, query_values

SEED = program_path("bm25").read_text(encoding="utf-8")
N = 40
REFERENCE = {"c": {"ndcg@10": 0.5, "recall@100": 0.5}}


def parts_of(source: str) -> list[str]:
    return [p.name for p in parts(source, SEED) + parts(source, program_path("ql_dirichlet").read_text())]


def program(k1: str = "1.2", b: str = "0.75") -> str:
    return SEED.replace("K1 = 0.9", f"K1 = {k1}").replace("B = 0.4", f"B = {b}")


class FakeEvaluator:
    """Per-query validation metrics from the constants a program sets: K1 = 1.2 adds 0.1 to every query (a real
    gain), B = 0.75 adds +-0.01 alternately (nothing on average); a program with K1 = 7 fails to run."""

    def __init__(self):
        self.evaluated: list[str] = []

    def collection_sizes(self):
        return {"c": 5000}

    def result(self, source: str) -> CandidateResult:
        self.evaluated.append(source)
        k1 = re.search(r"^K1 = (.*)$", source, re.M).group(1)
        if k1 == "7":
            return CandidateResult("x", 2, None, 0.0, failure_reason="exception:ValueError")
        values = np.full(N, 0.5)
        if k1 == "1.2":
            values = values + 0.1
        if re.search(r"^B = 0.75$", source, re.M):
            values = values + np.where(np.arange(N) % 2 == 0, 0.01, -0.01)
        coll = CollectionResult("c", 5000, N, {"ndcg@10": float(values.mean()), "recall@100": float(values.mean())},
                                {"ndcg@10": values, "recall@100": values})
        suite = SuiteResult("x", [coll], 1.0, "consistent")
        return CandidateResult("x", 2, suite, 1.0, validation=suite, validation_fitness=1.0)

    def evaluate(self, sources, seed_sources=None, parent_stage1=None, names=None, starts=None):
        return [self.result(s) for s in sources]


def test_a_part_that_adds_nothing_on_validation_is_removed_and_a_real_gain_is_kept():
    ev = FakeEvaluator()
    src = program()
    out = prune(src, SEED, ev.result(src), ev, REFERENCE, fitness_spec("consistent"))
    assert out.removed == ["B"]
    assert "K1 = 1.2" in out.source and "B = 0.4" in out.source
    first, second = out.rounds
    assert first["K1"]["adds"] == pytest.approx(0.2) and first["K1"]["p"] < 0.05  # 0.1 / 0.5 on both metrics
    assert first["B"]["adds"] == pytest.approx(0.0, abs=1e-12) and first["B"]["p"] > 0.05
    assert list(second) == ["K1"]  # the next round tests what is left, and keeps it


def test_a_part_whose_removal_does_not_run_is_kept():
    ev = FakeEvaluator()
    src = program(k1="1.2", b="0.4")
    # against a seed whose K1 is 7, the program's one part is K1, and the program without it (K1 = 7) fails
    seed = SEED.replace("K1 = 0.9", "K1 = 7")
    out = prune(src, seed, ev.result(src), ev, REFERENCE, fitness_spec("consistent"))
    assert out.removed == [] and out.rounds == [{"K1": None}] and out.source == src


def test_query_values_weigh_each_metric_by_the_fitness_and_divide_by_the_reference():
    ev = FakeEvaluator()
    values = query_values(ev.result(program(b="0.4")), REFERENCE, fitness_spec("consistent"), {"c": 5000})
    assert values.shape == (N,) and np.allclose(values, 0.6 / 0.5)
    # on a collection too small for R@100 to count, nDCG@10 alone decides
    small = query_values(ev.result(program(b="0.4")), REFERENCE, fitness_spec("consistent"), {"c": 100})
    assert np.allclose(small, 0.6 / 0.5)


@pytest.mark.slow
def test_a_run_with_prune_best_archives_the_pruned_best_once(tmp_path, cache_dir, capsys):
    out = tmp_path / "run"
    args = ["run", "--llm", "offline", "--suite", "demo", "--iterations", "60", "--workers", "1", "--seed", "3",
            "--out", str(out), "--quiet", "--prune-best"]
    assert main(args) == 0
    with RunStore.open(out, readonly=True) as store:
        events = store.events("prune")
        pruned = [p for p in store.programs() if p.operator == "prune"]
        best = store.best_on_validation(10)
        n_programs = len(store.programs())
    assert len(events) == 1
    event = events[0]["data"]
    assert event["rounds"], "the best's parts were not tested"
    assert event["removed"], "this run's best has parts its validation queries do not support"
    assert len(pruned) == 1 and best.id == pruned[0].id and best.parent_ids == (event["best"],)
    assert best.cell is None and best.features["pruned"] == event["removed"]
    assert all(name not in parts_of(best.code) for name in event["removed"])
    # status names the pruned best and what was taken out; it is no proposal
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["proposals_done"] == 60 and st["pruned_programs"] == 1
    assert st["best"]["id"] == best.id and st["best"]["pruned_from"] == event["best"]
    assert st["best"]["pruned"] == event["removed"]
    # a resumed run that is already complete does not prune the same best again
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    with RunStore.open(out, readonly=True) as store:
        assert len(store.events("prune")) == 1 and len(store.programs()) == n_programs
