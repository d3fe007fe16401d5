"""The offline mutator: determinism, byte-identical head/tail, operator coverage, validity of the
children on a small collection, crossover, and no new names or imports."""
from __future__ import annotations

import ast
import builtins
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_beir
from evorank.evaluators.errors import ProgramError
from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.program.source import compile_program, seed_path, split_block
from evorank.evaluators.program.ranking import rank
from evorank.evolve.offline.block import DEBUG, Mutation
from evorank.evolve.offline.crossover import crossover
from evorank.evolve.offline.mutator import OPERATORS, mutate
from evorank.evolve.offline.splice import SPLICE_NP_ATTRS, SPLICE_OPERATORS

SEEDS = {name: seed_path(name).read_text(encoding="utf-8") for name in ("bm25", "ql_dirichlet")}
NEW_NP_ATTRS = {"log", "log1p", "sqrt", "maximum", "mean"}  # what the mutator may add to a program
FORBIDDEN_CALLS = {"eval", "exec", "open", "compile", "__import__", "getattr", "setattr", "globals", "locals", "vars"}


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    """Analysis bugs surface as errors here instead of being skipped silently."""
    monkeypatch.setattr(DEBUG, "strict", True)


@pytest.fixture(scope="module")
def small_topics(tmp_path_factory):
    """A 60-document collection with skewed term frequencies, varied lengths and an empty document."""
    root = tmp_path_factory.mktemp("offline_mutator")
    old = os.environ.get("EVORANK_CACHE")
    os.environ["EVORANK_CACHE"] = str(root / "cache")  # module scope: monkeypatch is function-scoped
    try:
        rng = np.random.default_rng(7)
        vocab = ("apple banana cherry grape lemon mango melon orange peach pear plum berry kiwi lime fig date olive "
                 "walnut almond pecan cashew hazel maple cedar birch willow aspen spruce").split()
        p = 1.0 / np.arange(1, len(vocab) + 1)
        p /= p.sum()
        docs = {f"d{i}": " ".join(rng.choice(vocab, size=int(rng.integers(3, 40)), p=p)) for i in range(60)}
        docs["empty"] = "the and of"
        queries = {f"q{i}": " ".join(rng.choice(vocab, size=int(rng.integers(1, 5)))) for i in range(12)}
        queries["oov"] = "zebra"
        qrels = [(f"q{i}", f"d{int(j)}", 1) for i in range(12) for j in rng.choice(60, size=3, replace=False)]
        folder = write_beir(root / "small", docs, queries, qrels)
        yield load_topics(str(folder))
    finally:
        if old is None:
            os.environ.pop("EVORANK_CACHE", None)
        else:
            os.environ["EVORANK_CACHE"] = old


def ranking_of(source: str, topics):
    """The child's top-100 ranking of every query, or None when it fails to compile or run validly."""
    try:
        program = compile_program(source, "<child>")
        with np.errstate(all="ignore"):
            return rank(program, topics.index, topics.queries, k=100)
    except ProgramError:
        return None


def same_ranking(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.doc_idx, b.doc_idx)) and all(
        np.array_equal(x, y) for x, y in zip(a.scores, b.scores))


@pytest.fixture(scope="module")
def children():
    """200 children of each seed (one in five a crossover with the other seed), shared by several tests."""
    strict, DEBUG.strict = DEBUG.strict, True
    try:
        out = {}
        for name in SEEDS:
            other = SEEDS["ql_dirichlet" if name == "bm25" else "bm25"]
            rng = np.random.default_rng(2024)
            out[name] = [(mutate(SEEDS[name], rng, other if i % 5 == 0 else None), i % 5 == 0) for i in range(200)]
        return out
    finally:
        DEBUG.strict = strict


# -- determinism and text ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SEEDS))
def test_same_seed_same_children(name):
    other = SEEDS["ql_dirichlet" if name == "bm25" else "bm25"]
    a_rng, b_rng = np.random.default_rng(123), np.random.default_rng(123)
    a = [mutate(SEEDS[name], a_rng, other if i % 4 == 0 else None) for i in range(10)]
    b = [mutate(SEEDS[name], b_rng, other if i % 4 == 0 else None) for i in range(10)]
    assert a == b
    assert crossover(SEEDS[name], other, np.random.default_rng(5)) == crossover(SEEDS[name], other, np.random.default_rng(5))
    assert len({m.source for m in a}) > 6  # successive draws differ from each other
    c_rng = np.random.default_rng(124)
    c = [mutate(SEEDS[name], c_rng, other if i % 4 == 0 else None) for i in range(10)]
    assert c != a  # and another seed gives another sequence


