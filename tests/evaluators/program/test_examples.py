"""The example programs in examples/ against straightforward per-document reference implementations written from
their formulas, on random small collections (hypothesis); and each example as a program: static checks, the
sandbox (same rankings as in process), builtin:demo, `evorank eval examples/x.py` and `run --start` from any folder.

The references work on the analysed text (the analyzer is tested elsewhere) and compute every statistic from the
documents' term lists, never from the index."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from evorank.evaluators.index.analyzer import STOPWORDS, Analyzer, tokenize
from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.index.index import Index
from evorank.evaluators.index.build import build_arrays
from evorank.evaluators.program.source import compile_program, load_program, program_path, split_block
from evorank.evaluators.program.ranking import make_queries, rank
from evorank.evaluators.sandbox.runner import Limits, run_sandboxed
from evorank.evaluators.program.checks import static_check
from evorank.evolve.cli.main import main

EXAMPLES = ("bm25f", "proximity", "variants", "rm3", "dfr")
ANALYZER = Analyzer()


# -- the collection, as the references see it ----------------------------------------------------------------

@dataclass
class Doc:
    title: list[str]  # analysed title terms, in order
    body: list[str]
    tokens: list[tuple[str, int]]  # (term, position) of "title body", stopwords leaving gaps

    @property
    def terms(self) -> list[str]:
        return self.title + self.body


def analysed(text: str) -> list[tuple[str, int]]:
    return [(ANALYZER.stem(tok), pos) for pos, tok in enumerate(tokenize(text)) if tok and tok not in STOPWORDS]


def make_doc(title: str, body: str) -> Doc:
    tokens = analysed(f"{title} {body}" if title else body)
    n_title = len(analysed(title)) if title else 0
    terms = [t for t, _ in tokens]
    return Doc(terms[:n_title], terms[n_title:], tokens)


def make_index(raw: list[tuple[str, str]]) -> Index:
    arrays, doc_ids, terms, _, has_titles = build_arrays((f"d{i}", t, b) for i, (t, b) in enumerate(raw))
    meta = {"n_docs": len(doc_ids), "n_terms": len(terms), "total_tokens": int(arrays["doc_len"].sum()),
            "has_titles": has_titles, "_terms": terms, "_doc_ids": doc_ids}
    return Index("random", arrays, meta)


def query_counts(text: str, docs: list[Doc]) -> dict[str, int]:
    """qtf of each distinct analysed query term that occurs in the collection, in first-occurrence order."""
    vocab = {t for d in docs for t in d.terms}
    return dict(Counter(t for t, _ in analysed(text) if t in vocab))


def run_example(source: str, raw, query_text: str):
    index = make_index(raw)
    program = compile_program(source)
    (q,) = make_queries([("q", query_text)], index)
    return program.score(q, index, program.prepare(index))


def example_source(name: str, **constants) -> str:
    """The example's text, with some of its top-level constants replaced (``FB_DOCS=3``)."""
    parts = split_block(program_path(f"examples/{name}.py").read_text(encoding="utf-8"))
    block = parts.block
    for key, value in constants.items():
        block, n = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", block, flags=re.M)
        assert n == 1, key
    return parts.join(block)


def assert_same_scores(got, expected):
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    assert np.array_equal(np.isneginf(got), np.isneginf(expected)), (got, expected)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=1e-6)


# -- references, one document at a time ----------------------------------------------------------------------

def idf_lucene(df: int, n: int) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def bm25_term(tf: float, df: int, doc: Doc, docs: list[Doc], k1=0.9, b=0.4) -> float:
    avgdl = sum(len(d.terms) for d in docs) / len(docs)
    return idf_lucene(df, len(docs)) * tf / (tf + k1 * (1 - b + b * len(doc.terms) / avgdl))


def bm25_ref(qtf: dict[str, float], doc: Doc, docs: list[Doc]) -> float:
    s, matched = 0.0, False
    for t, w in qtf.items():
        tf = doc.terms.count(t)
        if tf:
            matched = True
            s += w * bm25_term(tf, sum(t in d.terms for d in docs), doc, docs)
    return s if matched else -math.inf


def bm25f_ref(qtf, doc, docs, k1=0.9, w_title=2.0, b_title=0.4, w_body=1.0, b_body=0.4) -> float:
    avg_title = sum(len(d.title) for d in docs) / len(docs)
    avg_body = sum(len(d.body) for d in docs) / len(docs)
    s, matched = 0.0, False
    for t, w in qtf.items():
        tf_title, tf_body = doc.title.count(t), doc.body.count(t)
        if tf_title + tf_body == 0:
            continue
        matched = True
        norm_title = 1 - b_title + b_title * len(doc.title) / avg_title if avg_title > 0 else 1.0
        norm_body = 1 - b_body + b_body * len(doc.body) / avg_body if avg_body > 0 else 1.0
        pseudo = w_title * tf_title / norm_title + w_body * tf_body / norm_body
        s += w * idf_lucene(sum(t in d.terms for d in docs), len(docs)) * pseudo / (k1 + pseudo)
    return s if matched else -math.inf


