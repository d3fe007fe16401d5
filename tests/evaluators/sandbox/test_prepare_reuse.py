"""Reuse of prepare() across candidates: the key (which code prepare depends on), the state format (plain data,
validated by trusted code), and the sandboxed path (a score-only mutation reuses the state; results are those of
a fresh prepare; nothing a candidate does to its copy reaches the next one; forged states are refused)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.parallel import Evaluator
from evorank.evaluators.sandbox.prepare_key import prepare_key
from evorank.evaluators.sandbox.prepared import cache_for
from evorank.evaluators.program.source import seed_path
from evorank.evaluators.sandbox.runner import Limits, run_sandboxed
from evorank.evaluators.sandbox.state_wire import (InvalidState, build_state, index_arrays, populate_state, read_state,
                                           write_state)

from conftest import random_topics, write_random_beir

BM25 = seed_path("bm25").read_text()
SCORE_LINE = "scores = rows.T @ query.qtf.astype(np.float32)"
MUTANT = BM25.replace(SCORE_LINE, "scores = rows.T @ np.sqrt(query.qtf.astype(np.float32))")
assert SCORE_LINE in BM25 and MUTANT != BM25  # the seed still has the line these tests edit
REUSE = Limits(timeout_s=30, reuse_prepare=True)


def test_key_ignores_score_body_and_formatting_only():
    key = prepare_key(BM25)
    assert key is not None and MUTANT != BM25 and prepare_key(MUTANT) == key
    assert prepare_key(BM25 + "\n# a comment\n\n") == key
    assert prepare_key(BM25.replace("K1 = 0.9", "K1 = 1.2")) != key  # a constant prepare reads
    assert prepare_key(BM25.replace("def score(query, index, state):", "def score(query, index, state, w=2):")) != key
    # prepare reaching score by name: only an identical program shares the state
    reach = BM25.replace("    td = index.term_doc\n", "    td = index.term_doc\n    _ = score\n")
    assert prepare_key(reach) is not None
    assert prepare_key(reach.replace(SCORE_LINE, SCORE_LINE + " * 1.0")) != prepare_key(reach)


@pytest.mark.parametrize("change", [
    ("def prepare(index):\n", "CACHE = {}\n\n\ndef prepare(index):\n    CACHE['n'] = 1\n"),  # module-level dict
    ("def prepare(index):\n", "def prepare(index):\n    index.extra = 1\n"),  # attribute left on the index
    ("def prepare(index):\n", "def prepare(index):\n    global K1\n    K1 = 2.0\n"),
    ("def prepare(index):\n", "def prepare(index):\n    np.random.seed(1)\n"),  # global random state
    ("def prepare(index):\n", "def helper(x, memo={}):\n    return x\n\n\ndef prepare(index):\n"),
])
def test_programs_whose_prepare_leaves_state_behind_are_not_shared(change):
    assert prepare_key(BM25.replace(*change)) is None


def test_no_prepare_no_key():
    assert prepare_key("import numpy as np\ndef score(q, index, s):\n    return np.zeros(index.n_docs)\n") is None
    assert prepare_key("def prepare(index:\n") is None


class FakeIndex:
    def __init__(self):
        self.term_doc = sp.csr_matrix(np.array([[1.0, 0, 2], [0, 3, 0]], dtype=np.float32))
        self.term_doc.indices.flags.writeable = False
        self.doc_len = np.array([1.0, 3.0, 2.0])


def roundtrip(state, tmp_path, index=None):
    from evorank.evaluators.sandbox.state_wire import array_fingerprints

    index = index or FakeIndex()
    path = tmp_path / "stream.bin"
    chunks = []
    assert write_state(chunks.append, state, array_fingerprints(index), 1 << 30)
    path.write_bytes(b"".join(chunks))
    desc = read_state(path, index_arrays(index))
    return build_state(desc["root"], path, index_arrays(index)), path


def test_state_round_trip_keeps_values_types_and_index_references(tmp_path):
    index = FakeIndex()
    td = index.term_doc
    weights = sp.csr_matrix((td.data * 2.0, td.indices, td.indptr), shape=td.shape)
    arr = np.arange(10, dtype=np.int16).reshape(2, 5)
    state = {"w": weights, "a": arr, "again": arr, "t": (1, 2.5, float("nan"), None, True, "x", np.float32(1.5)),
             3: [np.zeros(0), np.array([True, False])]}
    got, _ = roundtrip(state, tmp_path, index)
    assert list(got) == ["w", "a", "again", "t", 3] and type(got["t"]) is tuple and type(got[3]) is list
    assert type(got["w"]) is sp.csr_matrix and (got["w"] != weights).nnz == 0
    assert got["w"].indices is not None and np.shares_memory(got["w"].indices, index.term_doc.indices)
    assert type(got["a"]) is np.ndarray and got["a"].dtype == np.int16 and np.array_equal(got["a"], arr)
    assert got["again"] is got["a"]  # one array twice stays one array
    assert type(got["t"][6]) is np.float32 and np.isnan(got["t"][2])
    got["a"][0, 0] = 99  # the receiver's copy is private and writable
    again, _ = roundtrip(state, tmp_path, index)
    assert again["a"][0, 0] == 0


@pytest.mark.parametrize("state", [object(), np.array(["a"], dtype=object), {(1, 2): 1}, lambda: 1,
                                   np.zeros(3).view(np.recarray)])
def test_other_kinds_are_not_shared(state, tmp_path):
    assert not write_state(lambda b: None, state, {}, 1 << 30)


def test_a_state_of_many_small_arrays_is_not_shared_and_encoding_it_stops_early():
    """Encoding is untimed CPU in the jail (the time-vs-CPU check): it stops at MAX_NODES instead of walking the
    whole state (a dict of 11,480 small arrays took 389 ms to encode and failed as latency_mismatch)."""
    from evorank.evaluators.sandbox.state_wire import MAX_NODES, NotShareable, encode_state

    assert write_state(lambda b: None, {i: np.arange(3) for i in range(MAX_NODES // 4)}, {}, 1 << 30)
    assert not write_state(lambda b: None, {i: np.arange(3) for i in range(20 * MAX_NODES)}, {}, 1 << 30)
    # an unshareable value past the limit is never reached: the walk stopped at the limit
    with pytest.raises(NotShareable, match="too large"):
        encode_state([np.arange(3)] * (MAX_NODES + 10) + [object()], {})


def test_forged_streams_are_refused(tmp_path):
    index = FakeIndex()
    ok, path = roundtrip(sp.csr_matrix(np.eye(3)), tmp_path, index)
    good = path.read_bytes()
    cases = [good[:-3], b"junk" + good[4:], good.replace(b'"csr_matrix"', b'"evil_type!"')]
    bad_indices = sp.csr_matrix((np.ones(2), np.array([0, 7], dtype=np.int32), np.array([0, 1, 2], dtype=np.int32)),
                                shape=(2, 3), copy=False)  # column 7 of 3
    chunks = []
    write_state(chunks.append, bad_indices, {}, 1 << 30)
    cases.append(b"".join(chunks))
    for data in cases:
        path.write_bytes(data)
        with pytest.raises(InvalidState):
            read_state(path, index_arrays(index))


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    yield from random_topics(tmp_path_factory, "reuse", n_docs=150, n_queries=12)


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.ranking.doc_idx, b.ranking.doc_idx)) and \
        all(np.array_equal(x, y) for x, y in zip(a.ranking.scores, b.ranking.scores))


def test_sandboxed_reuse_gives_the_results_of_a_fresh_prepare(topics):
    first = run_sandboxed(BM25, topics.index, topics.queries, 100, REUSE)
    again = run_sandboxed(BM25, topics.index, topics.queries, 100, REUSE)
    mutant = run_sandboxed(MUTANT, topics.index, topics.queries, 100, REUSE)
    fresh_mutant = run_sandboxed(MUTANT, topics.index, topics.queries, 100, Limits(timeout_s=30))
    assert first.ok and again.ok and mutant.ok and fresh_mutant.ok
    assert (first.prepare_reused, again.prepare_reused, mutant.prepare_reused, fresh_mutant.prepare_reused) == (0, 1, 1, 0)
    assert same(first, again) and same(mutant, fresh_mutant)
    assert again.ranking.prepare_ms == first.ranking.prepare_ms  # the producer's prepare time is reported


def test_a_prepare_returning_many_small_arrays_is_not_taken_for_forged_latency(topics):
    """The variants direction's program returns a dict of 11,480 prefix classes: encoding that state for
    sharing would cost the jail enough untimed CPU to fail a query-sample run as latency_mismatch; such a state is
    not shared, and the program runs cleanly."""
    many = BM25.replace("    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)",
                        "    classes = {i: np.arange(3) for i in range(20000)}\n"
                        "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape), classes")
    many = many.replace("    rows = state[query.term_ids]", "    rows = state[0][query.term_ids]")
    assert many.count("classes") == 2 and "state[0]" in many
    result = run_sandboxed(many, topics.index, topics.queries[:2], 100, REUSE)
    assert result.ok, (result.reason, result.message)
    assert result.prepare_reused == 0


def test_a_consumer_cannot_change_the_state_for_the_next(topics):
    vandal = MUTANT.replace("    rows = state[query.term_ids]\n",
                            "    state.data[:] = 0.0\n    rows = state[query.term_ids]\n")
    assert prepare_key(vandal) == prepare_key(BM25)
    run_sandboxed(BM25, topics.index, topics.queries, 100, REUSE)
    spoilt = run_sandboxed(vandal, topics.index, topics.queries, 100, REUSE)
    after = run_sandboxed(BM25, topics.index, topics.queries, 100, REUSE)
    fresh = run_sandboxed(BM25, topics.index, topics.queries, 100, Limits(timeout_s=30))
    assert spoilt.prepare_reused == 1 and after.prepare_reused == 1 and same(after, fresh)


def test_failed_runs_store_nothing_and_forged_states_are_refused(topics):
    cache = cache_for(topics.index)
    failing = BM25.replace("K1 = 0.9", "K1 = 0.8").replace(SCORE_LINE, "raise ValueError('no')")
    assert run_sandboxed(failing, topics.index, topics.queries, 100, REUSE).reason == "exception:ValueError"
    assert cache.lookup(prepare_key(failing)) is None
    # an escaped program writes its own bytes into the state pipe: refused by the worker's checks
    forger = BM25.replace("K1 = 0.9", "K1 = 0.7").replace("def prepare(index):\n", """def prepare(index):
    import os, stat
    for fd in range(3, 1024):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                last = fd
        except OSError:
            pass
    os.write(last, b"EVST1\\n" + b"\\xff" * 64)
