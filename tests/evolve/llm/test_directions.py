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


def test_the_shipped_directions_are_the_documented_ones():
    assert tuple(DIRECTIONS) == shipped_directions() == (
        "saturation", "idf", "smoothing", "proximity", "phrase", "fields", "variants", "feedback", "coordination",
        "prior")
    for d in DIRECTIONS.values():
        assert d.text.count("```python\n") == 2 and d.code and "def score(query, index, state):" in d.example, d.name
        assert "def prepare(" not in d.code and "def score(" not in d.code, d.name


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_a_directions_helpers_and_their_use_run_as_a_program_and_change_the_ranking(name, titled_topics):
    """The BM25 seed with its block replaced by the helpers and the complete prepare and score passes the static
    checks and gives finite-or--inf float scores for every query, different from BM25's for some."""
    seed = load_program("bm25")
    source = split_block(seed.source).join(DIRECTIONS[name].program_block)
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
    assert changed, f"{name}: the direction's program never changed a ranking"


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
    assert f"# The direction for this proposal: {name}\n" in first_prompt
    assert DIRECTIONS[name].code in first_prompt and DIRECTIONS[name].example in first_prompt
    assert "call them by name and do NOT copy them into your answer" in first_prompt
    other = {"fields": "phrase", "phrase": "fields"}[name]
    assert f"direction for this proposal: {other}" not in first_prompt


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
    assert "direction for this proposal" not in prompt and "direction" not in programs(cfg.out)[1].features
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
    assert p.status == "accepted", (p.failure_reason, p.failure_detail)
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
    call = "def prepare(index):\n    return bm25f_weights(index)\n"
    with FakeOpenAI([fenced(helper, (100, 20)), fenced(call, (100, 20))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2,
                          operator_mix={"full": 1.0}, repair_rounds=1, directions="fields")
        run_engine(cfg, tiny_collection)
        ask = srv.requests[1]["body"]["messages"][-1]["content"]
    progs = programs(cfg.out)
    assert progs[1].status == "failed" and progs[1].failure_reason == "no_change"
    assert "only adds bm25f_weights, which score and prepare never call" in progs[1].failure_detail
    assert "call bm25f_weights from prepare or score" in ask
    assert progs[2].operator == "repair" and progs[2].status == "accepted", (progs[2].failure_reason,
                                                                             progs[2].failure_detail)
    assert "def bm25f_weights" in progs[2].code and "return bm25f_weights(index)" in progs[2].code


def test_scores_made_by_a_bincount_are_float_even_for_a_query_matching_nothing():
    """numpy's bincount of nothing is int64 whatever the weights, and ``scores += <floats>`` on it raises (for
    instance on a query of nfcorpus without a vocabulary term). Every line of the directions' programs that makes
    ``scores`` from a bincount asks for float64."""
    empty = np.bincount(np.zeros(0, dtype=np.int32), weights=np.zeros(0), minlength=3)
    assert empty.dtype == np.int64  # the trap, as numpy has it
    lines = [line.strip() for d in DIRECTIONS.values() for line in d.example.splitlines()
             if re.match(r"scores = np\.bincount\(", line.strip())]
    assert len(lines) >= 5
    for line in lines:
        assert line.endswith(".astype(np.float64, copy=False)"), line
