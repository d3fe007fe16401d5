"""Repair rounds, cut-off replies, and attempts that never reach the model, against the scripted server.

A repair is a follow-up request in the same conversation after a proposal failed; it is archived as its own
proposal (operator `repair`, parent the failed one, its own tokens). Attempts that reach no model are not
proposals: nothing is archived, and too many in a row stop the run (resumably, non-zero exit)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from evorank.archive import RunStore
from evorank.evaluators.program.source import load_program, split_block
from evorank.evolve.cli.main import main

from fake_openai import FakeOpenAI
from run_helpers import (FIX, FIX_NAN, NAN_SCORES, RAISES, REPO, RETURN, diff, fenced, make_config, prior, programs,
                         run_engine)

# changes that rank unlike the seed, unlike prior(0.1) and unlike each other on top of any of them
LESS_LENGTH = diff("    scores = rows.T @ query.qtf.astype(np.float32)",
                   "    scores = rows.T @ query.qtf.astype(np.float32) - 0.5 * index.doc_len", (10, 5))
REVERSED = diff("    matched = rows.T", "    scores = -scores\n    matched = rows.T", (10, 5))


def test_a_failed_program_is_repaired_in_the_same_conversation(tmp_path, tiny_collection, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([NAN_SCORES, FIX_NAN]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="fake-a,fake-b", base_url=srv.url, iterations=2,
                          operator_mix={"diff": 1.0}, repair_style="fix", repair_rounds=1,
                          prices={"*": {"input": 1.0, "output": 2.0}})
        engine, best = run_engine(cfg, tiny_collection)
        requests = [r["body"] for r in srv.requests]
    progs = programs(cfg.out)
    failed, repair = progs[1], progs[2]
    assert failed.operator == "diff" and failed.status == "failed"
    assert failed.failure_reason == "invalid_scores:nan", failed.failure_detail
    assert repair.operator == "repair" and repair.status == "accepted", (repair.failure_reason, repair.failure_detail)
    assert repair.parent_ids == (failed.id,) and "+ 0.5 * index.doc_len" in repair.code
    assert (repair.prompt_tokens, repair.completion_tokens) == (300, 15)
    assert repair.cost_usd == pytest.approx((300 * 1.0 + 15 * 2.0) / 1e6)
    assert engine.stats.repairs == 1 and engine.stats.prompt_tokens == 400 and engine.proposals_done()[0] == 2
    # the follow-up continues the conversation with the same model: the reply, then what went wrong
    first, second = requests
    assert second["model"] == first["model"] and second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": NAN_SCORES["content"]}
    ask = second["messages"][3]["content"]
    assert second["messages"][3]["role"] == "user" and ask == repair.prompt
    assert "could not be used: invalid_scores:nan" in ask and "* np.nan" in ask
    # inspection shows the operator like any other
    assert main(["top", cfg.out, "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert any(r["operator"] == "repair" and r["id"] == repair.id for r in top)
    assert main(["status", cfg.out, "--json"]) == 0
    ops = {o["operator"]: o for o in json.loads(capsys.readouterr().out)["operators"]}
    assert ops["repair"] == {"operator": "repair", "proposals": 1, "accepted": 1, "prompt_tokens": 300,
                             "completion_tokens": 15, "cost_usd": pytest.approx(330 / 1e6)}
    assert ops["diff"]["proposals"] == 1 and ops["diff"]["accepted"] == 0
    assert main(["status", cfg.out]) == 0
    assert "repair 1 (1 accepted, 315 tokens, $0.0003)" in " ".join(capsys.readouterr().out.split())
    assert main(["report", cfg.out, "-o", str(tmp_path / "report.html"), "--no-transfer"]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<tr><td>repair</td><td class=num>1</td><td class=num>1</td><td class=num>300</td>" in html


def test_a_program_that_raises_is_asked_for_its_idea_again_on_the_program_it_started_from(tmp_path, tiny_collection,
                                                                                       monkeypatch):
    """repair_style "rewrite" (the default): the chain's first request again, with the idea its first reply gave
    and the lines it changed (fenced, labelled), this proposal's own failure and the line it names; the reply edits
    the program the chain started from. A rewrite that gives that program back unchanged is asked again about its
    own failure (no_change), not the one before it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    same = diff("K1 = 0.9", "K1 = 0.9", (200, 10))
    with FakeOpenAI([RAISES, same, prior(1.0, (300, 15))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=3,
                          operator_mix={"diff": 1.0}, repair_rounds=2, directions="idf")
        run_engine(cfg, tiny_collection)
        first, second, third = (r["body"]["messages"] for r in srv.requests)
        stops = [r["body"].get("stop") for r in srv.requests]
    # every request, repairs too, ends a reply that echoes its prompt at the contract's heading or first sentence,
    # which each holds, and a reply that gave the block at its end marker
    assert stops == [["\n# The program contract\n", "A ranking program is a self-contained Python module.",
                      "\n# EVOLVE-BLOCK-END"]] * 3
    assert all(m[-1]["content"].count("\n# The program contract\n") == 1 for m in (first, second, third))
    progs = programs(cfg.out)
    failed, echo, repair = progs[1], progs[2], progs[3]
    assert failed.failure_reason == "exception:NameError"
    assert echo.operator == "repair" and echo.failure_reason == "no_change" and echo.parent_ids == (failed.id,)
    opening = first[1]["content"].rstrip()
    for request, archived in ((second, echo), (third, repair)):
        assert [m["role"] for m in request] == ["system", "user"] and request[0] == first[0]
        ask = request[1]["content"]
        assert ask.startswith(opening) and ask == archived.prompt  # the first request shows the program to edit
        added = ask[len(opening):]
        assert "Start your reply with the code" in added
        assert re.search(rf"program {failed.parent_ids[0]}\b", added)
    # the direction and the lines the change made; not the model's explanation, which its change already shows
    added = second[1]["content"][len(opening):]
    assert "You were applying the idea above (idf).\n" in added and "your reply said" not in added
    # after a reply that changed nothing, the first sentence of the chain's explanation says what was tried
    added = third[1]["content"][len(opening):]
    assert "You were applying the idea above (idf); your reply said (quoted):\n~~~~\nIdea.\n~~~~" in added
    added = second[1]["content"][len(opening):]
    assert "could not be used: exception:NameError" in added and "is not defined" in added
    assert "It failed at line " in added and "```python\nboost = UNDEFINED_BOOST * 2\n```" in added
    # the change it made, quoted: what the model was trying, not a program to correct
    assert "removed (-) and added (+):\n```diff\n+     boost = UNDEFINED_BOOST * 2\n" in added
    assert "Make the same change again on program" in added
    added = third[1]["content"][len(opening):]
    assert "could not be used: no_change" in added and "NameError" not in added  # its own failure, not the one before
    assert "ranks documents differently" in added and "what score returns must change" in added
    assert repair.operator == "repair" and repair.status == "accepted", (repair.failure_reason, repair.failure_detail)
    assert repair.parent_ids == (echo.id,) and "+ 1.0 * index.doc_len" in repair.code and "UNDEFINED" not in repair.code


def test_a_reply_that_gives_back_an_archived_program_is_followed_up_once_not_twice_alike(tmp_path, tiny_collection,
                                                                                         monkeypatch):
    """A candidate that is an archived program up to comments (here the seed) is a duplicate: not evaluated, and
    (repair style "rewrite") asked afresh: the first request again, saying why the reply could not be used; not
    in the conversation that holds the echo. A repair that would send exactly the same request again is not sent:
    the chain ends and a fresh proposal follows."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    comment_only = diff("K1 = 0.9", "K1 = 0.9  # saturation", (100, 20))
    with FakeOpenAI([comment_only, comment_only, prior(1.0, (300, 15))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=3,
                          operator_mix={"diff": 1.0}, repair_rounds=2)
        run_engine(cfg, tiny_collection)
        first, follow, third = (r["body"]["messages"] for r in srv.requests)
    progs = programs(cfg.out)
    assert progs[1].status == "duplicate" and progs[2].status == "duplicate"
    assert [m["role"] for m in follow] == ["system", "user"] and follow[0] == first[0]
    assert follow[1]["content"].startswith(first[1]["content"].rstrip())
    assert "could not be used: duplicate" in follow[1]["content"] and comment_only["content"] not in str(follow)
    assert progs[2].operator == "repair" and progs[2].parent_ids == (progs[1].id,)
    # the second duplicate would be asked exactly as the first was: the chain ends, the next proposal is fresh
    assert progs[3].operator == "diff" and progs[3].status == "accepted" and "+ 1.0 * index.doc_len" in progs[3].code
    assert "Your earlier attempt" not in third[1]["content"]


def test_a_reply_that_gives_nothing_to_apply_is_asked_again_afresh_without_its_echo(tmp_path, tiny_collection,
                                                                                      monkeypatch):
    """A reply with no code (here the prompt's opening given back) or with edits that match nothing is asked again
    (repair style "rewrite") from the chain's first request with this reply's own failure: not in the conversation
    that holds it. Words that are the prompt's own are not quoted back as the reply's idea; a reply's own words
    are."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([{"content": "placeholder", "usage": (1, 1)}]) as probe:
        cfg = make_config(tmp_path / "probe", tiny_collection, llm="m", base_url=probe.url, iterations=1,
                          operator_mix={"diff": 1.0}, repair_rounds=0)
        run_engine(cfg, tiny_collection)
        opening = probe.requests[0]["body"]["messages"][1]["content"]
    echo = {"content": opening[:300], "usage": (100, 60)}  # the prompt's start, given back
    no_match = diff("    scores = something_else(rows)", "    scores = 2 * something_else(rows)", (200, 30))
    no_match["content"] = no_match["content"].replace("Idea.", "I double the scores of long matches.")
    with FakeOpenAI([echo, prior(1.0, (300, 15)), no_match, prior(0.1, (300, 15))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=4,
                          operator_mix={"diff": 1.0}, repair_rounds=1)
        run_engine(cfg, tiny_collection)
        requests = [r["body"]["messages"] for r in srv.requests]
    progs = programs(cfg.out)
    assert [(p.operator, p.failure_reason) for p in map(progs.get, (1, 2, 3, 4))] == [
        ("diff", "no_code"), ("repair", None), ("diff", "diff_no_match"), ("repair", None)]
    for first, repair, reason in ((requests[0], requests[1], "no_code"), (requests[2], requests[3], "diff_no_match")):
        start = first[1]["content"].rstrip()
        assert [m["role"] for m in repair] == ["system", "user"] and repair[0] == first[0]
        ask = repair[1]["content"]
        assert ask.startswith(start) and ask.count("\n# The program contract\n") == 1  # no echo in a history
        added = ask[len(start):]
        assert f"could not be used: {reason}" in added and "Make the same change again on program" in added
    # an echo is not an idea: nothing of it is quoted; a reply's own words are
    assert "your reply said" not in requests[1][1]["content"]
    assert "your reply said (quoted):\n~~~~\nI double the scores of long matches.\n~~~~" in requests[3][1]["content"]
    assert "SEARCH must copy existing lines" in requests[3][1]["content"]


def test_a_prepare_that_reads_query_is_not_evaluated_and_its_idea_is_asked_again(tmp_path, tiny_collection,
                                                                                   monkeypatch):
    """prepare(index) runs before any query: a candidate whose prepare reads ``query`` fails whenever it runs. It is
    archived as ``query_in_prepare`` without an evaluation, and the rewrite repair names the line and where such
    work goes."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    in_prepare = diff("    td = index.term_doc\n", "    td = index.term_doc\n    boost = len(query.term_ids)\n",
                      (100, 20))
    with FakeOpenAI([in_prepare, prior(1.0, (300, 15))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2,
                          operator_mix={"diff": 1.0}, repair_rounds=1)
        run_engine(cfg, tiny_collection)
        first, follow = (r["body"]["messages"] for r in srv.requests)
    progs = programs(cfg.out)
    assert progs[1].failure_reason == "query_in_prepare" and progs[1].stage == 0
    assert "reads query at line" in progs[1].failure_detail and "boost = len(query.term_ids)" in progs[1].failure_detail
    assert [m["role"] for m in follow] == ["system", "user"] and follow[1]["content"].startswith(
        first[1]["content"].rstrip())
    assert "could not be used: query_in_prepare" in follow[1]["content"]
    assert "do the rest in score(query, index, state)" in follow[1]["content"]
    assert "~~~~\nboost = len(query.term_ids)\n~~~~" in follow[1]["content"]
    assert progs[2].operator == "repair" and progs[2].status == "accepted"


def test_repair_rounds_stop_after_the_configured_number(tmp_path, tiny_collection, monkeypatch):
    """Repair style "fix": a reply without code is followed up in its conversation, which grows each round."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prose = {"content": "I would rather not change anything.", "usage": (10, 5)}
    with FakeOpenAI([prose, prose, prose, prior(1.0, (10, 5))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=4,
                          operator_mix={"diff": 1.0}, repair_rounds=2, repair_style="fix")
        run_engine(cfg, tiny_collection)
        conversation_lengths = [len(r["body"]["messages"]) for r in srv.requests]
    progs = programs(cfg.out)
    assert [progs[i].operator for i in (1, 2, 3, 4)] == ["diff", "repair", "repair", "diff"]
    assert progs[2].parent_ids == (progs[1].id,) and progs[3].parent_ids == (progs[2].id,)
    assert all(progs[i].failure_reason == "no_code" for i in (1, 2, 3)) and progs[4].status == "accepted"
    assert conversation_lengths == [2, 4, 6, 2]  # two rounds, then a fresh proposal


@pytest.mark.parametrize("reply, reason", [
    # cut inside the code: the fence never closes; of its explanation the first sentence is quoted
    ("A new idea. It should help because of many things.\n```python\ndef score(query, index, state):\n"
     "    return np.", "truncated"),
    # cut with its fence closed (the model's last line was lost, not its fence): the code is a syntax error, and
    # the follow-up still asks for the change as a short diff, not for a fix of the syntax
    ("```python\ndef score(query, index, state):\n    return np.where(\n```", "syntax_error"),
])
def test_a_cut_off_reply_is_asked_once_for_a_shorter_one(tmp_path, tiny_collection, monkeypatch, reply, reason):
    """A reply cut off at max_tokens gets the chain's first request again (a conversation that does not grow by the
    cut reply) with the idea it gave, asking for the same change much shorter; a second cut-off ends the chain."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cut = {"content": reply, "finish_reason": "length", "usage": (140, 40)}
    with FakeOpenAI([cut, cut, prior(1.0, (500, 30))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=3, max_tokens=40,
                          operator_mix={"full": 1.0}, repair_rounds=2)
        run_engine(cfg, tiny_collection)
        first, follow, third = (r["body"]["messages"] for r in srv.requests)
    progs = programs(cfg.out)
    assert progs[1].status == "failed" and progs[1].failure_reason == reason
    assert [m["role"] for m in follow] == ["system", "user"] and follow[1]["content"].startswith(
        first[1]["content"].rstrip())
    ask = follow[1]["content"][len(first[1]["content"].rstrip()):]
    assert "cut off at the length limit (40 tokens)" in ask and "much shorter" in ask and "SEARCH/REPLACE" in ask
    assert cut["content"] not in ask  # the cut reply is not sent back
    if reason == "truncated":
        assert "~~~~\nA new idea.\n~~~~" in ask and "many things" not in ask
    assert progs[2].operator == "repair" and progs[2].status in ("failed", "duplicate")  # (the same cut code again)
    assert progs[2].parent_ids == (progs[1].id,)
    # the shorter reply was cut off too: no second request of that kind, the next proposal is fresh
    assert progs[3].operator != "repair" and progs[3].status == "accepted" and "+ 1.0 * index.doc_len" in progs[3].code
    assert "cut off" not in third[1]["content"]


def test_a_cut_off_reply_then_a_short_change_that_runs(tmp_path, tiny_collection, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cut = {"content": "A new idea.\n```python\ndef score(query, index, state):\n    return np.",
           "finish_reason": "length", "usage": (140, 40)}
    with FakeOpenAI([cut, prior(1.0, (500, 30))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2, max_tokens=40,
                          operator_mix={"full": 1.0})
        run_engine(cfg, tiny_collection)
    progs = programs(cfg.out)
    assert progs[2].operator == "repair" and progs[2].status == "accepted" and "+ 1.0 * index.doc_len" in progs[2].code
    assert progs[2].parent_ids == (progs[1].id,) and progs[2].completion_tokens == 30
    assert progs[2].features["repair_kind"] == "shorter"


def test_a_reply_is_ended_at_the_block_end_marker_and_its_program_runs(tmp_path, tiny_collection, monkeypatch):
    """The server stops a reply at the block's end marker (the scripted server honours ``stop`` as OpenAI's do):
    the explanation the model would have written after its code is not generated, the marker is archived as the
    model wrote it, and the program is the one the whole reply gives."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    block = split_block(load_program("bm25").source).block.replace(
        RETURN, "    return np.where(matched, scores + 1.0 * index.doc_len, -np.inf)")
    whole = ("Longer documents first.\n```python\n# EVOLVE-BLOCK-START\n" + block + "# EVOLVE-BLOCK-END\n```\n\n"
             "### Explanation of the change\n" + "- it helps, at length.\n" * 200)
    with FakeOpenAI([{"content": whole, "finish_reason": "length", "usage": (400, 800)}]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=1, max_tokens=800,
                          operator_mix={"full": 1.0})
        run_engine(cfg, tiny_collection)
        served = srv.requests[0]["body"]["stop"]
    assert "\n# EVOLVE-BLOCK-END" in served
    (prop,) = [p for p in programs(cfg.out).values() if p.iteration > 0]
    assert prop.status == "accepted" and "+ 1.0 * index.doc_len" in prop.code, (prop.failure_reason, prop.failure_detail)
    assert prop.response == whole[:whole.index("# EVOLVE-BLOCK-END\n```")] + "# EVOLVE-BLOCK-END\n"
    assert "Explanation" not in prop.response


def test_a_program_that_raises_in_a_statement_is_asked_for_that_statement_alone(tmp_path, tiny_collection,
                                                                                monkeypatch):
    """A failure the sandbox places in a simple statement of the block: a fresh, short conversation shows the
    statement marked in its function, says which names exist there, and the reply's lines replace the statement
    (indented like it)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([RAISES, fenced("boost = 2.0  # <-- FAILS HERE", (300, 15))]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2,
                          operator_mix={"diff": 1.0}, repair_style="fix", repair_rounds=1)
        run_engine(cfg, tiny_collection)
        first, second = (r["body"]["messages"] for r in srv.requests)
    progs = programs(cfg.out)
    failed, repair = progs[1], progs[2]
    assert failed.failure_reason == "exception:NameError"
    assert [m["role"] for m in second] == ["system", "user"] and second[0] == first[0]
    ask = second[1]["content"]
    assert ask == repair.prompt and ask.startswith("A ranking program failed: exception:NameError\n")
    assert "    boost = UNDEFINED_BOOST * 2  # <-- FAILS HERE\n" in ask and "def score(query, index, state):" in ask
    assert "Write this code again, corrected and complete" in ask
    assert "def prepare" not in ask  # only the function it failed in
    hint = ask[ask.index("`UNDEFINED_BOOST` does not exist there."):]
    names = hint[hint.index("runs: ") + 6:hint.index(". Compute")].split(", ")
    assert {"rows", "query", "index", "state", "np", "sp", "K1"} <= set(names) and "UNDEFINED_BOOST" not in names
    assert "scores" not in names  # assigned only after the failing statement
    label = "program's error message (untrusted text):\n~~~~\n"
    assert ask.index(label) < ask.index("is not defined") < ask.index("\n~~~~\n", ask.index(label) + len(label))
    assert repair.operator == "repair" and repair.status == "accepted", (repair.failure_reason, repair.failure_detail)
    assert repair.parent_ids == (failed.id,) and "\n    boost = 2.0\n" in repair.code and "FAILS HERE" not in repair.code
    assert (repair.prompt_tokens, repair.completion_tokens) == (300, 15)


def test_a_repair_that_repeats_the_code_is_told_so_with_the_failure_it_still_has(tmp_path, tiny_collection,
                                                                                 monkeypatch):
    """Small models often answer a repair request with the code they were shown. The next round names the
    original failure (NameError), not "the rewrite is identical to the parent", and asks the other way: the
    whole block after an echoed statement, the statement after an echoed block."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    echo = fenced("boost = UNDEFINED_BOOST * 2", (200, 10))
    with FakeOpenAI([RAISES, echo, FIX]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=3,
                          operator_mix={"diff": 1.0}, repair_style="fix", repair_rounds=2)
        run_engine(cfg, tiny_collection)
        first_messages, third_messages = (srv.requests[i]["body"]["messages"] for i in (0, 2))
        third = third_messages[-1]["content"]
    progs = programs(cfg.out)
    assert progs[1].failure_reason == "exception:NameError" and progs[2].failure_reason == "no_change"
    assert progs[2].failure_detail == "the corrected statement is the failing statement, unchanged"
    # asked in a fresh conversation: the system message and the repair request only
    assert [m["role"] for m in third_messages] == ["system", "user"] and third_messages[0] == first_messages[0]
    assert third.startswith("Your reply repeated the code without changing it")
    assert "could not be used: exception:NameError" in third and "boost = UNDEFINED_BOOST * 2" in third
    assert "This is the EVOLVE-BLOCK your fix must edit" in third
    assert "identical" not in third and "unchanged" not in third.split("\n", 1)[1]
    assert progs[3].operator == "repair" and progs[3].status == "accepted" and "boost = 2.0" in progs[3].code


def test_an_echoed_block_repair_is_followed_by_a_statement_repair():
    from types import SimpleNamespace
    from evorank.evolve.llm.client import LLMSettings
    from evorank.evolve.llm.prompts import PromptTemplates
    from evorank.evolve.llm.proposer import REPEATED_NOTE, LLMProposer
    from evorank.evolve.proposal import REPAIR, Proposal
    from evorank.evolve.llm.failing_statement import MARKER
    code = ("import numpy as np\n# EVOLVE-BLOCK-START\ndef score(query, index, state):\n    x = np.zeros(3)\n"
            "    return x[5]\n# EVOLVE-BLOCK-END\n")
    target = SimpleNamespace(code=code, failure_reason="exception:IndexError",
                             failure_detail="tiny: score() on query '1' raised IndexError at line 5\n~~~~\nindex 5\n~~~~")
    echoed = SimpleNamespace(code=code, failure_reason="no_change", failure_detail="the rewrite is identical")
    prop = Proposal(3, 0, 0, REPAIR, target, messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                    response="same", repair_round=1)
    client = SimpleNamespace(settings=LLMSettings(models=[]))
    repair = LLMProposer(client, PromptTemplates.load(), "obj", {"diff": 1.0}, 1, "fix").follow_up(prop, echoed)
    assert repair.statement == (5, 5, True) and repair.edit_base is target and repair.parent is echoed
    assert [m["role"] for m in repair.messages] == ["system", "user"]
    assert repair.prompt.startswith(REPEATED_NOTE) and f"    return x[5]  {MARKER}" in repair.prompt


def test_a_shape_error_is_repaired_with_the_failing_statement_and_the_array_lengths(tmp_path, tiny_collection,
                                                                                   monkeypatch):
    """The repair request marks the statement the sandbox named (from the archived code) and, for a shape error,
    says how long per-term, per-document and per-posting arrays are on the collection where it failed."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    wrong = diff("    scores = rows.T @ query.qtf.astype(np.float32)", "    scores = rows.T @ query.qtf.astype(np.float32) + index.df", (100, 20))
    fix = fenced("scores = rows.T @ query.qtf.astype(np.float32) + 0.1 * index.doc_len", (100, 20))
    with FakeOpenAI([wrong, fix]) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2,
                          operator_mix={"diff": 1.0}, repair_style="fix", repair_rounds=1)
        run_engine(cfg, tiny_collection)
        ask = srv.requests[1]["body"]["messages"][-1]["content"]
    progs = programs(cfg.out)
    assert progs[1].failure_reason == "exception:ValueError" and " at line " in progs[1].failure_detail
    assert "    scores = rows.T @ query.qtf.astype(np.float32) + index.df  # <-- FAILS HERE\n" in ask
    from evorank.evaluators.evaluate import load_topics
    index = load_topics(str(tiny_collection)).index
    assert (f"{index.n_terms:,} entries per term" in ask and f"{index.n_docs:,} per document" in ask
            and f"{index.term_doc.nnz:,} per posting" in ask and "np.repeat(x, np.diff(index.term_doc.indptr))" in ask)
    assert progs[2].operator == "repair" and progs[2].status == "accepted"


def test_other_failures_get_no_array_lengths():
    from types import SimpleNamespace
    from evorank.evolve.llm.prompts import PromptTemplates, repair_message
    failed = SimpleNamespace(failure_reason="exception:NameError", code="a = 1\nb = c\n",
                             failure_detail="tiny: importing the program raised NameError at line 2\n")
    ask = repair_message(PromptTemplates.load(), failed, "b = c", {"tiny": (3, 4, 5)})
    assert "It failed at line 2 of the program:\n```python\nb = c\n```" in ask and "per posting" not in ask
    assert "$where" not in ask and "$sizes" not in ask


def test_attempts_that_reach_no_model_are_not_proposals(tmp_path, tiny_collection, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    script = [{"status": 401}, prior(0.1, (10, 5)), {"status": 404}, LESS_LENGTH]
    with FakeOpenAI(script) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, iterations=2,
                          operator_mix={"diff": 1.0}, max_consecutive_llm_failures=2)
        engine, _ = run_engine(cfg, tiny_collection)
        assert len(srv.requests) == 4
    progs = programs(cfg.out)
    assert sorted(progs) == [1, 2] and all(p.status == "accepted" for p in progs.values())
    assert not any((p.failure_reason or "").startswith("llm:") for p in progs.values())
    assert engine.stop_reason == "completed" and engine.stats.unavailable == 2 and engine.proposals_done() == (2, 2)


def test_consecutive_failures_stop_the_run_which_resumes_later(tmp_path, tiny_collection):
    """Through the command line: the stop is a non-zero exit with the cause, nothing is counted, and --resume
    finishes the run once the server answers again."""
    run_dir = tmp_path / "run"
    script = [{"content": "O"}, prior(0.1, (10, 5))]  # the start-up check, one proposal
    with FakeOpenAI(script, fallback={"status": 401}) as srv:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        args = [sys.executable, "-m", "evorank", "run", "--llm", "m", "--base-url", srv.url, "--datasets",
                str(tiny_collection), "--iterations", "3", "--islands", "1", "--workers", "1", "--in-flight", "1",
                "--seeds", "bm25", "--repair-rounds", "0", "--max-llm-failures", "3", "--out", str(run_dir), "--quiet"]
        p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode not in (0, 2), p.stdout + p.stderr
        assert len(srv.requests) == 5  # check + 1 proposal + 3 refused attempts
        assert "stopped after 3 attempts in a row reached no model" in p.stderr
        assert f"{srv.url} refused the API key in $OPENAI_API_KEY (HTTP 401" in p.stderr
        assert f"evorank run --resume {run_dir}" in p.stderr
        progs = programs(run_dir)
        assert sorted(progs) == [1]
        store = RunStore.open(run_dir, readonly=True)
        stop = store.events("stop")[-1]["data"]
        store.close()
        assert stop["reason"] == "llm_unavailable" and stop["proposals"] == 1 and "HTTP 401" in stop["detail"]
        # the server is fixed: resume finishes the total (with edits that apply to whichever parent is drawn)
        srv.script[:] = [{"content": "O"}, LESS_LENGTH, REVERSED]
        p = subprocess.run([sys.executable, "-m", "evorank", "run", "--resume", str(run_dir), "--quiet"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
    progs = programs(run_dir)
    # every proposal reached evaluation (the cascade may stop a weak one): none was lost to the server
    assert sorted(progs) == [1, 2, 3] and all(p.status in ("accepted", "rejected_cascade") for p in progs.values())
    assert progs[1].status == progs[2].status == "accepted"


def test_an_unknown_repair_style_is_refused_with_the_choices():
    from evorank.evolve.config import ConfigError, from_dict
    assert from_dict({"repair_style": "fix"}).repair_style == "fix"
    with pytest.raises(ConfigError, match="repair_style must be one of rewrite, fix, got 'patch'"):
        from_dict({"repair_style": "patch"})
