"""evorank explain: a program's parts are found in its syntax tree, each is taken out, and what each adds is
measured in the sandbox; on constructed programs whose parts have known effects."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_beir
from evorank.evaluators.program.source import seed_path, split_block
from evorank.evaluators.program.parts import parts
from evorank.evolve.inspection.explain import Subject, explain

BM25 = seed_path("bm25").read_text(encoding="utf-8")
REPO = Path(__file__).resolve().parents[3]
RETURN = "    return np.where(matched, scores, -np.inf)\n"


def with_channels(source: str, *lines: str) -> str:
    """BM25 with statements added to ``score`` just before its return."""
    return source.replace(RETURN, "".join(f"    {x}\n" for x in lines) + RETURN)


# a channel that adds the same amount to every document (the ranking cannot change), one that cancels the
# scores (every retrieved document ties: the ranking falls back to document order), and a changed constant
CONSTANT = "scores = scores + 0.7 * np.ones(index.n_docs)"
ZEROING = "scores = scores + -1.0 * scores"
PROGRAM = with_channels(BM25.replace("K1 = 0.9", "K1 = 1.4"), CONSTANT, ZEROING)


def test_parts_are_read_from_the_syntax_tree():
    found = {p.name: p for p in parts(PROGRAM, BM25)}
    assert [p.kind for p in found.values()] == ["constant", "channel", "channel"]
    assert "K1" in found and found["K1"].detail == "1.4 (seed: 0.9)"
    assert "K1 = 0.9" in found["K1"].ablated and CONSTANT in found["K1"].ablated
    for p in found.values():
        assert split_block(p.ablated).head == split_block(PROGRAM).head
        assert split_block(p.ablated).tail == split_block(PROGRAM).tail
    constant, zeroing = [p for p in found.values() if p.kind == "channel"]
    assert "0.7 * np.ones" not in constant.ablated and "-1.0 * scores" in constant.ablated
    assert "-1.0 * scores" not in zeroing.ablated
    assert parts(BM25, BM25) == []


def test_a_formula_change_and_the_retrieved_set_it_widens_go_together():
    program = BM25.replace("    scores = rows.T @ query.qtf.astype(np.float32)",
                           "    scores = np.sqrt(rows.T @ query.qtf.astype(np.float32))")
    program = with_channels(program, "extra = np.zeros(index.n_docs)", "scores = scores + 0.1 * extra",
                            "matched = matched | (extra > 0)")
    found = parts(program, BM25)
    assert [(p.kind, p.name) for p in found] == [("formula", "score: scores"), ("channel", "score: + 0.1 * extra")]
    assert "np.sqrt" not in found[0].ablated and "matched | (extra > 0)" in found[0].ablated
    assert "matched | (extra > 0)" not in found[1].ablated and "extra = np.zeros" in found[1].ablated


@pytest.fixture
def collection(tmp_path, cache_dir):
    """24 two-word queries; each has three relevant documents that repeat both words, after (in document order)
    six that mention one of them among other words: BM25 ranks the relevant ones first, document order last."""
    words = [f"{a}{b}" for a in "bcdfgh" for b in "aeiou"]
    docs, queries, qrels = {}, {}, []
    for q in range(24):
        a, b = words[q], words[(q + 7) % len(words)]
        for k in range(6):
            docs[f"n{q}_{k}"] = " ".join([a if k % 2 else b] + words[(q + 2 * k + 9) % len(words):][:8])
        for k in range(3):
            docs[f"r{q}_{k}"] = f"{a} {b} {a} {b} " + words[(q + k + 13) % len(words)]
            qrels.append((f"q{q}", f"r{q}_{k}", 1))
        queries[f"q{q}"] = f"{a} {b}"
    return str(write_beir(tmp_path / "c", docs, queries, qrels))


def test_explain_measures_each_part_in_the_sandbox(collection):
    data = explain(Subject("constructed", PROGRAM, "bm25", BM25), [collection], n_workers=2)
    by_name = {p["name"]: p for p in data["parts"]}
    constant = next(p for p in data["parts"] if "np.ones" in p["detail"])
    zeroing = next(p for p in data["parts"] if "-1.0 * scores" in p["detail"])
    for m in ("ndcg@10", "recall@100"):
        assert constant["contribution"][collection][m] == 0.0  # the same ranking with or without it
    assert zeroing["contribution"][collection]["ndcg@10"] < -0.05  # cancelling the scores costs most of it
    assert zeroing["contribution"]["mean"]["fitness"] < 0
    # paired tests on the same queries: the part that changes nothing is not significant, the one that cancels the
    # scores is, per collection (Holm) and pooled
    assert constant["tests"]["collections"][collection]["ndcg@10"]["p_randomization"] == 1.0
    assert zeroing["tests"]["collections"][collection]["ndcg@10"]["p_holm"] < 0.05
    assert zeroing["tests"]["pooled"]["ndcg@10"]["verdict"] == "worse"
    assert by_name["K1"]["contribution"] is not None and not by_name["K1"]["failure"]
    # without the zeroing channel the ranking is BM25's with K1 = 1.4 and a constant: the parts add up here
    gain = data["gain_over_seed"][collection]["ndcg@10"]
    assert gain == pytest.approx(zeroing["contribution"][collection]["ndcg@10"]
                                 + by_name["K1"]["contribution"][collection]["ndcg@10"], abs=0.02)
    assert len(data["full"]["per_query"][collection]["ndcg@10"]) == 24


def test_explain_command_on_a_run_program(tmp_path, collection):
    """RUN:best: the lineage's seed, the run's suite by default, each lineage step."""
    from evorank.archive import ProgramRecord, RunStore
    from evorank.evolve.engine.descriptors import grid_for

    run = tmp_path / "run"
    store = RunStore.create(run, {"datasets": [collection], "best_of": 10}, 0, grid=grid_for(["evidence"], [256.0],
                                                                                              [2.0]), n_islands=1)
    seed = ProgramRecord(BM25, "seed", 0, 0, 0, fitness=0.5, features={"seed_name": "bm25", "evidence": 0.0})
    store.add_program(seed)
    step = BM25.replace("K1 = 0.9", "K1 = 1.4")
    child = ProgramRecord(step, "offline", 0, 1, 1, parent_ids=(seed.id,), fitness=0.6, features={"evidence": 0.0})
    store.add_program(child)
    best = ProgramRecord(with_channels(step, ZEROING), "offline", 0, 2, 2, parent_ids=(child.id,), fitness=0.7,
                         features={"evidence": 0.0})
    store.add_program(best)
    store.close()
    out = subprocess.run([sys.executable, "-m", "evorank", "explain", f"{run}:best", "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["collections"] == [collection] and data["seed"] == "seed bm25"
    assert [s["id"] for s in data["lineage"]] == [seed.id, child.id, best.id]
    assert data["lineage"][0]["change"] is None and data["lineage"][2]["change"][collection]["ndcg@10"] < -0.05
    assert "per_query" not in data["full"]


def test_explain_prints_each_part_and_step(capsys):
    from evorank.evolve.inspection.explain import print_explain

    change = {"c": {"ndcg@10": 0.1, "recall@100": -0.02, "fitness": 0.0}, "mean": {"ndcg@10": 0.1,
                                                                                  "recall@100": -0.02, "fitness": 0.0}}
    data = {"program": "runs/x:best (#3)", "seed": "seed bm25", "collections": ["c"], "metrics": ["ndcg@10", "recall@100"],
            "gain_over_seed": change, "elapsed_s": 1.0,
            "parts": [{"name": "[red]K1\x1b[2J", "kind": "constant", "detail": "1.4 (seed: 0.9)", "failure": None,
                       "contribution": change,
                       "tests": {"alpha": 0.05, "pooled": {"ndcg@10": {"p_randomization": 0.01, "p_holm": None}},
                                 "collections": {"c": {"ndcg@10": {"p_randomization": 0.01, "p_holm": 0.03},
                                                       "recall@100": {"p_randomization": 0.2, "p_holm": 0.2}}}}}],
            "lineage": [{"id": 1, "operator": "seed", "failure": None, "change": None},
                        {"id": 3, "operator": "offline", "failure": None, "change": change}]}
    print_explain(data)
    out = capsys.readouterr().out
    assert "[red]K1" in out and "\x1b" not in out  # a program's text is shown, never read as markup or escapes
    assert "+0.1000* -0.0200" in out and "(start)" in out and "#3" in out
