import pytest

from evorank.evaluators.program import load_program, split_block
from evorank.evolve.operators import ReplyError, apply_reply

BM25 = load_program("bm25").source


def test_diff_applies_inside_block_only():
    reply = "Idea: stronger saturation.\n<<<<<<< SEARCH\nK1 = 0.9\n=======\nK1 = 1.2\n>>>>>>> REPLACE\n"
    out, applied = apply_reply(BM25, reply, "diff")
    assert "K1 = 1.2" in out and applied == "diff"
    assert split_block(out).head == split_block(BM25).head and split_block(out).tail == split_block(BM25).tail


def test_diff_tolerates_whitespace_drift():
    reply = ("<<<<<<< SEARCH\n  weights = idf[term_of_posting] * tf / (tf + norm)   \n=======\n"
             "  weights = idf[term_of_posting] * tf / (tf + norm + 0.1)\n>>>>>>> REPLACE")
    out, _ = apply_reply(BM25, reply, "diff")
    assert "    weights = idf[term_of_posting] * tf / (tf + norm + 0.1)" in out  # re-indented to the match


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