def test_deterministic_across_processes():
    """No dependence on hash randomization (set iteration order) or other process state."""
    code = ("import numpy as np, hashlib; from evorank.evolve.offline.mutator import mutate; "
            "from evorank.evaluators.program.source import seed_path; "
            "s = seed_path('bm25').read_text(); o = seed_path('ql_dirichlet').read_text(); "
            "r = np.random.default_rng(9); "
            "print(hashlib.sha1(''.join(mutate(s, r, o if i % 3 == 0 else None).source for i in range(30)).encode()).hexdigest())")
    repo = Path(__file__).resolve().parents[3]
    there = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    r = np.random.default_rng(9)
    here = "".join(mutate(SEEDS["bm25"], r, SEEDS["ql_dirichlet"] if i % 3 == 0 else None).source for i in range(30))
    assert hashlib.sha1(here.encode()).hexdigest() == there


@pytest.mark.parametrize("name", list(SEEDS))
def test_head_and_tail_are_byte_identical(name, children):
    parent = split_block(SEEDS[name])
    for m, _ in children[name]:
        child = split_block(m.source)
        assert child.head == parent.head and child.tail == parent.tail
        assert child.block != parent.block
        assert m.source == parent.head + child.block + parent.tail
        assert m.description and "\n" not in m.description


def test_constant_description_names_the_constant():
    rng = np.random.default_rng(0)
    descs = [mutate(SEEDS["bm25"], rng, n_edits=1).description for _ in range(60)]
    assert any(re.fullmatch(r"(K1|B): [-\d.e+]+ -> [-\d.e+]+", d) for d in descs)


# -- operators -----------------------------------------------------------------------------

def test_every_operator_kind_is_produced():
    seen: set[str] = set()
    rng = np.random.default_rng(3)
    for i in range(100):
        name = "bm25" if i % 2 == 0 else "ql_dirichlet"
        other = SEEDS["ql_dirichlet" if name == "bm25" else "bm25"] if i % 5 == 0 else None
        seen.add(mutate(SEEDS[name], rng, other, n_edits=1).operator)
    point_and_cross = set(OPERATORS) - set(SPLICE_OPERATORS)  # splices: test_offline_splice.py
    assert point_and_cross <= seen, point_and_cross - seen
    assert Mutation("x", "offline:crossover", "d").archive_operator == "crossover"
    assert Mutation("x", "offline:constant", "d").archive_operator == "offline"


def test_constants_move_multiplicatively_and_fractions_stay_in_unit_interval():
    rng = np.random.default_rng(11)
    bs, k1s = [], []
    for _ in range(60):
        m = mutate(SEEDS["bm25"], rng, n_edits=1)
        if m.operator == "offline:constant" and m.description.startswith(("B:", "K1:")):
            v = float(m.description.split("-> ")[1])
            (bs if m.description.startswith("B:") else k1s).append(v)
    assert bs and k1s
    assert all(0 < b < 1 for b in bs)
    assert all(k > 0 for k in k1s) and max(k1s) / min(k1s) > 1.2


@pytest.mark.parametrize("name", list(SEEDS))
def test_most_children_run_and_return_valid_scores(name, children, small_topics):
    parent = ranking_of(SEEDS[name], small_topics)
    valid = changed = 0
    for m, _ in children[name]:
        got = ranking_of(m.source, small_topics)
        if got is not None:
            valid += 1
            changed += not same_ranking(got, parent)
    assert valid >= 0.7 * len(children[name]), valid
    assert changed >= 0.5 * len(children[name]), changed


def test_chains_of_mutations_stay_valid(small_topics):
    """A random walk (each valid child becomes the parent) keeps producing valid programs."""
    rng = np.random.default_rng(77)
    valid = total = 0
    for name in SEEDS:
        cur = SEEDS[name]
        for i in range(30):
            m = mutate(cur, rng, SEEDS["bm25"] if i % 6 == 0 else None)
            total += 1
            if ranking_of(m.source, small_topics) is not None:
                valid += 1
                cur = m.source
    assert valid >= 0.8 * total


@pytest.mark.parametrize("a,b", [("bm25", "ql_dirichlet"), ("ql_dirichlet", "bm25")])
def test_crossover_of_the_seeds_is_valid(a, b, small_topics):
    rng = np.random.default_rng(8)
    kinds = set()
    for _ in range(20):
        m = crossover(SEEDS[a], SEEDS[b], rng)
        assert m.operator == "offline:crossover"
        kinds.add(m.description.split(":")[0])
        assert split_block(m.source).head == split_block(SEEDS[a]).head
        assert ranking_of(m.source, small_topics) is not None, m.description
    assert len(kinds) >= 2, kinds  # several recombination kinds apply to the two seeds


# -- safety of the generated code --------------------------------------------------------------

def names_and_attrs(block: str) -> tuple[set[str], set[str], set[str], list[ast.AST]]:
    tree = ast.parse(block)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    np_attrs = {n.attr for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "np"}
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return names, stored, np_attrs, imports


