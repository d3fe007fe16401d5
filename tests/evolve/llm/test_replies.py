import pytest

from evorank.evaluators.program.source import load_program, split_block
from evorank.evolve.llm.replies import BLOCK_END_STOP, ReplyError, apply_reply, with_block_end

BM25 = load_program("bm25").source


def test_diff_applies_inside_block_only():
    reply = "Idea: stronger saturation.\n<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 1.2\n>>>>>>> REPLACE\n"
    out, applied = apply_reply(BM25, reply, "diff")
    assert "K1 = 1.2" in out and applied == "diff"
    assert split_block(out).head == split_block(BM25).head and split_block(out).tail == split_block(BM25).tail


def test_diff_tolerates_whitespace_drift():
    reply = ("<<<<<<< SEARCH\n  weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])   \n"
             "=======\n  weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices] + 0.1)\n"
             ">>>>>>> REPLACE")
    out, _ = apply_reply(BM25, reply, "diff")
    # re-indented to the match
    assert "    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices] + 0.1)" in out


@pytest.mark.parametrize("reply,reason", [
    ("<<<<<<< SEARCH\nK1 = 7.0\n=======\nK1 = 1\n>>>>>>> REPLACE", "diff_no_match"),
    ("<<<<<<< SEARCH\nimport numpy as np\n=======\nimport os\n>>>>>>> REPLACE", "diff_outside_block"),
    ("<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 1", "truncated"),
    ("BM25 is already optimal, I would not change anything.", "no_code"),
    ("<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 0.9\n>>>>>>> REPLACE", "no_change"),
])
def test_diff_failures_have_reasons(reply, reason):
    with pytest.raises(ReplyError) as e:
        apply_reply(BM25, reply, "diff")
    assert e.value.reason == reason and str(e.value)


def test_full_rewrite_block_or_module():
    block = "```python\nK = 1.0\n\ndef score(query, index, state):\n    return np.zeros(index.n_docs)\n```"
    out, applied = apply_reply(BM25, "New idea.\n" + block, "full")
    assert split_block(out).block.startswith("K = 1.0") and split_block(out).head == split_block(BM25).head
    assert applied == "full"
    module = "```python\n" + BM25.replace("K1 = 0.9", "K1 = 1.5") + "```"
    assert "K1 = 1.5" in apply_reply(BM25, module, "full")[0]
    # a rewrite answered where a diff was asked for is still accepted, as a rewrite
    assert apply_reply(BM25, block, "diff")[1] == "full"


def test_full_rewrite_truncation():
    with pytest.raises(ReplyError) as e:
        apply_reply(BM25, "```python\ndef score(query, index, state):\n    return np.ze", "full", finish_reason="length")
    assert e.value.reason == "truncated"


def test_a_diff_cut_off_after_complete_blocks_is_truncated_not_half_applied():
    reply = ("<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 1.2\n>>>>>>> REPLACE\n"
             "<<<<<<< SEARCH\nB = 0.4\n=======\nB = 0.")
    with pytest.raises(ReplyError) as e:
        apply_reply(BM25, reply, "diff", finish_reason="length")
    assert e.value.reason == "truncated" and "1 of 2 blocks complete" in str(e.value)
    # the same text that ended normally keeps its complete blocks (the model chose to stop there)
    assert "K1 = 1.2" in apply_reply(BM25, reply, "diff", finish_reason="stop")[0]


def test_a_reply_with_only_the_changed_function_keeps_what_it_needs_from_the_parent():
    # the local model's answer to "rewrite the block": a function without the constants it reads
    reply = ("Idea: damp long documents.\n```python\ndef score(query, index, state):\n"
             "    rows = state[query.term_ids]\n"
             "    s = np.bincount(rows.indices, weights=rows.data, minlength=index.n_docs)\n"
             "    return np.where(s > 0, s / np.sqrt(index.doc_len + 1.0), -np.inf)\n```\n")
    out, applied = apply_reply(BM25, reply, "full")
    block = split_block(out).block
    assert applied == "full" and "np.sqrt(index.doc_len + 1.0)" in block
    # score reads the state, so the parent's prepare stays, and with it the constants prepare reads
    assert "def prepare(index)" in block and "K1 = 0.9" in block and "B = 0.4" in block
    assert block.count("def score") == 1
    ns = {}
    exec(compile(out, "<merged>", "exec"), ns)  # the merged program defines everything it reads
    assert {"prepare", "score", "K1", "B"} <= set(ns)


def test_a_complete_rewrite_drops_what_it_no_longer_uses():
    block = "```python\ndef score(query, index, state):\n    return np.zeros(index.n_docs)\n```"
    out = split_block(apply_reply(BM25, block, "full")[0]).block
    assert "def prepare" not in out and "K1" not in out  # score ignores the state: nothing of the parent is needed


