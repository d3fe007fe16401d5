"""The paper suites' kinds of collection, read through ir_datasets from its own on-disk layout without the network
(``irds_fixtures``), and evorank's metrics on them against a hand computation under each benchmark's official
rules: BRIGHT's excluded documents (a document excluded for one question counts for another), its long documents
judged by ``gold_ids_long``, a reasoning text as the query, BEIR CQADupStack, and TREC DL 2019 (graded nDCG over
every grade, recall and MAP at grade >= 2).

ir_datasets fixes its paths when it is imported, so the collections are read in one fresh process with its own
IR_DATASETS_HOME and evorank cache; it prints per-query metrics, which are checked here."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import irds_fixtures

ADDRESSES = ["bright/biology", "bright/biology-long", "bright/biology@gpt4_reason", "beir/cqadupstack/english",
             "msmarco-passage/trec-dl-2019/judged"]

DRIVER = r'''
import json, sys
from evorank.evaluators.availability import collection_availability
from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.parallel import evaluate_programs_sandboxed
from evorank.evaluators.program.source import compile_program

source, addresses = open(sys.argv[1]).read(), sys.argv[2:]
out = {"before": {a: collection_availability(a, counts=False).status for a in addresses}}
topics = [load_topics(a) for a in addresses]
program = compile_program(source, name="match_count")
for k in (1000, 2):
    out[f"k{k}"] = {}
    for t in topics:
        res, ranking = evaluate_on(program, t, k=k)
        out[f"k{k}"][t.name] = {"per_query": {m: v.tolist() for m, v in res.per_query.items()},
                                "queries": [q.id for q in t.queries], "texts": [q.text for q in t.queries],
                                "excluded": res.excluded, "removed": res.excluded_ranked, "depth": t.depth(k),
                                "ranked": [len(d) for d in ranking.doc_idx], "index": str(t.index.path)}
suite = evaluate_programs_sandboxed([("match_count", source, True)], addresses, topics=topics, n_workers=1)[0]
out["sandboxed"] = {"json": suite.to_json(), "per_query": {c.name: {m: v.tolist() for m, v in c.per_query.items()}
                                                           for c in suite.collections}}
out["after"] = {a: collection_availability(a, counts=False).status for a in addresses}
print(json.dumps(out))
'''


def ndcg(grades_in_rank_order: list[int], all_grades: list[int]) -> float:
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades_in_rank_order[:10]))
    ideal = sorted((g for g in all_grades if g > 0), reverse=True)[:10]
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def by_hand() -> dict[str, dict[str, list[float]]]:
    """Per-query metrics of the match-count program (``irds_fixtures.MATCH_COUNT_PROGRAM``), worked out from the
    fixtures: documents are ranked by how many distinct query terms they contain, then in corpus order."""
    third = 1 / math.log2(3)
    return {
        # q0 "alpha beta" ranks b1, b2, b0; b1 is excluded for q0, so its gold b2 is first. q1 "alpha" ranks b0, b1,
        # b2: b1, excluded for q0, is q1's gold, at rank 2. q2 "zeta" ranks b3, b4, b5; both excluded, gold b5 first.
        "bright/biology": {"ndcg@10": [1.0, third, 1.0], "recall@100": [1.0, 1.0, 1.0], "map@1000": [1.0, 0.5, 1.0]},
        # long documents L0 "alpha beta gamma", L1 "alpha", L2 "zeta omega", judged by gold_ids_long (L1, L0, L2);
        # the excluded ids name short passages, which are not in this corpus
        "bright/biology-long": {"ndcg@10": [third, 1.0, 1.0], "recall@100": [1.0, 1.0, 1.0],
                                "map@1000": [0.5, 1.0, 1.0]},
        # GPT-4's reasoning as the query: "gamma" finds only b2 (q0's gold; q1's gold b1 is missed), "omega zeta"
        # ranks b5, b3, b4, whose exclusions leave b5 first
        "bright/biology@gpt4_reason": {"ndcg@10": [1.0, 0.0, 1.0], "recall@100": [1.0, 0.0, 1.0],
                                       "map@1000": [1.0, 0.0, 1.0]},
        # q1 "python list" ranks c0 (title python, text list sort), c1 "list", c2 "python": gold c2 third
        "beir/cqadupstack/english": {"ndcg@10": [0.5, 1.0], "recall@100": [1.0, 1.0], "map@1000": [1 / 3, 1.0]},
        # 1001 "cat dog" ranks p0, p4 (both terms), p1, p2: grades 1, 2, 3, 0; relevant (>= 2): p4 and p1.
        # 1002 "fish" ranks p2, p3, p4: grades 1, 2, 0; relevant: p3. 1004 has only a grade 1: not evaluated.
        "msmarco-passage/trec-dl-2019/judged": {
            "ndcg@10": [ndcg([1, 2, 3, 0], [1, 3, 2, 0]), ndcg([1, 2, 0], [2, 1, 0])],
            "recall@100": [1.0, 1.0], "map@1000": [(1 / 2 + 2 / 3) / 2, 1 / 2]},
    }


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("paper")
    home = root / "irds"
    irds_fixtures.write_all(home)
    program = root / "match_count.py"
    program.write_text(irds_fixtures.MATCH_COUNT_PROGRAM)
    env = dict(os.environ, IR_DATASETS_HOME=str(home), EVORANK_CACHE=str(root / "cache"), TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(program), *ADDRESSES], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_read_offline_from_ir_datasets_own_layout(measured):
    assert measured["before"] == dict.fromkeys(ADDRESSES, "available")
    assert measured["after"] == dict.fromkeys(ADDRESSES, "indexed")
    k = measured["k1000"]
    assert k["bright/biology"]["texts"] == ["alpha beta", "alpha", "zeta"]  # the plain id: BRIGHT's raw questions
    assert k["bright/biology@gpt4_reason"]["texts"] == ["gamma", "gamma", "omega zeta"]
    assert k["bright/biology@gpt4_reason"]["index"] == k["bright/biology"]["index"]  # one index for every field
    assert k["bright/biology-long"]["index"] != k["bright/biology"]["index"]
    assert k["msmarco-passage/trec-dl-2019/judged"]["queries"] == ["1001", "1002"]


@pytest.mark.parametrize("path", ["k1000", "k2", "sandboxed"])
def test_metrics_equal_the_hand_computation(measured, path):
    """In process with k = 1000, in the sandbox, and with k = 2 on bright/biology (q2 ranks b3, b4, b5: without
    ranking 2 + 2 documents, its two exclusions would leave nothing of a top 2)."""
    expected = by_hand()
    for address in ADDRESSES if path != "k2" else ["bright/biology"]:
        got = measured["sandboxed"]["per_query"][address] if path == "sandboxed" else \
            measured[path][address]["per_query"]
        for metric, values in expected[address].items():
            assert got[metric] == pytest.approx(values, abs=1e-12), (path, address, metric)


def test_exclusions_are_counted_and_deepen_the_ranking(measured):
    k = measured["k1000"]
    counts = {a: (k[a]["excluded"], k[a]["removed"], k[a]["depth"]) for a in ADDRESSES}
    assert counts == {"bright/biology": (3, 3, 1002), "bright/biology-long": (0, 0, 1000),
                      "bright/biology@gpt4_reason": (3, 2, 1002), "beir/cqadupstack/english": (0, 0, 1000),
                      "msmarco-passage/trec-dl-2019/judged": (0, 0, 1000)}
    assert measured["k2"]["bright/biology"]["ranked"] == [3, 3, 3] and measured["k2"]["bright/biology"]["depth"] == 4
    rows = {c["name"]: c["excluded_documents"] for c in measured["sandboxed"]["json"]["collections"]}
    assert rows["bright/biology"] == {"judged": 3, "removed_from_rankings": 3}
    assert rows["beir/cqadupstack/english"] == {"judged": 0, "removed_from_rankings": 0}
