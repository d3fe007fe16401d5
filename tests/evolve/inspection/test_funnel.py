"""What a run's model-written proposals came to (evolve/inspection/funnel.py, bench/llm_funnel.py), on archives built
by hand: a near-copy of the program a prompt showed (with an unused line and an unused helper), a no-op that adds
one constant to every document, one that differs from its start only at the tail of its ranking, a no-op found on
the query sample, and a real change that improves its start."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evorank.archive import ProgramRecord, RunStore, essential_code
from evorank.evaluators.program.source import seed_path, split_block
from evorank.evaluators.cascade import metrics_alike
from evorank.evolve.inspection.funnel import classify_run, funnel_summary, shown_programs

REPO = Path(__file__).resolve().parents[3]
BM25 = seed_path("bm25").read_text(encoding="utf-8")
RETURN = "    return np.where(matched, scores, -np.inf)"
METRICS = {"a": {"ndcg@10": 0.31, "recall@100": 0.52, "recall@1000": 0.71, "map@1000": 0.1627914955},
           "b": {"ndcg@10": 0.64, "recall@100": 0.90, "recall@1000": 0.97, "map@1000": 0.61}}

# the example program a prompt of the old style showed with its direction: helpers, then a complete prepare and score
EXAMPLE = '''def length_prior(index):
    """Per document: log(1 + number of distinct terms), scaled to mean 1."""
    distinct = np.diff(index.doc_term.indptr).astype(np.float64)
    prior = np.log1p(distinct)
    return prior / max(prior.mean(), 1e-9)

def prepare(index):
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    norm = 0.9 * (1.0 - 0.4 + 0.4 * index.doc_len / index.avg_doc_len)
    weights = np.repeat(idf, np.diff(td.indptr)) * td.data / (td.data + norm[td.indices])
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape), length_prior(index)

def score(query, index, state):
    weights, prior = state
    rows = weights[query.term_ids]
    scores = np.bincount(rows.indices, weights=rows.data, minlength=index.n_docs).astype(np.float64)
    return scores + 0.1 * prior
'''


def prompt_showing(parent_code: str) -> str:
    helpers, program = EXAMPLE.split("\ndef prepare")
    return (f"# Objective\nMaximise.\n\n# The program to improve (program 1)\n```python\n{parent_code}\n```\n\n"
            f"# The direction for this proposal: prior\nA prior.\n```python\n{helpers}\n```\nUsed in a complete "
            f"program:\n```python\ndef prepare{program}```\n\n# Your task\nDo it.\n")


def near_copy_of_example() -> str:
    """The example program with a comment, another layout, an unused line and an unused helper: a copy."""
    block = EXAMPLE.replace("    weights, prior = state\n", "    weights, prior = state  # the prior\n"
                                                                "    unused = np.log1p(index.doc_len)\n")
    block = "def never_called(x):\n    return x * 2\n\n\n" + block.replace("def score(", "\n\ndef score(")
    return split_block(BM25).join(block)


def build(tmp_path: Path, with_validation: bool = True) -> Path:
    run = tmp_path / "run"
    store = RunStore.create(run, {"max_tokens": 800}, 0)
    seed = ProgramRecord(code=BM25, operator="seed", island=0, generation=0, iteration=0, metrics=METRICS,
                         fitness=0.5, features={"seed_name": "bm25", "val_fitness": 0.48})
    store.add_program(seed)
    prompt = prompt_showing(BM25)

    def add(iteration, code, *, status="accepted", metrics=None, fitness=None, operator="diff", parent=seed,
            reason=None, tokens=(4000, 300), features=None, prompt=prompt):
        rec = ProgramRecord(code=code, operator=operator, island=0, generation=1, iteration=iteration,
                            parent_ids=(parent.id,), status=status, failure_reason=reason, metrics=metrics or {},
                            fitness=fitness, model="m", prompt=prompt, response="idea", prompt_tokens=tokens[0],
                            completion_tokens=tokens[1], started_at=1000.0 * iteration,
                            features={"direction": "prior", **(features or {})})
        store.add_program(rec)
        return rec

    add(1, near_copy_of_example(), metrics={"a": {**METRICS["a"], "ndcg@10": 0.33}, "b": METRICS["b"]},
        fitness=0.51)
    # one constant added to every document, -inf ones included: the same top, a few documents more at the tail
    shifted = {"a": {**METRICS["a"], "map@1000": 0.16279146588, "recall@1000": 0.7103}, "b": dict(METRICS["b"])}
    add(2, BM25.replace(RETURN, "    return scores + 0.3"), metrics=shifted, fitness=0.5)
    # a change seen only at the tail of the ranking (ranks 101..1000)
    add(3, BM25.replace("B = 0.4", "B = 0.41"), metrics={"a": {**METRICS["a"], "recall@1000": 0.7095},
                                                         "b": METRICS["b"]}, fitness=0.5)
    # a no-op the evaluator found on the query sample: archived as duplicate, reason no_op, never fully evaluated
    add(4, BM25.replace("K1 = 0.9", "K1 = 0.9 * 1.0 + 0.0"), status="duplicate", reason="no_op")
    # a real change, which fails first and then improves its start in a repair
    cut = add(5, BM25, status="failed", reason="truncated", tokens=(4000, 800))
    better = {"a": {**METRICS["a"], "ndcg@10": 0.35, "recall@100": 0.55}, "b": METRICS["b"]}
    add(6, BM25.replace(RETURN, "    return np.where(matched, scores + 0.2 * np.log1p(index.doc_len), -np.inf)"),
        operator="repair", parent=cut, metrics=better, fitness=0.52,
        features={"val_fitness": 0.485} if with_validation else None)
    # given back unchanged: refused before evaluation
    add(7, BM25, status="failed", reason="no_change")
    store.close()
    return run


def test_essential_code_leaves_out_what_nothing_uses_and_keeps_what_ranks():
    block = split_block(near_copy_of_example()).block
    assert essential_code(block) == essential_code(EXAMPLE)
    assert essential_code(EXAMPLE.replace("0.1 * prior", "0.2 * prior")) != essential_code(EXAMPLE)
    assert essential_code(BM25) == essential_code(split_block(BM25).block) != essential_code(EXAMPLE)
    assert essential_code("def score(:\n") is None


def test_metrics_alike_allows_tail_noise_only():
    assert metrics_alike(METRICS, {"a": {**METRICS["a"], "map@1000": 0.16279146588}, "b": METRICS["b"]})
    assert metrics_alike(METRICS, {"a": {**METRICS["a"], "recall@1000": 0.7103}, "b": METRICS["b"]})
    assert not metrics_alike(METRICS, {"a": {**METRICS["a"], "ndcg@10": 0.3101}, "b": METRICS["b"]})
    assert not metrics_alike(METRICS, {"a": METRICS["a"]}) and not metrics_alike({}, {})


def test_shown_programs_are_read_back_from_the_prompt_one_per_section():
    shown = shown_programs(prompt_showing(BM25))
    assert len(shown) == 2  # the parent, and the direction's helpers with its example (one section)
    assert "K1 = 0.9" in shown[0] and "def length_prior" in shown[1] and "def score" in shown[1]
    # a line starting with '#' inside a code fence is a comment, not a section
    assert len(shown_programs("# A\n```python\n# comment\ndef score(q):\n    return 1\n```\n")) == 1
    assert shown_programs(None) == [] and shown_programs("no code") == []


def test_each_program_is_a_copy_a_no_op_an_idea_or_a_failure(tmp_path):
    with RunStore.open(build(tmp_path), readonly=True) as store:
        kinds = {c.program.iteration: c.kind for c in classify_run(store.programs())}
    assert kinds == {1: "copy", 2: "no_op", 3: "no_op", 4: "no_op", 5: "failed", 6: "idea", 7: "copy"}


def test_the_summary_counts_chains_by_their_best_program_and_says_what_each_idea_gained(tmp_path):
    with RunStore.open(build(tmp_path), readonly=True) as store:
        s = funnel_summary(store.programs(), max_tokens=800)
    assert (s["chains"], s["clean"], s["ideas"], s["no_ops"], s["copies"], s["failed"], s["improved"]) == (
        6, 5, 1, 3, 2, 0, 1)
    [idea] = s["idea_list"]
    assert idea["id"] == 7 and idea["chain"] == 6 and idea["start"] == 1 and idea["improved"]  # ids: seed is 1
    assert idea["delta"] == pytest.approx(0.02) and idea["relative"] == pytest.approx(0.04)
    assert idea["val_delta"] == pytest.approx(0.005) and idea["direction"] == "prior"
    assert s["requests"] == 7 and s["cut_off"] == 1 and s["prompt_tokens_per_request"] == 4000
    assert s["by_direction"] == {"prior": {"chains": 6, "ideas": 1}}
    with RunStore.open(build(tmp_path / "part"), readonly=True) as store:
        part = funnel_summary(store.programs(), max_tokens=800, since_iteration=5)  # the chains of iterations 5, 7
    assert (part["chains"], part["ideas"], part["requests"]) == (2, 1, 3)


def test_the_bench_prints_the_funnel_as_json_and_as_text(tmp_path):
    run = build(tmp_path, with_validation=False)
    out = subprocess.run([sys.executable, str(REPO / "bench" / "llm_funnel.py"), str(run), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {k: data[k] for k in ("chains", "clean", "copies", "no_ops", "ideas", "improved")} == {
        "chains": 6, "clean": 5, "copies": 2, "no_ops": 3, "ideas": 1, "improved": 1}
    # the idea (#7) is the repair of chain #6's fresh proposal: counted where it was asked
    assert (data["fresh"]["ideas"], data["repairs"]["ideas"]) == (0, 1)
    text = subprocess.run([sys.executable, str(REPO / "bench" / "llm_funnel.py"), str(run)], capture_output=True,
                          text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "6: 1 ended in an idea (17%), 3 in a no-op, 2 in a copy, 0 failed" in text.stdout
    assert "idea #7 (chain #6, diff, prior): train +0.0200 (+4.00%) vs #1" in text.stdout
    part = subprocess.run([sys.executable, str(REPO / "bench" / "llm_funnel.py"), str(run), "--json",
                           "--since-iteration", "5"], capture_output=True, text=True, timeout=60)
    assert part.returncode == 0, part.stderr
    assert json.loads(part.stdout)["chains"] == 2 and json.loads(part.stdout)["proposals"] == 3


def test_a_program_that_ranks_as_an_archived_program_its_prompt_showed_is_a_no_op(tmp_path):
    """Its start is BM25, but it ranks as the other program its prompt showed (an inspiration): no idea of its own."""
    store = RunStore.create(tmp_path / "run", {"max_tokens": 800}, 0)
    seed = ProgramRecord(code=BM25, operator="seed", island=0, generation=0, iteration=0, metrics=METRICS,
                         fitness=0.5, features={"seed_name": "bm25"})
    store.add_program(seed)
    other_code = BM25.replace("B = 0.4", "B = 0.75")
    theirs = {"a": {**METRICS["a"], "ndcg@10": 0.29}, "b": METRICS["b"]}
    other = ProgramRecord(code=other_code, operator="offline", island=0, generation=1, iteration=1,
                          parent_ids=(seed.id,), metrics=theirs, fitness=0.49)
    store.add_program(other)
    prompt = (f"# The program to improve (program 1)\n```python\n{BM25}\n```\n\n# Program {other.id}\n```python\n"
              f"{split_block(other_code).block}```\n\n# Your task\nDo it.\n")
    for iteration, metrics in ((2, theirs), (3, {"a": {**METRICS["a"], "ndcg@10": 0.30}, "b": METRICS["b"]})):
        store.add_program(ProgramRecord(
            code=other_code.replace(RETURN, "    scores = scores * 1.0\n" + RETURN), operator="diff", island=0,
            generation=1, iteration=iteration, parent_ids=(seed.id,), metrics=metrics, fitness=0.49, model="m",
            prompt=prompt, response="idea"))
    with RunStore.open(tmp_path / "run", readonly=True) as store_r:
        kinds = {c.program.iteration: c.kind for c in classify_run(store_r.programs())}
    store.close()
    assert kinds == {2: "no_op", 3: "idea"}  # the same metrics as the program shown; other metrics: its own ranking