def test_a_reply_that_changes_only_constants_or_only_prepare():
    out = split_block(apply_reply(BM25, "```python\nK1 = 1.2\n```", "full")[0]).block
    assert "K1 = 1.2" in out and "K1 = 0.9" not in out and "def score" in out and "def prepare" in out
    prep = "```python\ndef prepare(index):\n    return index.term_doc.astype(np.float64)\n```"
    out = split_block(apply_reply(BM25, prep, "full")[0]).block
    assert "astype(np.float64)" in out and "def score" in out and "K1" not in out  # nothing reads K1 any more


def test_a_missing_end_marker_is_truncation_only_when_the_reply_hit_the_limit():
    body = split_block(BM25).block.replace("K1 = 0.9", "K1 = 1.1")
    reply = f"```python\n# EVOLVE-BLOCK-START\n{body}```\n"
    out, _ = apply_reply(BM25, reply, "full", finish_reason="stop")
    assert "K1 = 1.1" in out and out.count("# EVOLVE-BLOCK-END") == 1
    with pytest.raises(ReplyError) as e:
        apply_reply(BM25, reply, "full", finish_reason="length")
    assert e.value.reason == "truncated"
    # cut in the explanation after the code: the code's fence closed before the cut, so the code is complete
    out, _ = apply_reply(BM25, reply + "\nThis raises K1 because longer", "full", finish_reason="length")
    assert "K1 = 1.1" in out and out.count("# EVOLVE-BLOCK-END") == 1
    # cut inside a second fence: still truncated
    with pytest.raises(ReplyError) as e:
        apply_reply(BM25, reply + "\nAlso:\n```python\ndef helper(", "full", finish_reason="length")
    assert e.value.reason == "truncated"


def test_a_reply_repeating_the_parents_function_is_no_change():
    score_fn = split_block(BM25).block.split("def score", 1)[1]
    with pytest.raises(ReplyError) as e:
        apply_reply(BM25, "```python\n# unchanged\ndef score" + score_fn + "```", "full")
    assert e.value.reason == "no_change"


def test_an_augmented_constant_keeps_the_definition_it_changes():
    out = split_block(apply_reply(BM25, "```python\nK1 += 0.3\n```", "full")[0]).block
    assert out.index("K1 = 0.9") < out.index("K1 += 0.3")
    ns = {}
    exec(compile(BM25.replace(split_block(BM25).block, out), "<merged>", "exec"), ns)
    assert abs(ns["K1"] - 1.2) < 1e-12


# -- a lone line lifted out of a function ------------------------------------------------------------------------

TWO_WEIGHTS = """import numpy as np
import scipy.sparse as sp

# EVOLVE-BLOCK-START
K1 = 0.9


def prepare(index):
    td = index.term_doc
    tf = td.data
    weights = tf / (tf + K1)
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    rows = state[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    return np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
# EVOLVE-BLOCK-END
"""


def test_a_lone_changed_line_in_a_code_fence_replaces_the_line_it_changes():
    """Asked for a diff, small models often fence just the changed line. `weights` is assigned in prepare() and in
    score(); the line reads `tf`, which only prepare() has, so it goes there, indented like the line it replaces."""
    line = "weights = tf * 2.2 / (tf + K1 * 1.2)"
    new, applied = apply_reply(TWO_WEIGHTS, f"Scale it.\n```python\n{line}\n```\n", "diff")
    assert applied == "full" and f"    tf = td.data\n    {line}\n    return sp.csr_matrix(" in new
    assert "    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))" in new  # score() untouched


@pytest.mark.parametrize("code", [
    "weights = weights * 2",  # both functions could mean it
    "boost = td.data * 2\nweights = tf * boost",  # more than one line: where would it go?
    "def score(query, index, state):\n    return np.zeros(index.n_docs)\n\ntf = tf + 1",  # a stray line by a def
])
def test_other_lifted_out_lines_are_a_code_fragment_not_an_import_time_failure(code):
    with pytest.raises(ReplyError) as e:
        apply_reply(TWO_WEIGHTS, f"```python\n{code}\n```", "diff")
    assert e.value.reason == "code_fragment" and "give the whole function" in str(e.value)


def test_module_level_constants_and_helpers_are_not_fragments():
    reply = "```python\nK1 = 1.2\nEPS = np.finfo(float).eps\nSQ = [k * k for k in range(3)]\nF = lambda x: x + K1\n```"
    new, _ = apply_reply(TWO_WEIGHTS, reply, "diff")
    assert "K1 = 1.2" in new and "EPS = np.finfo(float).eps" in new and "def prepare" in new


