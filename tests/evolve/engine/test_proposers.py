"""Proposers: the objective sentence from the fitness spec, operator choice, the proposal-to-record mapping,
and the engine driving a proposer of its own through the Proposer interface."""
from __future__ import annotations

import re

from evorank.evaluators.program.source import split_block
import threading
from pathlib import Path

import numpy as np

from evorank.archive import ProgramRecord, RunStore
from evorank.evaluators.metrics import PRESETS, FitnessSpec
from evorank.evaluators.program.source import seed_path
from evorank.evolve.config import RunConfig
from evorank.evolve.engine.loop import Engine
from evorank.evolve.engine.proposers import OfflineProposer
from evorank.evolve.llm.proposer import LLMProposer, metric_label, objective_text
from evorank.evolve.proposal import CROSSOVER, Proposal

BEFORE = ("Maximise fitness = 0.8 x mean Recall@100 + 0.2 x mean nDCG@10 over the evaluation collections "
          "(macro average; a program that fails on any collection scores 0). ")


def test_objective_text_of_the_presets_is_unchanged():
    assert objective_text(PRESETS["rankevolve"]) == (
        BEFORE + "Also keep scoring about as fast as BM25; latency is reported.")
    assert objective_text(PRESETS["latency-aware"]) == (
        BEFORE + "Programs slower than BM25 are penalised: fitness x (BM25 latency / latency)^0.05.")


def test_objective_text_follows_the_spec():
    spec = FitnessSpec(name="x", weights={"ndcg@10": 0.5, "recall@1000": 0.3, "map@1000": 0.2}, latency_exponent=0.1)
    assert objective_text(spec) == (
        "Maximise fitness = 0.5 x mean nDCG@10 + 0.3 x mean Recall@1000 + 0.2 x mean MAP@1000 over the evaluation "
        "collections (macro average; a program that fails on any collection scores 0). "
        "Programs slower than BM25 are penalised: fitness x (BM25 latency / latency)^0.1.")
    assert objective_text(FitnessSpec(weights={"ndcg@10": 1.0, "recall@100": -0.25})).startswith(
        "Maximise fitness = 1 x mean nDCG@10 - 0.25 x mean Recall@100 over")
    assert metric_label("mrr@10") == "MRR@10" and metric_label("custom") == "custom"


def test_offline_operator_choice_draws_once_and_needs_a_partner():
    proposer = OfflineProposer(crossover_rate=0.5)
    for seed in range(50):
        a, b, ref = (np.random.default_rng(seed) for _ in range(3))
        with_partner = proposer.choose_operator(a, True)
        assert with_partner == (CROSSOVER if ref.random() < 0.5 else "offline")
        assert proposer.choose_operator(b, False) == "offline"
        assert a.random() == b.random() == ref.random()  # the same number of draws either way


def test_llm_operator_choice_falls_back_to_diff_without_a_partner():
    proposer = LLMProposer(None, None, "objective", {"diff": 0.2, "full": 0.2, "crossover": 0.6}, concurrency=2)
    seen = set()
    for seed in range(50):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        op = proposer.choose_operator(a, True)
        seen.add(op)
        assert proposer.choose_operator(b, False) == ("diff" if op == CROSSOVER else op)
        assert a.random() == b.random()
    assert seen == {"diff", "full", CROSSOVER}


def test_proposal_to_record():
    parent = ProgramRecord(code="parent code", operator="seed", island=1, generation=0, iteration=0, id=4)
    other = ProgramRecord(code="other code", operator="seed", island=0, generation=0, iteration=0, id=9)
    prop = Proposal(7, 1, 3, CROSSOVER, parent, other, source="child code", description="what changed",
                    model="m", prompt_tokens=5, completion_tokens=6, cost_usd=0.5, started_at=12.0)
    rec = prop.to_record()
    assert (rec.code, rec.operator, rec.island, rec.generation, rec.iteration, rec.parent_ids) == (
        "child code", CROSSOVER, 1, 3, 7, (4, 9))
    assert (rec.model, rec.response, rec.prompt_tokens, rec.completion_tokens, rec.cost_usd, rec.started_at) == (
        "m", "what changed", 5, 6, 0.5, 12.0)
    assert rec.status == "accepted" and rec.fitness is None  # evaluation decides
    prop = Proposal(8, 0, 4, "diff", parent, response="no code here", failure_reason="no_code", failure_detail="d")
    rec = prop.to_record()
    assert (rec.code, rec.status, rec.fitness, rec.failure_reason, rec.failure_detail, rec.response) == (
        "parent code", "failed", 0.0, "no_code", "d", "no code here")


#: The document-length weight K1Proposer adds at each iteration: the three rank the tiny collection three ways, each
#: unlike the seed, so none ranks as its parent (a no-op) whichever parent the threads' timing draws.
LENGTH_WEIGHT = {1: 0.1, 2: -0.5, 4: 1.0}


