"""Splice operators of the offline mutator: every kind on both seeds gives a statically valid program that
runs and returns valid scores, keeps the parent's unretrieved documents unretrieved unless the channel adds
matches, refuses a second copy of itself, is deterministic, and is told by evidence_kinds; random walks of
mixed operators (splices, point edits, crossovers) under DEBUG.strict stay valid."""
from __future__ import annotations

import ast

import numpy as np
import pytest

from conftest import write_beir, write_random_beir
from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.program.source import compile_program, seed_path, split_block
from evorank.evaluators.program.ranking import plain_scores
from evorank.evaluators.program.checks import static_check
from evorank.evolve.offline import mutator as offline_mutator
from evorank.evolve.offline.block import DEBUG, NoEdit, parse_program
from evorank.evolve.engine.evidence import EVIDENCE_KINDS, evidence_kinds
from evorank.evolve.offline.mutator import OPERATORS, mutate
from evorank.evolve.offline.splice import SPLICE_OPERATORS, find_anchor, splice, splice_mutation

SEEDS = {name: seed_path(name).read_text(encoding="utf-8") for name in ("bm25", "ql_dirichlet")}
KIND_OF = {"offline:splice_field": {"fields"}, "offline:splice_proximity": {"positions", "query_words"},
           "offline:splice_variants": {"term_strings"}, "offline:splice_feedback": {"feedback"}}


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setattr(DEBUG, "strict", True)


@pytest.fixture(scope="module")
def titled(tmp_path_factory):
    """80 documents with titles over a vocabulary of prefix / trigram variants; some queries are bigrams
    taken from the documents, so every channel finds evidence."""
    rng = np.random.default_rng(5)
    vocab = ("tango tangent tangerine mango mangrove banana bandana cherry cherub delta deltoid echo echoes "
             "foxtrot fox golf golfer hotel hotels india indian juliet kilo kilogram lima limestone").split()
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.7
    p /= p.sum()
    words = lambda n: list(rng.choice(vocab, size=n, p=p))  # noqa: E731
    docs, bodies = {}, []
    for i in range(80):
        body = words(int(rng.integers(8, 40)))
        bodies.append(body)
        docs[f"d{i}"] = (" ".join(words(int(rng.integers(0, 4)))), " ".join(body))
    queries = {}
    for i in range(30):
        if i % 2:
            b = bodies[int(rng.integers(80))]
            j = int(rng.integers(len(b) - 2))
            queries[f"q{i}"] = " ".join(b[j:j + 2] + words(1))
        else:
            queries[f"q{i}"] = " ".join(words(int(rng.integers(2, 5))))
    qrels = [(f"q{i}", f"d{int(j)}", 1) for i in range(30) for j in rng.choice(80, size=4, replace=False)]
    return load_topics(str(write_beir(tmp_path_factory.mktemp("titled") / "c", docs, queries, qrels)))


@pytest.fixture(scope="module")
def untitled(tmp_path_factory):
    return load_topics(str(write_random_beir(tmp_path_factory.mktemp("untitled") / "c", n_docs=60, n_queries=20)))


def full_scores(source: str, topics) -> list[np.ndarray]:
    """Every query's whole score array (validated as the harness does)."""
    prog = compile_program(source, "<child>")
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        state = prog.prepare(topics.index) if prog.prepare else None
        return [plain_scores(prog.score(q, topics.index, state), topics.index.n_docs) for q in topics.queries]


def children_of(name: str, op: str, n: int = 6):
    out = []
    for k in range(n):
        try:
            out.append(splice(SEEDS[name], np.random.default_rng(1000 + k), op))
        except NoEdit:
            pass
    return out


@pytest.mark.parametrize("name", list(SEEDS))
@pytest.mark.parametrize("op", SPLICE_OPERATORS)
def test_spliced_children_are_valid_and_keep_unretrieved_documents(name, op, titled, untitled):
    kids = children_of(name, op)
    assert len(kids) == 6, "every kind applies to both seeds"
    for topics in (titled, untitled):
        parent = full_scores(SEEDS[name], topics)
        changed = False
        for m in kids:
            assert m.operator == op and m.description.startswith("splice ")
            static_check(m.source, SEEDS[name])
            assert split_block(m.source).head == split_block(SEEDS[name]).head
            result, _ = evaluate_on(compile_program(m.source), topics)
            assert result.ok, (result.error, m.description)
            child = full_scores(m.source, topics)
            for p, c in zip(parent, child):
                if "adds matches" in m.description:
                    assert np.all(np.isfinite(c)[np.isfinite(p)])
                else:
                    assert np.array_equal(np.isfinite(p), np.isfinite(c)), m.description
                changed |= not np.array_equal(p, c)
            if op == "offline:splice_field" and topics is untitled:  # no titles: the field splice changes nothing
                assert all(np.allclose(p, c) for p, c in zip(parent, child)), m.description
        if topics is titled:
            assert changed, f"{op} never changed a score on {name}"