def test_functions_given_in_separate_indented_fences_of_a_markdown_list_are_taken_together():
    reply = ("Changes:\n\n- In prepare:\n  ```python\n  def prepare(index):\n      return index.term_doc * 2.0\n  ```\n"
             "- In score:\n  ```python\n  def score(query, index, state):\n"
             "      return np.asarray(state[query.term_ids].sum(axis=0)).ravel() + 1.0\n  ```\n")
    src, how = apply_reply(BM25, reply, "full")
    block = split_block(src).block
    assert how == "full" and "    return index.term_doc * 2.0\n" in block and ".ravel() + 1.0\n" in block
    assert "def prepare" in block and "def score" in block


def test_a_before_and_after_pair_of_one_function_is_not_joined():
    before = "```python\ndef score(query, index, state):\n    return state\n```\n"
    after = "```python\ndef score(query, index, state):\n    return np.asarray(state.sum(axis=0)).ravel() * 3.0\n```\n"
    src, _ = apply_reply(BM25, "Before:\n" + before + "After:\n" + after, "full")
    assert "* 3.0" in src and src.count("def score") == 1


# -- candidates that only add functions nothing calls -----------------------------------------------------------

def test_unreachable_functions_follow_calls_from_score_prepare_and_module_statements():
    from evorank.evolve.llm.replies import unreachable_functions

    block = ("W = weight(2)\n\n\ndef weight(x):\n    return x\n\n\ndef helper(i):\n    return deeper(i)\n\n\n"
             "def deeper(i):\n    return i\n\n\ndef unused(i):\n    return helper(i)\n\n\n"
             "def prepare(index):\n    return W\n\n\ndef score(query, index, state):\n    return helper(state)\n")
    assert unreachable_functions(block) == ["unused"]
    assert unreachable_functions("def score(:\n") == []


def test_a_candidate_that_only_adds_an_uncalled_helper_is_no_change_naming_it():
    from evorank.evolve.llm.replies import check_changes_what_runs

    parent = BM25
    helper = "\n\ndef bm25f_weights(index, k1=0.9):\n    return index.term_doc * k1\n"
    source = parent.replace("# EVOLVE-BLOCK-END", helper + "# EVOLVE-BLOCK-END")
    with pytest.raises(ReplyError) as e:
        check_changes_what_runs(parent, source)
    assert e.value.reason == "no_change" and "bm25f_weights" in str(e.value) and "call bm25f_weights" in str(e.value)
    # the docstrings and comments of the functions that run do not make it a change
    reworded = source.replace('"""Precompute', '"""Reworded. Precompute').replace(
        "    td = index.term_doc\n", "    # a comment\n    td = index.term_doc\n")
    assert reworded.count("Reworded") == 1 and reworded.count("# a comment") == 1
    with pytest.raises(ReplyError):
        check_changes_what_runs(parent, reworded)


def test_a_helper_that_is_called_or_comes_with_another_change_is_a_change():
    from evorank.evolve.llm.replies import check_changes_what_runs

    helper = "\n\ndef boost(x):\n    return x * 2.0\n"
    added = BM25.replace("# EVOLVE-BLOCK-END", helper + "# EVOLVE-BLOCK-END")
    called = added.replace("    return np.where(matched, scores, -np.inf)",
                           "    return np.where(matched, boost(scores), -np.inf)")
    assert called != added
    check_changes_what_runs(BM25, called)
    other = added.replace("K1 = 0.9", "K1 = 1.2")
    assert other != added
    check_changes_what_runs(BM25, other)
    # a change made only inside a helper nothing calls changes nothing that runs, whoever added the helper
    with pytest.raises(ReplyError, match="only adds or edits code that nothing uses") as e:
        check_changes_what_runs(added, added.replace("x * 2.0", "x * 3.0"))
    assert e.value.reason == "no_change"


def test_a_candidate_that_only_reorders_its_functions_is_no_change():
    """Its parent's functions merged back in another order would rank exactly as the parent: no_change, not a new
    program to evaluate."""
    from evorank.evolve.llm.replies import check_changes_what_runs

    head, block = BM25.split("# EVOLVE-BLOCK-START\n")
    block, tail = block.split("# EVOLVE-BLOCK-END")
    constants, prepare = block.split("def prepare(")
    prepare, score = prepare.split("def score(")
    swapped = f"{head}# EVOLVE-BLOCK-START\n{constants}def score({score.rstrip()}\n\n\ndef prepare({prepare.rstrip()}\n" \
              f"# EVOLVE-BLOCK-END{tail}"
    assert swapped.index("def score(") < swapped.index("def prepare(")
    with pytest.raises(ReplyError) as e:
        check_changes_what_runs(BM25, swapped)
    assert e.value.reason == "no_change" and "only reorders functions" in str(e.value)
    # with a module-level statement that calls something at import, order may matter: left to evaluation
    def calling(code):
        return code.replace("B = 0.4\n", "B = 0.4\nC = float(B)\n")

    assert calling(swapped) != swapped
    check_changes_what_runs(calling(BM25), calling(swapped))