class K1Proposer:
    """A slow proposer of its own: sets K1 and a document-length weight in worker threads; iteration 3 raises."""

    instantaneous = False
    concurrency = 2

    def __init__(self):
        self.prepared: list[tuple[int, str, int]] = []
        self.filled_in: set[str] = set()
        self.closed = False

    def choose_operator(self, rng, has_partner):
        return "full"  # the archive knows a fixed set of operators

    def prepare(self, prop, view):
        self.prepared.append((prop.iteration, threading.current_thread().name, len(view.seed_records)))

    def fill(self, prop, rng):
        self.filled_in.add(threading.current_thread().name)
        if prop.iteration == 3:
            raise RuntimeError("proposer bug")
        # whatever K1 the parent has (which parent is drawn depends on the timing of the threads)
        code = re.sub(r"K1 = [0-9.]+", f"K1 = {1 + prop.iteration / 10}", prop.parent.code, count=1)
        prop.source = re.sub(r"return np\.where\(matched, scores.*, -np\.inf\)",
                             f"return np.where(matched, scores + {LENGTH_WEIGHT[prop.iteration]} * index.doc_len, "
                             "-np.inf)", code, count=1)
        prop.model, prop.description = "k1-setter", f"K1 for iteration {prop.iteration}"

    def close(self):
        self.closed = True


def test_engine_drives_a_proposer_of_its_own(tmp_path, tiny_collection):
    from evorank.evaluators.parallel import Evaluator, Limits

    cfg = RunConfig(seeds=["bm25"], datasets=[str(tiny_collection)], iterations=4, islands=1, workers=1,
                    llm="offline", cascade=False, out=str(tmp_path / "run"))
    proposer = K1Proposer()
    evaluator = Evaluator([str(tiny_collection)], n_workers=1, limits=Limits(timeout_s=20), cascade=None)
    try:
        engine = Engine(cfg, Path(cfg.out), [str(tiny_collection)], evaluator, proposer=proposer)
        engine.run()
        engine.close()
    finally:
        evaluator.close()
    assert [p[0] for p in proposer.prepared] == [1, 2, 3, 4]
    assert {p[1] for p in proposer.prepared} == {threading.main_thread().name} and proposer.prepared[0][2] == 1
    assert threading.main_thread().name not in proposer.filled_in  # not instantaneous: worker threads
    assert proposer.closed
    store = RunStore.open(Path(cfg.out), readonly=True)
    progs = {p.iteration: p for p in store.programs() if p.iteration > 0}
    store.close()
    assert sorted(progs) == [1, 2, 3, 4] and all(p.operator == "full" for p in progs.values())
    assert progs[3].status == "failed" and progs[3].failure_reason == "proposer:RuntimeError"
    for it in (1, 2, 4):
        assert progs[it].status == "accepted" and f"K1 = {1 + it / 10}" in progs[it].code, progs[it].failure_detail
        assert progs[it].model == "k1-setter" and progs[it].response == f"K1 for iteration {it}"
    assert seed_path("bm25").read_text(encoding="utf-8").count("K1 = 0.9") == 1


def test_repairable_reasons():
    from evorank.evolve.proposal import repairable

    for reason in ("no_code", "truncated", "diff_no_match", "no_change", "syntax_error", "forbidden:import os",
                   "modified_outside_block:head", "exception:NameError", "invalid_scores:nan", "timeout", "memory"):
        assert repairable(reason), reason
    for reason in (None, "", "llm:http_400", "llm:connection", "command:timeout", "command:exit",
                   "proposer:RuntimeError", "latency_mismatch"):
        assert not repairable(reason), reason


class ShownCopyProposer:
    """Writes, from whichever seed is the parent, the other seed with a term that changes no ranking, and says the
    prompt showed that other seed (as an inspiration)."""

    instantaneous = True
    concurrency = 1

    def choose_operator(self, rng, has_partner):
        return "full"

    def prepare(self, prop, view):
        other = next(r for r in view.seed_records.values() if r.code != prop.parent.code)
        prop.shown = ((f"program {other.id}", other.code),)
        block = split_block(other.code).block.replace("return np.where(", "scores = scores + 0.0\n    return np.where(", 1)
        prop.source = split_block(prop.parent.code).join(block)  # the parent's head and tail, the other's block
        prop.model, self.shown_id = "shown-copier", other.id

    def fill(self, prop, rng):
        pass

    def close(self):
        pass


def test_a_candidate_that_ranks_as_a_program_its_prompt_showed_is_a_no_op(tmp_path):
    from conftest import write_random_beir
    from evorank.evaluators.parallel import Evaluator, Limits

    coll = str(write_random_beir(tmp_path / "coll", n_docs=150, n_queries=40, seed=4))  # BM25 and QL rank it apart
    cfg = RunConfig(seeds=["bm25", "ql_dirichlet"], datasets=[coll], iterations=1, islands=1, workers=1,
                    llm="offline", out=str(tmp_path / "run"))
    proposer = ShownCopyProposer()
    evaluator = Evaluator([coll], n_workers=1, limits=Limits(timeout_s=20))
    try:
        engine = Engine(cfg, Path(cfg.out), [coll], evaluator, proposer=proposer)
        engine.run()
        engine.close()
    finally:
        evaluator.close()
    with RunStore.open(Path(cfg.out), readonly=True) as store:
        rec = next(p for p in store.programs() if p.iteration == 1)
        seeds = store.seed_programs()
    assert seeds[0].features["sample_ranking"] != seeds[1].features["sample_ranking"]
    assert "scores = scores + 0.0" in rec.code
    assert (rec.status, rec.failure_reason) == ("duplicate", "no_op"), (rec.status, rec.failure_reason)
    assert f"as program {proposer.shown_id} does" in rec.failure_detail