def test_feedback_pass_counts_only_for_queries_whose_feedback_documents_hold_their_terms(tmp_path, cache_dir):
    import re

    docs = {"d0": "apple banana cherry", "d1": "apple banana cherry date", "d2": "apple cherry fig",
            "d3": "apple date grape", "d4": "apple fig", "d5": "apple grape", "d6": "zebra stripes savanna",
            "d7": "banana date", "d8": "lemon lime", "d9": "melon kiwi"}
    queries = {"both": "apple banana", "apart": "apple zebra"}  # no document holds both apple and zebra
    topics = load_topics(str(write_beir(tmp_path / "c", docs, queries, [("both", "d0", 1), ("apart", "d6", 1)])))
    child = splice(SEEDS["bm25"], np.random.default_rng(0), "offline:splice_feedback").source
    child = re.sub(r"(?m)^FB_DOCS = .*$", "FB_DOCS = 1.0", child)  # feedback from the best document alone
    at = lambda gate: re.sub(r"(?m)^FB_GATE = .*$", f"FB_GATE = {gate}", child)  # noqa: E731
    first = full_scores(SEEDS["bm25"], topics)
    changed = lambda gate: [not np.array_equal(f, c) for f, c in zip(first, full_scores(at(gate), topics))]  # noqa
    assert changed(-1.0) == [True, True]  # open whatever the documents hold
    assert changed(2.0) == [False, False]  # shut: the first pass alone
    # "apart"'s best document holds zebra, not apple (a fifth of the query's idf mass): left to the first pass
    assert changed(0.95) == [True, False]


@pytest.mark.parametrize("name", list(SEEDS))
@pytest.mark.parametrize("op", SPLICE_OPERATORS)
def test_a_second_splice_of_the_same_kind_is_refused_or_harmless(name, op, titled):
    rng = np.random.default_rng(3)
    m = splice(SEEDS[name], rng, op)
    copies = 1
    for _ in range(3):
        try:
            m = splice(m.source, rng, op)
        except NoEdit:
            continue
        copies += 1
        top = [s.name for s in ast.parse(split_block(m.source).block).body if isinstance(s, ast.FunctionDef)]
        assert len(top) == len(set(top))
        full_scores(m.source, titled)
    assert copies <= (2 if op == "offline:splice_field" else 1)  # field: the tf mix and the title channel


@pytest.mark.parametrize("op", SPLICE_OPERATORS)
def test_splices_are_deterministic(op):
    for name in SEEDS:
        a = [splice(SEEDS[name], np.random.default_rng(k), op) for k in range(4)]
        b = [splice(SEEDS[name], np.random.default_rng(k), op) for k in range(4)]
        assert a == b
    assert len({m.source for m in a}) > 1


def test_mutate_draws_splices_deterministically():
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(21)
        runs.append([mutate(SEEDS["bm25" if i % 2 else "ql_dirichlet"], rng) for i in range(80)])
    assert runs[0] == runs[1]
    ops = {m.operator for m in runs[0]}
    assert ops & set(SPLICE_OPERATORS) and ops - set(SPLICE_OPERATORS)
    share = sum(m.operator in SPLICE_OPERATORS for m in runs[0]) / len(runs[0])
    assert share < 0.3  # most edits stay point edits
    assert set(SPLICE_OPERATORS) <= set(OPERATORS)


def test_evidence_kinds_of_seeds_and_spliced_children():
    assert EVIDENCE_KINDS == ("term_strings", "positions", "fields", "feedback", "query_words")
    for name, src in SEEDS.items():
        assert evidence_kinds(src) == set()
        for op, kinds in KIND_OF.items():
            for m in children_of(name, op, 3):
                assert evidence_kinds(m.source) == kinds, m.description
    both = splice(splice(SEEDS["bm25"], np.random.default_rng(0), "offline:splice_feedback").source,
                  np.random.default_rng(0), "offline:splice_variants")
    assert evidence_kinds(both.source) == {"feedback", "term_strings"}
    assert evidence_kinds("def score(:") == set()


@pytest.mark.parametrize("code,kinds", [
    # aliases and helpers with other parameter names
    ("def helper(ix, q):\n    return ix.doc_tokens, q.words\n\n"
     "def score(query, index, state):\n    idx = index\n    return helper(idx, q=query) + idx.terms\n",
     {"positions", "query_words", "term_strings"}),
    # query.terms and query.positions: the query's positions count, its analysed terms are old evidence
    ("def score(qq, ii, s):\n    return qq.terms, qq.positions\n", {"positions"}),
    # fields read in prepare
    ("def prepare(index):\n    return index.field('title').term_doc\n\ndef score(q, i, s):\n    return s\n", {"fields"}),
    # a doc_term read without ranking documents is not a second pass; with one it is
    ("def score(query, index, state):\n    return index.doc_term[3]\n", set()),
    ("def score(query, index, state):\n    top = np.argsort(state)[:5]\n    return index.doc_term[top]\n", {"feedback"}),
    # an unrelated object's attributes do not count
    ("def score(query, index, state):\n    return state.terms, state.positions\n", set()),
])
def test_evidence_kinds_follows_names(code, kinds):
    assert evidence_kinds(code) == kinds


