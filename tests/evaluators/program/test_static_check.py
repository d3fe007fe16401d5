"""Static checks on candidate programs (evaluators/program/checks.py): fast, no processes."""
import pytest

from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.source import seed_path, split_block
from evorank.evaluators.program.checks import check_source, static_check

BM25 = seed_path("bm25").read_text(encoding="utf-8")
QL = seed_path("ql_dirichlet").read_text(encoding="utf-8")
SPLIT = split_block(BM25)


def with_block(block: str) -> str:
    return SPLIT.join(block)


def first(block: str, seed: str | None = BM25):
    report = check_source(with_block(block), seed)
    assert not report.ok, f"expected a violation for:\n{block}"
    return report.violations[0]


def test_seeds_pass():
    for src in (BM25, QL):
        assert check_source(src, src).ok
        assert check_source(src).ok
        static_check(src, src)


REALISTIC = '''
from collections import Counter, defaultdict
from dataclasses import dataclass
import math
import heapq
import itertools
import functools
from typing import Optional
from scipy.special import expit
import numpy.linalg as la

K1 = 1.2


@dataclass
class State:
    """Precomputed weights; mentions __init__ in a docstring, which is fine."""
    weights: object
    idf: np.ndarray
    norm: Optional[float] = None


class Helper:
    def __init__(self, k):
        super().__init__()
        self.k = k
        self._cache = {}

    def weight(self, tf):
        return tf / (tf + self.k)


@functools.lru_cache(maxsize=None)
def _sat(x):
    return x / (x + K1)


def prepare(index):
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    rows = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    h = Helper(K1)
    w = idf[rows] * h.weight(td.data.astype(np.float64))
    counts = Counter(itertools.islice(range(10), 3))
    best = heapq.nlargest(2, [3, 1, 2])
    _ = defaultdict(list), counts, best, math.log(2.0), expit(0.0), la.norm(np.ones(2)), _sat(1.0)
    label = f"{len(best)} terms: {best!r}"
    label2 = "{} terms".format(len(best))
    _ = label, label2, getattr(index, "n_docs"), hasattr(index, "x")
    return State(sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape), idf)


def score(query, index, state):
    rows = state.weights[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
'''


def test_realistic_program_passes():
    report = check_source(with_block(REALISTIC), BM25)
    assert report.ok, report.violations


@pytest.mark.parametrize("block, reason", [
    ("import os\n", "forbidden:import os"),
    ("import time\n", "forbidden:import time"),
    ("import subprocess\n", "forbidden:import subprocess"),
    ("import scipy\n", "forbidden:import scipy"),
    ("from numpy import load\n", "forbidden:import numpy.load"),
    ("from numpy import lib\n", "forbidden:import numpy.lib"),
    ("from collections import _sys\n", "forbidden:import collections._sys"),
    ("from numpy import *\n", "forbidden:import *"),
    ("from . import x\n", "forbidden:import relative"),
    ("x = open('/etc/passwd')\n", "forbidden:name open"),
    ("x = eval('1')\n", "forbidden:name eval"),
    ("exec('x = 1')\n", "forbidden:name exec"),
    ("f = compile\n", "forbidden:name compile"),
    ("g = globals()\n", "forbidden:name globals"),
    ("v = vars()\n", "forbidden:name vars"),
    ("setattr(np, 'x', 1)\n", "forbidden:name setattr"),
    ("name = 'lo' + 'ad'\nx = getattr(np, name)\n", "forbidden:name getattr"),
    ("x = getattr(np, 'load')\n", "forbidden:attribute load"),
    ("x = getattr(index, '_vocab')\n", "forbidden:attribute _vocab"),
    ("breakpoint()\n", "forbidden:name breakpoint"),
    ("m = memoryview(b'x')\n", "forbidden:name memoryview"),
    ("b = __builtins__\n", "forbidden:name __builtins__"),
    ("m = __import__('os')\n", "forbidden:name __import__"),
    ("c = ().__class__.__base__.__subclasses__()\n", "forbidden:attribute __subclasses__"),
    ("def f():\n    pass\ng = f.__globals__\n", "forbidden:attribute __globals__"),
    ("np.argsort = sorted\n", "forbidden:assign np.argsort"),
    ("np.random.seed = None\n", "forbidden:assign np.random.seed"),
    ("del np.bincount\n", "forbidden:assign np.bincount"),
    ("x = np.load('a.npy')\n", "forbidden:attribute load"),
    ("x = np.fromfile('a')\n", "forbidden:attribute fromfile"),
    ("x = np.memmap('a')\n", "forbidden:attribute memmap"),
    ("np.zeros(3).tofile('a')\n", "forbidden:attribute tofile"),
    ("x = np.zeros(3).ctypes\n", "forbidden:attribute ctypes"),
    ("x = np.ctypeslib\n", "forbidden:attribute ctypeslib"),
    ("x = np.lib.format\n", "forbidden:attribute lib"),
    ("x = np._core\n", "forbidden:module np._core"),
    ("x = sp.save_npz\n", "forbidden:attribute save_npz"),
    ("import typing\nx = typing.sys\n", "forbidden:module typing.sys"),
    ("import dataclasses\nx = dataclasses.inspect\n", "forbidden:module dataclasses.inspect"),
    ("import typing\nx = typing.get_type_hints\n", "forbidden:attribute get_type_hints"),
    ("import scipy.sparse\nx = scipy.stats\n", "forbidden:module scipy.stats"),
    ("m = np\n", "forbidden:module_value np"),
    ("x = [np.linalg]\n", "forbidden:module_value np.linalg"),
    ("np = 3\n", "forbidden:rebind np"),
    ("def f(np):\n    return np\n", "forbidden:rebind np"),
    ("def f():\n    yield 1\ng = f()\nx = g.gi_frame.f_back\n", "forbidden:attribute f_back"),
    ("s = '__class__'\n", "forbidden:dunder_string"),
    ("s = b'__class__'\n", "forbidden:dunder_string"),
    ("def f(x: 'np.ndarray'):\n    return x\n", "forbidden:string_annotation"),
    ("import typing\nx = '{0.sys}'.format(typing)\n", "forbidden:format_fields"),
    ("x = '{0[a]}'.format({'a': 1})\n", "forbidden:format_fields"),
    ("t = '{}'\nx = t.format(1)\n", "forbidden:format_fields"),
    ("x = str.format('{}', 1)\n", "forbidden:format_fields"),
])
def test_rule_violations(block, reason):
    report = check_source(with_block(block), BM25)
    assert reason in [x.reason for x in report.violations], report.violations
    v = report.violations[0]
    assert v.line >= SPLIT.head.count("\n") + 1
    assert str(v).startswith(f"line {v.line}: ")


