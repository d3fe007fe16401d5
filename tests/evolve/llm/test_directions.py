"""Directions (evolve/llm/directions.py): every shipped direction's helpers and the complete prepare and score that use
them run as a program on a real index and change the ranking; the draw is reproducible and covers every direction; a run's prompts carry
the direction and its repairs keep it; unknown names are refused naming the choices."""
from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import scipy.sparse as sp

from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.program.source import compile_program, load_program, split_block
from evorank.evaluators.program.checks import static_check
from evorank.evolve.config import ConfigError, RunConfig
from evorank.evolve.llm.directions import allowed, choose, parse_directions, shipped_directions
from evorank.evolve.llm.prompts import PromptTemplates, check_directions

from conftest import WORDS, write_beir

DIRECTIONS = PromptTemplates.load().directions()


@pytest.fixture(scope="module")
def titled_topics(tmp_path_factory):
    """A seeded random collection whose documents have titles, with adjacent-word queries (phrases occur)."""
    rnd = random.Random(3)
    docs = {f"d{i}": (" ".join(rnd.choices(WORDS, k=rnd.randint(1, 4))),
                      " ".join(rnd.choices(WORDS[:12], k=rnd.randint(5, 40)))) for i in range(150)}
    queries = {f"q{i}": " ".join(rnd.choices(WORDS[:12], k=rnd.randint(1, 4))) for i in range(25)}
    qrels = [(q, f"d{rnd.randrange(150)}", 1) for q in queries]
    root = tmp_path_factory.mktemp("directions")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVORANK_CACHE", str(root / "cache"))
        yield load_topics(str(write_beir(root / "coll", docs, queries, qrels)))


#: How each direction's text says to change BM25, written out: its helper (when it has one) called, or its formula in
#: place. A prompt shows no such program (small models copied it instead of adapting their parent); these check that
#: what the text offers works on a real index and changes the ranking.
BM25_PREPARE = """def prepare(index):
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    norm = 0.9 * (1.0 - 0.4 + 0.4 * index.doc_len / index.avg_doc_len)
    weights = np.repeat(idf, np.diff(td.indptr)) * td.data / (td.data + norm[td.indices])
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)
"""
BM25_SCORES = ("    rows = state[query.term_ids]\n"
               "    scores = np.bincount(rows.indices, weights=rows.data * np.repeat(query.qtf, np.diff(rows.indptr)),"
               " minlength=index.n_docs).astype(np.float64)\n")
MASK = "    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0\n"
USES = {
    "saturation": BM25_PREPARE.replace("td.data / (td.data + norm[td.indices])",
                                       "(1.9 * td.data / (td.data + norm[td.indices]) + 1.0)")
    + "def score(query, index, state):\n" + BM25_SCORES + MASK + "    return np.where(matched, scores, -np.inf)\n",
    "idf": BM25_PREPARE.replace("np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))",
                                "np.log(index.total_tokens / np.maximum(index.cf, 1))")
    + "def score(query, index, state):\n" + BM25_SCORES + MASK + "    return np.where(matched, scores, -np.inf)\n",
    "smoothing": """def prepare(index):
    td = index.term_doc
    p = np.repeat(index.cf / index.total_tokens, np.diff(td.indptr))
    dl = index.doc_len[td.indices]
    w = np.maximum(np.log1p(td.data / (1000.0 * p)) + np.log(1000.0 / (dl + 1000.0)), 0.0)
    return sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)
""" + "def score(query, index, state):\n" + BM25_SCORES + MASK + "    return np.where(matched, scores, -np.inf)\n",
    "proximity": BM25_PREPARE + "def score(query, index, state):\n" + BM25_SCORES + MASK
    + "    docs, d = min_pair_distance(query, index)\n    scores[docs] += np.log1p(np.exp(-d) / 0.3)\n"
    "    return np.where(matched, scores, -np.inf)\n",
    "phrase": BM25_PREPARE + "def score(query, index, state):\n" + BM25_SCORES + MASK
    + "    c = bigram_counts(query, index)\n    return np.where(matched, scores + 0.5 * c / (c + 1), -np.inf)\n",
    "fields": """def prepare(index):
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = field_tf(index)
    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + 0.9)
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)
""" + "def score(query, index, state):\n" + BM25_SCORES + MASK + "    return np.where(matched, scores, -np.inf)\n",
    "variants": BM25_PREPARE.replace("    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)",
                                     "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape), "
                                     "prefix_classes(index, 0)")  # (the test collection's words share no prefix:
    #                                                                    every other term is a variant of every term)
    + "def score(query, index, state):\n    state, classes = state\n" + BM25_SCORES + MASK
    + "    extra = state[variant_terms(query, classes, 0)]\n"  # the direction's lines, with the test's length 0
    "    v = 0.3 * np.bincount(extra.indices, weights=extra.data, minlength=index.n_docs)\n"
    "    scores = scores + v\n    matched = matched | (v > 0)\n"
    "    return np.where(matched, scores, -np.inf)\n",
    "feedback": BM25_PREPARE + "def score(query, index, state):\n" + BM25_SCORES + MASK
    + "    terms, w = feedback_terms(np.where(matched, scores, -np.inf), index)\n    extra = state[terms].T @ w\n"
    "    scores = scores + 0.5 * extra\n    matched = matched | (extra > 0)\n"  # the lines the direction gives
    "    return np.where(matched, scores, -np.inf)\n",
    "coordination": BM25_PREPARE + "def score(query, index, state):\n" + BM25_SCORES + MASK
    + "    m = max(len(query.term_ids), 1)\n"
    "    count = np.bincount(index.term_doc[query.term_ids].indices, minlength=index.n_docs)\n"
    "    return np.where(matched, scores + 0.5 * count / m, -np.inf)\n",
    "prior": BM25_PREPARE.replace("    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)",
                                  "    prior = np.log1p(np.diff(index.doc_term.indptr))\n"
                                  "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape), "
                                  "prior / max(prior.mean(), 1e-9)")
    + "def score(query, index, state):\n    state, prior = state\n" + BM25_SCORES + MASK
    + "    return np.where(matched, scores + 0.2 * prior, -np.inf)\n",
}