def test_a_prepare_that_reads_query_is_refused_naming_the_line_and_where_such_work_goes():
    from evorank.evolve.llm.replies import check_prepare_reads_no_query

    line = "    matched = np.bincount(td[query.term_ids].indices, minlength=index.n_docs)\n"
    source = BM25.replace("    td = index.term_doc\n", "    td = index.term_doc\n" + line, 1)
    assert source != BM25
    with pytest.raises(ReplyError) as e:
        check_prepare_reads_no_query(source)
    number = source.split("\n").index(line.rstrip("\n")) + 1
    assert e.value.reason == "query_in_prepare"
    trusted, _, shown = str(e.value).partition("\n")
    assert f"reads query at line {number}, but" in trusted and trusted.endswith("score(query, index, state)")
    assert len(trusted) < 300  # prompts show the first line of a detail up to 300 characters
    assert shown.startswith("that line (the candidate's code):\n~~~~\nmatched = np.bincount(td[query.term_ids]")
    with pytest.raises(ReplyError, match="takes a parameter query"):
        check_prepare_reads_no_query(BM25.replace("def prepare(index):", "def prepare(index, query):"))


def test_a_prepare_with_its_own_query_name_or_none_at_all_is_not_refused():
    from evorank.evolve.llm.replies import check_prepare_reads_no_query

    check_prepare_reads_no_query(BM25)
    for local in ("    query = index.df > 0\n    td = index.term_doc\n", "    for query in range(1):\n        pass\n"
                                                                        "    td = index.term_doc\n"):
        check_prepare_reads_no_query(BM25.replace("    td = index.term_doc\n", local + "    q = query\n", 1))
    check_prepare_reads_no_query("not a program")  # no markers: the static check says so


def _stopped(reply: str) -> str:
    """``reply`` as a server returns it when ``BLOCK_END_STOP`` is one of the request's stop strings."""
    return reply[:reply.find(BLOCK_END_STOP)] if BLOCK_END_STOP in reply else reply


@pytest.mark.parametrize("code", [
    BM25.replace("K1 = 0.9", "K1 = 1.5"),  # the whole module, its tail after the marker
    "# EVOLVE-BLOCK-START\n" + split_block(BM25).block.replace("K1 = 0.9", "K1 = 1.5") + "# EVOLVE-BLOCK-END\n",
])
def test_a_reply_stopped_at_the_block_end_marker_gives_the_program_the_whole_reply_gives(code):
    whole = ("Stronger saturation.\n```python\n" + code + "```\n\n### Explanation\n"
             + "- why it helps, at length.\n" * 80)
    stopped = _stopped(whole)
    assert len(stopped) < len(whole) and not stopped.endswith("END")
    back = with_block_end(stopped, "stop")
    assert back == stopped + "\n# EVOLVE-BLOCK-END\n"  # the marker the model wrote, nothing else
    assert apply_reply(BM25, back, "full", "stop") == apply_reply(BM25, whole, "full", "length")
    assert "K1 = 1.5" in apply_reply(BM25, back, "diff", "stop")[0]


def test_only_a_reply_the_server_stopped_inside_the_block_gets_the_marker_back():
    inside = "Idea.\n```python\n# EVOLVE-BLOCK-START\nK1 = 1.5\n"
    assert with_block_end(inside, "length") == inside  # cut off: what was lost is unknown
    closed = inside + "```\nThe marker was dropped."  # the model closed its fence: it ended where it meant to
    assert with_block_end(closed, "stop") == closed
    done = inside + "# EVOLVE-BLOCK-END\n```\n"
    assert with_block_end(done, "stop") == done
    diff = "Idea.\n<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 1.2\n>>>>>>> REPLACE\n"
    assert with_block_end(diff, "stop") == diff
    with pytest.raises(ReplyError) as e:  # an open fence not ended at the marker is still cut code
        apply_reply(BM25, inside, "full", "length")
    assert e.value.reason == "truncated"


def test_a_diff_that_quotes_the_end_marker_gives_no_candidate_stopped_or_not():
    """A SEARCH part holding the end marker matches nothing in the block, so stopping such a reply there loses
    no change that would have been applied."""
    tail = "    return np.where(matched, scores, -np.inf)\n"
    whole = (f"Idea.\n<<<<<<< SEARCH\n{tail}# EVOLVE-BLOCK-END\n=======\n{tail}\n\ndef unused():\n"
             f"    return 1\n# EVOLVE-BLOCK-END\n>>>>>>> REPLACE\n")
    for reply in (whole, with_block_end(_stopped(whole), "stop")):
        with pytest.raises(ReplyError) as e:
            apply_reply(BM25, reply, "diff", "stop")
        assert e.value.reason == "diff_outside_block", e.value  # not "truncated": the model is told what it did