def test_message_names_rule_and_line():
    src = with_block("import os\n")
    with pytest.raises(ProgramError) as e:
        static_check(src, BM25)
    line = SPLIT.head.count("\n") + 1
    assert e.value.reason == "forbidden:import os"
    assert str(e.value).startswith(f"line {line}: import of 'os' is not allowed (allowed: numpy, math")


def test_all_violations_listed():
    report = check_source(with_block("import os\nimport sys\nx = eval('1')\n"), BM25)
    assert [v.reason for v in report.violations] == ["forbidden:import os", "forbidden:import sys", "forbidden:name eval"]
    err = report.error()
    assert err.reason == "forbidden:import os" and "sys" in str(err) and "eval" in str(err)


def test_head_and_tail_must_match_seed():
    changed_head = BM25.replace("import numpy as np", "import numpy as np  # changed")
    assert first_src(changed_head).reason == "modified_outside_block:head"
    changed_tail = BM25 + "\nprint('after')\n"
    v = first_src(changed_tail)
    assert v.reason == "modified_outside_block:tail"
    assert v.line > BM25.count("\n") - 2
    # a different seed's head is also a modification
    assert first_src(QL, BM25).reason.startswith("modified_outside_block")
    # without a seed, head and tail are not compared
    assert check_source(changed_head).ok


def first_src(src: str, seed: str = BM25):
    report = check_source(src, seed)
    assert not report.ok
    return report.violations[0]


def test_block_markers_required():
    v = first_src(BM25.replace("# EVOLVE-BLOCK-END", ""))
    assert v.reason == "no_evolve_block"


def test_size_caps():
    big = SPLIT.block + "\n".join(f"X{i} = K1" for i in range(500)) + "\n"
    v = first(big)
    assert v.reason == "too_large:block_lines"
    wide = SPLIT.block + "X = " + "1 + " * 6000 + "1\n"
    assert first(wide).reason == "too_large:block_bytes"
    assert check_source(with_block(big), BM25, max_block_lines=10_000).ok


def test_syntax_error_has_line():
    v = first("def score(query, index, state)\n    return 1\n")
    assert v.reason == "syntax_error"
    assert v.line == SPLIT.head.count("\n") + 1


def test_deep_nesting_is_a_result_not_a_crash():
    report = check_source(with_block("x = " + "(" * 300 + "1" + ")" * 300 + "\n"), BM25)
    assert not report.ok and report.violations[0].reason in ("syntax_error", "too_complex")


def test_match_class_attributes_checked():
    v = first("def f(x):\n    match x:\n        case object(__class__=c):\n            return c\n")
    assert v.reason == "forbidden:attribute __class__"