def test_the_shipped_directions_are_the_documented_ones():
    assert tuple(DIRECTIONS) == shipped_directions() == tuple(USES) == (
        "saturation", "idf", "smoothing", "proximity", "phrase", "fields", "variants", "feedback", "coordination",
        "prior")
    for d in DIRECTIONS.values():
        assert d.text.count("```python\n") <= 1 and not d.example, d.name
        assert "def prepare(" not in d.text and "def score(" not in d.text, d.name


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_a_directions_helper_and_formula_run_as_a_program_and_change_the_ranking(name, titled_topics):
    """The BM25 seed with its block replaced by the direction's helpers and its use (USES) passes the static checks
    and gives finite-or--inf float scores for every query, different from BM25's for some."""
    seed = load_program("bm25")
    source = split_block(seed.source).join(DIRECTIONS[name].code + "\n\n" + USES[name])
    static_check(source, seed.source)
    program = compile_program(source, f"direction {name}")
    index = titled_topics.index
    bm25_state, state = seed.prepare(index), program.prepare(index)
    changed = 0
    for query in titled_topics.queries:
        bm25 = np.asarray(seed.score(query, index, bm25_state), dtype=np.float64)
        scores = program.score(query, index, state)
        assert isinstance(scores, np.ndarray) and scores.shape == (index.n_docs,), (name, query.id)
        assert scores.dtype.kind == "f", (name, query.id)
        assert not np.isnan(scores).any() and not np.isposinf(scores).any(), (name, query.id)
        changed += not np.allclose(np.where(np.isinf(scores), -1e9, scores), np.where(np.isinf(bm25), -1e9, bm25))
    assert changed, f"{name}: the direction's use never changed a ranking"


@pytest.mark.parametrize("name, lines", [
    ("feedback", ("terms, w = feedback_terms(np.where(matched, scores, -np.inf), index)", "extra = state[terms].T @ w",
                  "scores = scores + 0.5 * extra", "matched = matched | (extra > 0)")),
    ("proximity", ("docs, d = min_pair_distance(query, index)", "scores[docs] += np.log1p(np.exp(-d) / 0.3)")),
    ("variants", ("state, classes = state", "v = 0.3 * np.bincount(extra.indices, weights=extra.data, "
                  "minlength=index.n_docs)", "scores = scores + v", "matched = matched | (v > 0)")),
])
def test_the_lines_a_direction_gives_for_bm25_are_the_ones_run_above(name, lines):
    text = " ".join(DIRECTIONS[name].text.split())
    assert all(line in text and line in USES[name] for line in lines)


def test_sections_parse_in_file_order_and_the_header_is_left_out():
    text = "a comment for people\n## one\nFirst.\n```python\nx = 1\n```\n\n## two\nSecond.\n"
    parsed = parse_directions(text)
    assert list(parsed) == ["one", "two"]
    assert parsed["one"].text == "First.\n```python\nx = 1\n```" and parsed["two"].text == "Second."


def test_the_draw_is_reproducible_covers_every_direction_and_depends_on_the_seed():
    names = tuple(DIRECTIONS)
    draws = [choose(names, 7, i) for i in range(1, 201)]
    assert draws == [choose(names, 7, i) for i in range(1, 201)]
    assert set(draws) == set(names)
    assert draws != [choose(names, 8, i) for i in range(1, 201)]
    assert choose((), 7, 3) is None and choose(("fields",), 7, 3) == "fields"