def proximity_ref(qtf, doc, docs, alpha=0.3) -> float:
    s = bm25_ref(qtf, doc, docs)
    occurrences = [(t, p) for t, p in doc.tokens if t in qtf]
    distances = [abs(p - p2) for t, p in occurrences for t2, p2 in occurrences if t != t2]
    if distances:
        s += math.log(alpha + math.exp(-min(distances))) - math.log(alpha)
    return s


def trigram_set(term: str) -> set[str]:
    padded = f"#{term}#"
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


def variants_ref(query_text, doc, docs, prefix_len=5, dice_min=0.7, w_prefix=0.3, w_trigram=0.3) -> float:
    vocab = {t for d in docs for t in d.terms}
    s, matched = 0.0, False
    for q, qtf in Counter(t for t, _ in analysed(query_text)).items():
        if q in vocab and q in doc.terms:
            matched = True
            s += qtf * bm25_term(doc.terms.count(q), sum(q in d.terms for d in docs), doc, docs)
        prefix = {v for v in vocab if v != q and len(q) >= prefix_len and v.startswith(q[:prefix_len])}
        similar = {v for v in vocab if v != q and 2.0 * len(trigram_set(q) & trigram_set(v))
                   / (len(trigram_set(q)) + len(trigram_set(v))) >= dice_min}
        for weight, cls in ((w_prefix, prefix), (w_trigram, similar)):
            tf = sum(doc.terms.count(v) for v in cls)
            if tf:
                matched = True
                df = sum(any(v in d.terms for v in cls) for d in docs)
                s += qtf * weight * bm25_term(tf, df, doc, docs)
    return s if matched else -math.inf


def dfr_ref(qtf, doc, docs, c=1.0) -> float:
    n = len(docs)
    avgdl = sum(len(d.terms) for d in docs) / n
    top = max(qtf.values(), default=1)
    s, matched = 0.0, False
    for t, w in qtf.items():
        tf = doc.terms.count(t)
        if not tf:
            continue
        matched = True
        tfn = tf * math.log2(1 + c * avgdl / len(doc.terms))
        lam = sum(d.terms.count(t) for d in docs) / n
        s += (w / top) * (tfn * math.log2(tfn / lam) + (lam - tfn) * math.log2(math.e)
                          + 0.5 * math.log2(2 * math.pi * tfn)) / (tfn + 1)
    return s if matched else -math.inf


def rm3_ref(qtf, docs, fb_docs=10, fb_terms=10, orig_weight=0.5) -> tuple[list[float], bool]:
    """(scores of all documents, whether rounding may decide a cut). Ties at the feedback-document and feedback-term
    cuts go to the lower document / term number. Where two values within 1e-9 of each other straddle a cut and come
    from different inputs (permuted term frequencies, say), floating-point rounding may order them either way; equal
    inputs give bit-equal values in any implementation, so their ties are never ambiguous."""
    first = [bm25_ref(qtf, d, docs) for d in docs]
    ranked = sorted((i for i in range(len(docs)) if first[i] > -math.inf), key=lambda i: (-first[i], i))
    if not ranked:
        return first, False
    inputs = [(len(d.terms), *(d.terms.count(t) for t in qtf)) for d in docs]
    ambiguous = straddles(ranked, fb_docs, first.__getitem__, inputs.__getitem__)
    feedback = ranked[:fb_docs]
    term_id = {t: i for i, t in enumerate(dict.fromkeys(t for d in docs for t in d.terms))}
    rm: dict[str, float] = {}
    for i in feedback:
        for t in set(docs[i].terms):
            rm[t] = rm.get(t, 0.0) + first[i] * docs[i].terms.count(t) / len(docs[i].terms)
    kept = sorted(rm, key=lambda t: (-rm[t], term_id[t]))
    ambiguous |= straddles(kept, fb_terms, rm.__getitem__, lambda t: tuple(docs[i].terms.count(t) for i in feedback))
    kept = kept[:fb_terms]
    total_q, total_rm = sum(qtf.values()), sum(rm[t] for t in kept)
    weight = {t: orig_weight * w / total_q for t, w in qtf.items()}
    for t in kept:
        weight[t] = weight.get(t, 0.0) + (1 - orig_weight) * rm[t] / total_rm
    return [bm25_ref(weight, d, docs) for d in docs], ambiguous