HEAD = "import numpy as np\nimport scipy.sparse as sp\n\n# EVOLVE-BLOCK-START\n"
TAIL = "# EVOLVE-BLOCK-END\n"
NO_PREPARE = ("def score(query, index, state):\n    r = index.term_doc[query.term_ids]\n"
              "    s = np.bincount(r.indices, weights=r.data, minlength=index.n_docs)\n"
              "    return np.where(s > 0, s, -np.inf)\n")


@pytest.mark.parametrize("op", SPLICE_OPERATORS)
def test_parent_without_prepare(op, titled):
    src = HEAD + NO_PREPARE + TAIL
    m = splice(src, np.random.default_rng(4), op)
    static_check(m.source, src)
    full_scores(m.source, titled)
    if op == "offline:splice_variants":
        assert "return (None, variant_table(index))" in m.source


@pytest.mark.parametrize("body", [
    "def score(query, index, state):\n    s = np.zeros(index.n_docs)\n    return -s\n",  # not accumulated scores
    "def prepare(index):\n    return None\n",  # no score
    "def score(query, index, state):\n    for t in query.term_ids:\n        return t\n",  # no final return
])
def test_unrecognised_score_raises_no_edit(body):
    prog = parse_program(HEAD + body + TAIL)
    with pytest.raises(NoEdit):
        find_anchor(prog.tree, prog.np)
    for op in SPLICE_OPERATORS:
        with pytest.raises(NoEdit):
            splice(HEAD + body + TAIL, np.random.default_rng(0), op)
    assert splice_mutation(prog, np.random.default_rng(0)) is None
    m = mutate(HEAD + body + TAIL, np.random.default_rng(0))  # mutate falls back to point edits
    assert m.operator not in SPLICE_OPERATORS


def test_numpy_under_another_alias_is_refused():
    src = seed_path("bm25").read_text().replace("import numpy as np", "import numpy as xp")
    with pytest.raises(NoEdit, match="np"):
        splice(src, np.random.default_rng(0), "offline:splice_proximity")


@pytest.mark.parametrize("op", SPLICE_OPERATORS)
def test_point_edits_still_apply_to_spliced_programs(op, titled):
    """The analysis reads spliced programs: point edits keep finding sites in the parent's formulas."""
    for name in SEEDS:
        m = splice(SEEDS[name], np.random.default_rng(8), op)
        rng = np.random.default_rng(9)
        valid, kinds = 0, set()
        for _ in range(15):
            c = mutate(m.source, rng, n_edits=int(rng.integers(1, 4)))
            static_check(c.source, SEEDS[name])
            kinds.add(c.operator)
            try:
                full_scores(c.source, titled)
                valid += 1
            except Exception:  # noqa: BLE001 - a point edit may make a child numerically bad
                pass
        assert valid >= 10, (op, name, valid)
        assert kinds - {"offline:constant"}, kinds  # not only the constant fallback


def test_random_walks_of_mixed_operators_stay_valid(monkeypatch, titled):
    """200 mutations (splices at 30%, point edits, crossovers) from the seeds and their children under
    DEBUG.strict: every child compiles and passes the static checks; most run."""
    monkeypatch.setattr(offline_mutator, "SPLICE_RATE", 0.3)
    rng = np.random.default_rng(2025)
    pool = [(name, SEEDS[name]) for name in SEEDS]
    ran = ok = 0
    ops = set()
    for i in range(200):
        name, parent = pool[int(rng.integers(len(pool)))]
        other = None
        if i % 7 == 0:
            same = [src for n, src in pool if n == name and src != parent]
            other = same[int(rng.integers(len(same)))] if same else None
        m = mutate(parent, rng, other)
        ops.add(m.operator)
        static_check(m.source, SEEDS[name])
        compile(m.source, "<child>", "exec")
        if i % 4 == 0:
            ran += 1
            try:
                full_scores(m.source, titled)
                ok += 1
            except Exception:  # noqa: BLE001 - counted below
                continue
        pool.append((name, m.source))
    assert ok >= 0.8 * ran, (ok, ran)
    assert len(ops & set(SPLICE_OPERATORS)) >= 3, ops


def test_block_size_limit_refuses_splices():
    big = SEEDS["bm25"].replace("K1 = 0.9\n", "K1 = 0.9\n" + "".join(f"PAD_{i} = {i}.0\n" for i in range(370)))
    with pytest.raises(NoEdit, match="refused"):
        splice(big, np.random.default_rng(0), "offline:splice_feedback")
