"""Source-only measures: normalized code hash and complexity."""

from hypothesis import given, settings
from hypothesis import strategies as st

from evorank.archive.programs import complexity, normalized_code, normalized_code_hash

BASE = '''
import math


def score(tf, df, n_docs, dl, avgdl):
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
'''

DECORATED = '''
"""Module docstring, which must not matter."""
import math

# a comment


def score(tf, df, n_docs, dl, avgdl):
    """BM25 term score."""
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))   # trailing comment
    return (idf * tf * 2.2
            / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl)))
'''


def test_hash_ignores_comments_docstrings_and_layout():
    assert normalized_code_hash(BASE) == normalized_code_hash(DECORATED)


def test_hash_sees_real_changes():
    assert normalized_code_hash(BASE) != normalized_code_hash(BASE.replace("0.75", "0.7"))
    # A non-docstring string constant is code, not a comment.
    assert normalized_code_hash("x = 1\n") != normalized_code_hash("x = 1\n'note'\n")


def test_docstring_only_function_still_normalizes():
    code = 'def f():\n    """only a docstring"""\n'
    assert normalized_code(code) == "def f():\n    pass"
    assert normalized_code_hash(code) == normalized_code_hash("def f():\n    pass\n")


def test_unparsable_code_hashes_whitespace_stripped_text():
    broken = "def f(:\n    return 1\n"
    assert normalized_code(broken) is None
    assert normalized_code_hash(broken) == normalized_code_hash("def f( :\n\n  return  1")
    assert normalized_code_hash(broken) != normalized_code_hash("def g(:\n    return 1\n")


@settings(max_examples=60, deadline=None)
@given(
    consts=st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
    comments=st.lists(st.text(alphabet="abc xyz#'\"", max_size=12), min_size=1, max_size=5),
    blank=st.integers(0, 3),
)
def test_hash_invariant_under_comment_and_blank_line_insertion(consts, comments, blank):
    lines = ["def f(x):"] + [f"    x = x * {c} + 1" for c in consts] + ["    return x"]
    plain = "\n".join(lines) + "\n"
    noisy = []
    for i, line in enumerate(lines):
        noisy.append(line)
        noisy.extend([""] * blank)
        noisy.append("    # " + comments[i % len(comments)])
    assert normalized_code_hash(plain) == normalized_code_hash("\n".join(noisy) + "\n")


def test_complexity_counts_whole_module_without_markers():
    assert complexity("x = 1\n") == 5  # Module, Assign, Name, Store, Constant
    assert complexity(BASE) > complexity("def score(tf):\n    return tf\n")


def test_complexity_counts_only_evolve_blocks():
    inner = "    idf = math.log(1 + n_docs / df)\n    return idf * tf\n"
    prelude = "import math\nimport re\n\n\ndef helper(a, b, c):\n    return [a + b * c for _ in range(3)]\n\n\n"
    block = "def score(tf, df, n_docs):\n    # EVOLVE-BLOCK-START\n" + inner + "    # EVOLVE-BLOCK-END\n"
    small = complexity(block)
    assert small > 0
    assert complexity(prelude + block) == small  # code outside the block is not counted
    assert complexity(block) < complexity(block.replace("# EVOLVE-BLOCK-START", "#"))


def test_complexity_sums_several_blocks():
    one = "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n"
    assert complexity(one + "y = [1, 2, 3]\n" + one) == 2 * complexity(one)


def test_complexity_of_unparsable_code_is_a_positive_proxy():
    assert complexity("def f(:\n  return 1") > 0


def test_essential_code_ends_on_bodies_left_empty():
    """A body whose statements are all dead becomes ``pass``; that ``pass`` is not removed again (which looped for
    ever, stalling the proposer that asked). In a child process, so that a loop fails the test instead of hanging."""
    import subprocess
    import sys

    check = """
from evorank.archive import essential_code
score = "def score(query, index, state):\\n    if query:\\n        {}\\n    return index.doc_len\\n"
assert essential_code(score.format("x = 1")) == essential_code(score.format("pass"))
assert essential_code(score.format("x = 1")) != essential_code(score.format("return -index.doc_len"))
assert "pass" in essential_code("def prepare(index):\\n    pass\\n" + score.format("pass"))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