def straddles(ranked: list, n: int, value, inputs) -> bool:
    """Whether an item kept (ranked[:n]) and one cut (ranked[n:]) have values within 1e-9 but different inputs."""
    return any(abs(value(a) - value(b)) <= 1e-9 and inputs(a) != inputs(b) for a in ranked[:n] for b in ranked[n:])


# -- random collections --------------------------------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "theta", "kappa"]
STOP = ["the", "of", "and", "a", "to"]
VARIANT_WORDS = ["transport", "transports", "transit", "transform", "transformer", "transfer", "color", "colour",
                 "colors", "catalog", "catalogue", "cat", "analysis", "analyze", "network", "networking", "neuron",
                 "neural", "of", "the"]


def text(words, max_size):
    return st.lists(st.sampled_from(words), max_size=max_size).map(" ".join)


def collection(words, titles: bool):
    title = text(words, 5) if titles else st.just("")
    return st.lists(st.tuples(title, text(words, 25)), min_size=1, max_size=20)


def bm25_like_query(words):
    return text(words + ["unseen"], 6)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(raw=collection(WORDS, titles=True), query=bm25_like_query(WORDS))
def test_bm25f_equals_reference(raw, query):
    docs = [make_doc(t, b) for t, b in raw]
    qtf = query_counts(query, docs)
    assert_same_scores(run_example(example_source("bm25f"), raw, query), [bm25f_ref(qtf, d, docs) for d in docs])


@SETTINGS
@given(raw=collection(WORDS, titles=False), query=bm25_like_query(WORDS))
def test_bm25f_without_titles_is_bm25(raw, query):
    docs = [make_doc(t, b) for t, b in raw]
    qtf = query_counts(query, docs)
    assert_same_scores(run_example(example_source("bm25f"), raw, query), [bm25_ref(qtf, d, docs) for d in docs])


@SETTINGS
@given(raw=collection(WORDS[:4] + STOP, titles=True), query=text(WORDS[:4] + STOP + ["unseen"], 6),
       alpha=st.sampled_from([0.3, 1.0]))
def test_proximity_equals_reference(raw, query, alpha):
    docs = [make_doc(t, b) for t, b in raw]
    qtf = query_counts(query, docs)
    got = run_example(example_source("proximity", ALPHA=alpha), raw, query)
    assert_same_scores(got, [proximity_ref(qtf, d, docs, alpha=alpha) for d in docs])


@SETTINGS
@given(raw=collection(VARIANT_WORDS, titles=True), query=text(VARIANT_WORDS + ["transformation", "colours",
                                                                                 "networker", "cats", "xyzzy"], 4))
def test_variants_equals_reference(raw, query):
    docs = [make_doc(t, b) for t, b in raw]
    got = run_example(example_source("variants"), raw, query)
    assert_same_scores(got, [variants_ref(query, d, docs) for d in docs])


@SETTINGS
@given(raw=collection(WORDS + STOP, titles=True), query=bm25_like_query(WORDS), c=st.sampled_from([1.0, 7.0]))
def test_dfr_equals_reference(raw, query, c):
    docs = [make_doc(t, b) for t, b in raw]
    qtf = query_counts(query, docs)
    assert_same_scores(run_example(example_source("dfr", C=c), raw, query), [dfr_ref(qtf, d, docs, c=c) for d in docs])


@SETTINGS
@given(raw=collection(WORDS, titles=True), query=bm25_like_query(WORDS),
       params=st.sampled_from([(10, 10, 0.5), (3, 4, 0.7), (1, 2, 0.2)]))
def test_rm3_equals_reference(raw, query, params):
    fb_docs, fb_terms, orig = params
    docs = [make_doc(t, b) for t, b in raw]
    qtf = query_counts(query, docs)
    got = run_example(example_source("rm3", FB_DOCS=fb_docs, FB_TERMS=fb_terms, ORIG_WEIGHT=orig), raw, query)
    expected, ambiguous = rm3_ref(qtf, docs, fb_docs, fb_terms, orig)
    try:
        assert_same_scores(got, expected)
    except AssertionError:
        if ambiguous:  # a cut fell between values that rounding may order either way: no fault of the program
            reject()
        raise