@pytest.mark.parametrize("name", list(SEEDS))
def test_children_use_no_new_names_or_imports(name, children):
    other_name = "ql_dirichlet" if name == "bm25" else "bm25"
    p_names, _, p_np, _ = names_and_attrs(split_block(SEEDS[name]).block)
    o_names, _, o_np, _ = names_and_attrs(split_block(SEEDS[other_name]).block)
    for m, cross in children[name]:
        block = split_block(m.source).block
        names, stored, np_attrs, imports = names_and_attrs(block)
        assert not imports
        allowed = p_names | (o_names if cross else set())
        new_np = NEW_NP_ATTRS
        if m.operator in SPLICE_OPERATORS:  # a spliced channel brings its own functions, parameters and builtins
            tree = ast.parse(block)
            stored = stored | {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)} | {
                f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
            allowed = allowed | {n for n in names if hasattr(builtins, n) and n not in FORBIDDEN_CALLS}
            new_np = new_np | SPLICE_NP_ATTRS
        # a name is either one the parents used, or a fresh local the child binds itself
        assert names - allowed <= stored, (names - allowed, m.description)
        assert np_attrs <= p_np | o_np | new_np, np_attrs - p_np
        for n in ast.walk(ast.parse(block)):
            if isinstance(n, ast.Attribute):
                assert not n.attr.startswith("_")
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                assert n.func.id not in FORBIDDEN_CALLS
        # the unmatched-document structure of score() is untouched
        assert "return np.where(matched, scores, -np.inf)" in block
        parents = [name, other_name] if cross else [name]
        assert any(line.strip() in block for p in parents for line in SEEDS[p].splitlines()
                   if line.strip().startswith("matched = "))


def test_bm25_children_gather_term_features_with_repeat_and_edit_the_query_weights(children):
    """The BM25 seed brings idf to its postings with np.repeat(idf, np.diff(td.indptr)) and sums with
    rows.T @ query.qtf: point edits learn that gather for other per-term features, and edit the query-term
    vector of the product (never the matrix)."""
    kids = [m for m, cross in children["bm25"] if not cross]
    gathered = [m for m in kids if re.search(r"np\.repeat\(index\.(cf|df), np\.diff\(td\.indptr\)\)", m.source)]
    assert gathered, "no child gathered index.df / index.cf to the postings the way the seed gathers idf"
    query_side = [m for m in kids if "score/scores: query.qtf" in m.description]
    assert query_side, "no child edited the query-term vector of rows.T @ query.qtf"
    for m in kids:
        for line in m.source.splitlines():
            if "rows.T @" in line:
                assert re.search(r"rows\.T @ ", line) and "rows.T +" not in line and "rows.T *" not in line


@pytest.mark.parametrize("name", list(SEEDS))
def test_children_leave_no_dead_assignments(name, children):
    """What a graft or a prune leaves unused is removed (the seeds have none)."""
    for m, _ in children[name]:
        for func in ast.parse(split_block(m.source).block).body:
            if isinstance(func, ast.FunctionDef):
                for pos, stmt in enumerate(func.body):
                    if isinstance(stmt, ast.Assign):
                        target = stmt.targets[0].id
                        later = {n.id for s in func.body[pos + 1:] for n in ast.walk(s) if isinstance(n, ast.Name)}
                        assert target in later, (target, m.description)


# -- odd input ------------------------------------------------------------------------------

HEAD = "import numpy as np\nimport scipy.sparse as sp\nimport math\n\n# EVOLVE-BLOCK-START\n"
TAIL = "# EVOLVE-BLOCK-END\n"


def test_unusable_parents_raise_value_error():
    with pytest.raises(ValueError, match="EVOLVE-BLOCK"):
        mutate("def score(q, i, s):\n    return None\n", np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not parse"):
        mutate(HEAD + "def score(:\n" + TAIL, np.random.default_rng(0))


@pytest.mark.parametrize("body,expect", [
    # loops over query terms: nothing the analysis models, but a literal can still be perturbed
    ("def score(query, index, state):\n    s = np.full(index.n_docs, -np.inf)\n"
     "    for t in query.term_ids:\n        d, tf = index.postings(t)\n"
     "        s[d] = np.where(np.isinf(s[d]), 0.0, s[d]) + tf / (tf + 1.2)\n    return s\n", "offline:constant"),
    # nothing to mutate at all: the parent comes back, marked as such
    ("def score(query, index, state):\n    r = index.term_doc[query.term_ids]\n"
     "    s = np.bincount(r.indices, weights=r.data, minlength=index.n_docs)\n    return np.where(s > 0, s, -np.inf)\n",
     "offline:none"),
    ("", "offline:none"),
])
def test_odd_programs_never_raise(body, expect):
    src = HEAD + body + TAIL
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = mutate(src, rng)
        assert m.operator == expect
        assert m.source.startswith(HEAD) and m.source.endswith(TAIL)
        compile(m.source, "<child>", "exec")
    m = mutate(src, rng, other_source=src)  # crossover of identical programs falls back to a point edit
    assert m.source.startswith(HEAD)
    assert mutate(src, rng, other_source="garbage without markers").source.startswith(HEAD)


def test_n_edits_applies_several_edits():
    rng = np.random.default_rng(6)
    multi = [mutate(SEEDS["bm25"], rng, n_edits=3) for _ in range(10)]
    assert all(m.description.count(";") >= 2 for m in multi)