def test_allowed_names_and_unknown_ones_refused():
    assert allowed("all", DIRECTIONS) == tuple(DIRECTIONS) and allowed("none", DIRECTIONS) == ()
    assert allowed(" fields, proximity ", DIRECTIONS) == ("fields", "proximity")
    with pytest.raises(ValueError, match="unknown direction.*bm99.*saturation"):
        allowed("fields,bm99", DIRECTIONS)
    with pytest.raises(ConfigError, match="bm99"):
        check_directions(RunConfig(directions="bm99"))
    check_directions(RunConfig(directions="proximity,phrase"))


def test_a_run_gives_diff_proposals_a_direction_and_repairs_keep_it(tmp_path, tiny_collection, monkeypatch):
    from fake_openai import FakeOpenAI
    from run_helpers import make_config, run_engine
    from run_helpers import FIX, RAISES, programs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([RAISES, FIX]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2, seed=5,
                          operator_mix={"diff": 1.0}, repair_style="fix", repair_rounds=1, directions="fields,phrase")
        run_engine(cfg, tiny_collection)
        first_prompt = srv.requests[0]["body"]["messages"][-1]["content"]
    progs = programs(cfg.out)
    name = choose(("fields", "phrase"), 5, progs[1].iteration)
    assert progs[1].features["direction"] == name and progs[2].features["direction"] == name
    assert f"Apply this idea to the program to improve ({name}):\n{DIRECTIONS[name].text.strip()}" in first_prompt
    other = {"fields": "phrase", "phrase": "fields"}[name]
    assert f"to improve ({other})" not in first_prompt


def test_no_direction_leaves_the_prompt_without_one(tmp_path, tiny_collection, monkeypatch):
    from fake_openai import FakeOpenAI
    from run_helpers import make_config, run_engine
    from run_helpers import FIX, programs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([FIX]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=1,
                          operator_mix={"diff": 1.0}, repair_rounds=0, directions="none")
        run_engine(cfg, tiny_collection)
        prompt = srv.requests[0]["body"]["messages"][-1]["content"]
    assert "Apply this idea" not in prompt and "direction" not in programs(cfg.out)[1].features
    assert "$direction" not in prompt and "\n\n\n# Your task" not in prompt


def test_a_reply_that_calls_the_directions_helper_without_copying_it_gets_it(tmp_path, tiny_collection,
                                                                              monkeypatch):
    """The direction's helpers are the first donors of name repair: a candidate calling min_pair_distance without
    its def is evaluated with the direction's definition added, runs, and says so."""
    from evorank.evolve.proposal import TRUSTED_EDITS_FEATURE
    from fake_openai import FakeOpenAI
    from run_helpers import diff, make_config, run_engine
    from run_helpers import programs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    line = "    scores = rows.T @ query.qtf.astype(np.float32)"
    reply = diff(line, line + "\n    docs, delta = min_pair_distance(query, index)\n"
                 "    scores[docs] += np.log1p(np.exp(-delta) / 0.3)", (100, 20))
    with FakeOpenAI([reply]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=1,
                          operator_mix={"diff": 1.0}, repair_rounds=0, directions="proximity")
        run_engine(cfg, tiny_collection)
    p = programs(cfg.out)[1]
    # it ran (on the tiny collection proximity moves no document: it ranks as its parent, a no-op)
    assert p.status == "accepted" or p.failure_reason == "no_op", (p.failure_reason, p.failure_detail)
    assert p.features[TRUSTED_EDITS_FEATURE] == "defined min_pair_distance from direction proximity (function)"
    assert DIRECTIONS["proximity"].code.strip() in p.code


def test_a_reply_that_copies_the_helper_but_never_calls_it_is_no_change_and_asked_to_call_it(tmp_path,
                                                                                              tiny_collection,
                                                                                              monkeypatch):
    """Nothing is evaluated for a program that would rank as its parent; the repair in the same conversation says
    which function nothing calls; a repair that calls it runs."""
    from fake_openai import FakeOpenAI
    from run_helpers import make_config, run_engine
    from run_helpers import fenced, programs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    helper = DIRECTIONS["fields"].code
    call = USES["fields"].split("def score")[0]
    with FakeOpenAI([fenced(helper, (100, 20)), fenced(call, (100, 20))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2,
                          operator_mix={"full": 1.0}, repair_rounds=1, directions="fields")
        run_engine(cfg, tiny_collection)
        ask = srv.requests[1]["body"]["messages"][-1]["content"]
    progs = programs(cfg.out)
    assert progs[1].status == "failed" and progs[1].failure_reason == "no_change"
    assert "only adds field_tf, which score and prepare never call" in progs[1].failure_detail
    assert "call field_tf from prepare or score" in ask
    assert progs[2].operator == "repair" and (progs[2].status == "accepted" or progs[2].failure_reason == "no_op"), (
        progs[2].failure_reason, progs[2].failure_detail)  # it ran (BM25F ranks the tiny collection as BM25 does)
    assert "def field_tf" in progs[2].code and "tf = field_tf(index)" in progs[2].code