def test_references_see_what_they_should():
    """The hand-checkable cases behind the property tests: positions with stopword gaps, title/body split,
    variant classes and the no-title fallback."""
    doc = make_doc("Alpha of beta", "the gamma alpha")
    assert doc.title == ["alpha", "beta"] and doc.body == ["gamma", "alpha"]
    assert doc.tokens == [("alpha", 0), ("beta", 2), ("gamma", 4), ("alpha", 5)]
    other = make_doc("", "beta beta")
    qtf = {"alpha": 1, "beta": 1}
    bonus = proximity_ref(qtf, doc, [doc, other]) - bm25_ref(qtf, doc, [doc, other])
    assert bonus == pytest.approx(math.log(0.3 + math.exp(-2)) - math.log(0.3))
    assert proximity_ref(qtf, other, [doc, other]) == bm25_ref(qtf, other, [doc, other])
    # "transmission" is not in this collection; its prefix variants are ("colour" shares too little with "color")
    raw = [("", "transport transit"), ("", "beta"), ("", "color")]
    docs = [make_doc(t, b) for t, b in raw]
    assert variants_ref("transmission", docs[0], docs) > 0 and variants_ref("transmission", docs[1], docs) == -math.inf
    assert variants_ref("colour", docs[2], docs) == -math.inf
    got = run_example(example_source("variants"), raw, "transmission colour")
    assert got[0] > 0 and got[1] == got[2] == -np.inf


# -- the examples as programs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_a_valid_starting_program(name):
    path = program_path(f"examples/{name}.py")
    source = path.read_text(encoding="utf-8")
    static_check(source, source)
    parts = split_block(source)
    assert "def score" in parts.block and parts.tail.strip() == "# EVOLVE-BLOCK-END"
    doc = source.split('"""')[1]
    assert re.search(r"\b(19|20)\d\d\b", doc), "the docstring cites the paper"


@pytest.fixture(scope="module")
def demo():
    return load_topics("builtin:demo")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_in_sandbox_ranks_as_in_process_on_demo(name, demo):
    source = program_path(f"examples/{name}.py").read_text(encoding="utf-8")
    res = run_sandboxed(source, demo.index, demo.queries, 1000, Limits(timeout_s=30))
    assert res.ok, (res.reason, res.message, res.program_text)
    ref = rank(compile_program(source), demo.index, demo.queries, 1000)
    assert res.ranking.query_ids == ref.query_ids
    for a, b, sa, sb in zip(res.ranking.doc_idx, ref.doc_idx, res.ranking.scores, ref.scores):
        assert np.array_equal(a, b) and np.array_equal(sa, sb)
    result, _ = evaluate_on(compile_program(source), demo)
    assert result.ok and result.metrics["ndcg@10"] > 0.3, result


def test_examples_are_found_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shipped = program_path("examples/bm25f.py")
    assert shipped.is_file() and shipped.parent.name == "examples" and shipped.parent != tmp_path / "examples"
    assert load_program("examples/rm3.py").score is not None
    # a file of that name in the current folder wins over the shipped one
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "bm25f.py").write_text("x = 1\n")
    assert program_path("examples/bm25f.py").resolve() == (tmp_path / "examples" / "bm25f.py").resolve()
    with pytest.raises(Exception, match="does not exist"):
        program_path("examples/no_such_example.py")
    assert main(["eval", "examples/dfr.py", "--suite", "demo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["program"] == "examples/dfr.py" and out["fitness"] > 0.5


def test_run_starts_from_examples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--suite", "demo", "--start", "bm25,examples/proximity.py,examples/variants.py", "--llm",
                 "offline", "--iterations", "2", "--islands", "1", "--workers", "1", "--out", "run", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["top", "run", "-n", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    seeds = {r["features"].get("seed_name") for r in rows if r["operator"] == "seed"}
    assert seeds == {"bm25", "examples/proximity.py", "examples/variants.py"}


def test_variants_prepare_is_shared_across_candidates(demo):
    """The variants example's state is plain sparse matrices and arrays (its classes come from the index's views),
    so a candidate that changes only its score reuses the state the first one computed, with the results of a
    fresh prepare."""
    from evorank.evaluators.parallel import Evaluator

    source = example_source("variants").replace("W_TRIGRAM = 0.3", "W_TRIGRAM = 0.3\nSALT = 271828")  # own key
    mutant = source.replace("    return np.where(matched, scores, -np.inf)", "    return np.where(matched, scores * 2.0, -np.inf)")
    assert mutant != source
    with Evaluator([], n_workers=1, limits=Limits(timeout_s=60), topics=[demo], cascade=None) as ev:
        first, second = ev.evaluate_trusted(source, name="variants"), ev.evaluate_trusted(mutant, name="mutant")
    assert first.ok and second.ok and (first.prepare_reused, second.prepare_reused) == (0, 1)
    assert second.suite.collections[0].metrics == first.suite.collections[0].metrics