""")
    res = run_sandboxed(forger, topics.index, topics.queries, 100, REUSE, restrict_builtins=False)
    assert res.ok and cache.lookup(prepare_key(forger)) is None


def test_evaluator_reports_the_hit_rate(topics):
    with Evaluator([], n_workers=1, limits=Limits(timeout_s=30), topics=[topics], cascade=None) as ev:
        results = ev.evaluate([BM25.replace("K1 = 0.9", "K1 = 1.1"),
                               BM25.replace("K1 = 0.9", "K1 = 1.1").replace(SCORE_LINE, SCORE_LINE + " * 2.0")])
        assert all(r.ok for r in results)
        assert [r.prepare_reused for r in results] == [0, 1] and ev.prepare_hit_rate == 0.5


def test_cascade_sample_is_capped_by_estimated_cost():
    from evorank.evaluators.parallel import CascadeConfig, cascade_sample

    assert len(cascade_sample(300, "x", 0)) == 60  # cheap queries: the fraction decides
    assert len(cascade_sample(300, "x", 0, query_ms=0.5)) == 60
    assert len(cascade_sample(300, "x", 0, query_ms=50.0)) == 40  # 2,000 ms of estimated scoring
    assert len(cascade_sample(300, "x", 0, query_ms=500.0)) == 20  # never below min_queries
    assert len(cascade_sample(300, "x", 0, CascadeConfig(stage1_ms=None), query_ms=500.0)) == 60


def test_cost_estimate_grows_with_documents_and_postings(topics):
    from evorank.evaluators.cost import estimate_cost

    cost = estimate_cost(topics.index, topics.queries)
    assert cost.prepare_s > 0 and len(cost.query_ms) == len(topics.queries) and cost.total_s > cost.prepare_s
    assert (cost.query_ms > 0).all()


def test_a_rebuilt_index_drops_its_prepared_states(tmp_path, monkeypatch):
    from evorank.evaluators.data.collections import load_collection
    from evorank.evaluators.index.index import get_index

    monkeypatch.setenv("EVORANK_CACHE", str(tmp_path / "cache"))
    folder = write_random_beir(tmp_path / "c", n_docs=40, n_queries=5)
    t = load_topics(str(folder))
    assert run_sandboxed(BM25, t.index, t.queries, 10, REUSE).ok
    states = tmp_path / "cache" / "prepared" / t.index.path.name
    assert any(states.iterdir())
    with open(folder / "corpus.jsonl", "a") as f:
        f.write('{"_id": "new", "text": "apple banana"}\n')
    get_index(load_collection(str(folder)))
    assert not states.exists()


def test_populate_maps_every_file_a_rebuilt_state_lies_in(tmp_path):
    index = FakeIndex()
    np.save(tmp_path / "doc_len.npy", index.doc_len)
    index.doc_len = np.load(tmp_path / "doc_len.npy", mmap_mode="r")  # as the index opens its arrays
    td = index.term_doc
    state = {"w": sp.csr_matrix((td.data * 2.0, td.indices, td.indptr), shape=td.shape), "len": index.doc_len.view(np.ndarray),
             "own": [np.arange(1000.0)]}
    got, path = roundtrip(state, tmp_path, index)
    assert populate_state(got) == path.stat().st_size + (tmp_path / "doc_len.npy").stat().st_size
    assert populate_state({"x": np.zeros(3), "s": "text", "m": sp.csr_matrix(np.eye(2))}) == 0  # nothing mapped
