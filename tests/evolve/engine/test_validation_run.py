"""Validation never steers a run; held-out tracking only logs; descriptors spread programs over the grid."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import write_random_beir
from evorank.archive import RunStore
from evorank.evaluators.data.collections import load_collection
from evorank.evaluators.splits import validation_split
from evorank.evolve.cli.main import main
from evorank.evolve.engine.descriptors import balance, describe

ITERATIONS = 16


def perturb_validation(folder, seed: int) -> None:
    """Give every validation query other relevant documents (same number, same grades): the split (stratified by
    the number of relevant documents) stays the same, the validation metrics change."""
    coll = load_collection(str(folder))
    qids = [q for q, _ in coll.queries]
    n_rel = np.array([len(coll.qrels[q]) for q in qids])
    _, val = validation_split(n_rel, 0.3, str(folder), seed)
    lines = (folder / "qrels" / "test.tsv").read_text().splitlines()
    val_ids = {qids[i] for i in val}
    out = [lines[0]]
    for line in lines[1:]:
        q, d, g = line.split("\t")
        if q in val_ids:  # a shift of the document numbers: no two judgements of a query collide
            d = f"d{(int(d[1:]) + 7) % 120}"
        out.append("\t".join((q, d, g)))
    (folder / "qrels" / "test.tsv").write_text("\n".join(out) + "\n")


def run(tmp_path, name: str, collection, *extra) -> RunStore:
    out = tmp_path / name
    cfg = tmp_path / f"{name}.toml"
    # no latency axis: measured time would make the grid, and with it parent selection, differ between runs
    cfg.write_text('descriptors = ["evidence", "balance", "complexity"]\nregrid_every = 4\n')
    code = main(["run", "--llm", "offline", "--datasets", str(collection), "--iterations", str(ITERATIONS),
                 "--workers", "1", "--seed", "3", "--out", str(out), "--quiet", "--validation", "0.3",
                 "--config", str(cfg), *extra])
    assert code == 0
    return RunStore.open(out, readonly=True)


@pytest.mark.slow
def test_perturbed_validation_judgements_leave_the_trajectory_unchanged(tmp_path, cache_dir):
    # both runs use the same address (the split is keyed by it): the original, then the perturbed copy
    coll = write_random_beir(tmp_path / "coll", n_docs=120, n_queries=40, seed=5)
    shutil.copytree(coll, tmp_path / "original")
    with run(tmp_path, "run_a", coll) as a:
        trail_a = [(r.iteration, r.operator, r.code_hash, r.status, r.fitness, r.cell) for r in a.programs()]
        val_a = [r.features.get("val_fitness") for r in a.programs()]
    perturb_validation(coll, seed=3)
    with run(tmp_path, "run_b", coll) as b:
        trail_b = [(r.iteration, r.operator, r.code_hash, r.status, r.fitness, r.cell) for r in b.programs()]
        val_b = [r.features.get("val_fitness") for r in b.programs()]
    assert len(trail_a) >= ITERATIONS
    assert trail_a == trail_b  # same parents, same children, same train fitness, same cells
    assert val_a != val_b  # while what the validation queries say did change
    assert any(v is not None for v in val_a)


@pytest.mark.slow
def test_heldout_tracking_logs_and_never_steers(tmp_path, cache_dir):
    train = write_random_beir(tmp_path / "train", n_docs=120, n_queries=40, seed=1)
    held = write_random_beir(tmp_path / "held", n_docs=100, n_queries=20, seed=2)
    with run(tmp_path, "plain", train) as plain:
        trail = [(r.code_hash, r.fitness) for r in plain.programs()]
    with run(tmp_path, "tracked", train, "--heldout", str(held)) as tracked:
        assert [(r.code_hash, r.fitness) for r in tracked.programs()] == trail
        events = tracked.events("heldout")
        assert events, "no held-out measurement was logged"
        last = events[-1]["data"]
        assert last["collections"] == [str(held)] and last["fitness"] is not None and last["reference_fitness"] > 0
        assert last["id"] == tracked.best_on_validation(10).id


def test_descriptors_read_evidence_and_balance():
    bm25 = {"c": {"recall@100": 0.5, "ndcg@10": 0.4}}
    recall_heavy = {"c": {"recall@100": 0.6, "ndcg@10": 0.4}}
    assert balance(bm25, bm25) == 0.0 and balance(recall_heavy, bm25) == pytest.approx(0.2)
    assert balance(bm25, None) is None
    prox = "def score(query, index, state):\n    d, p = index.positions(query.term_ids[0])\n    return p\n"
    feats = describe(prox, bm25, bm25)
    assert feats["evidence"] == 1.0 and feats["evidence_kinds"] == ["positions"] and feats["balance"] == 0.0


def test_work_estimate_orders_programs_by_what_score_reads_per_query():
    from evorank.evaluators.program.source import program_path
    from evorank.evolve.engine.evidence import LOOP_WORK, QUERY_WORK, query_work

    bm25 = program_path("bm25").read_text(encoding="utf-8")
    assert query_work(bm25) == 1.0
    # what prepare reads is paid once, not per query
    prepared = "def prepare(index):\n    return index.positions(0)\n\ndef score(query, index, state):\n    return state\n"
    assert query_work(prepared) == 1.0
    # a helper that score calls counts, through the name the index has there
    positional = ("def near(idx, t):\n    return idx.positions(t)\n\n"
                  "def score(query, index, state):\n    for t in query.term_ids:\n        near(index, t)\n"
                  "    return index.field('title').term_doc\n")
    assert query_work(positional) == (1.0 + QUERY_WORK["positions"] + QUERY_WORK["fields"] + QUERY_WORK["postings"]
                                      + LOOP_WORK)
    assert query_work("def score(query, index, state) return") == 1.0  # does not parse


def test_measured_latency_or_a_model_makes_a_run_not_reproducible():
    from evorank.evolve.config import RunConfig, not_reproducible

    assert not_reproducible(RunConfig(llm="offline")) == []
    assert not_reproducible(RunConfig(llm="offline", fitness="robust")) == []
    assert "latency-aware" in " ".join(not_reproducible(RunConfig(llm="offline", fitness="latency-aware")))
    grid = RunConfig(llm="offline", descriptors=["evidence", "latency_ratio"])
    assert "latency_ratio" in " ".join(not_reproducible(grid))
    assert "chat models" in " ".join(not_reproducible(RunConfig(llm="gpt-4o-mini")))
