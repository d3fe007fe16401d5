"""Reuse of prepare() across candidates: the key (which code prepare depends on), the state format (plain data,
validated by trusted code), and the sandboxed path (a score-only mutation reuses the state; results are those of
a fresh prepare; nothing a candidate does to its copy reaches the next one; forged states are refused)."""
from __future__ import annotations

import os
from pathlib import Path

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
    from evorank.evaluators.cascade import CascadeConfig, cascade_sample

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


# -- reuse only where it cannot change results --------------------------------------------------------

PREPARE = "def prepare(index):\n"


@pytest.mark.parametrize("change", [
    # a cache kept by a decorated helper that prepare fills (subscript store through a call)
    ("def prepare(index):\n", "@functools.lru_cache(maxsize=None)\ndef memo():\n    return {}\n\n\n"
                              "def prepare(index):\n    memo()['seen'] = 1\n"),
    # a home-made decorator: the closure's dict outlives prepare
    ("def prepare(index):\n", "def keep(fn):\n    box = {}\n    return lambda: box\n\n\n@keep\ndef shelf():\n"
                              "    pass\n\n\ndef prepare(index):\n    shelf()['w'] = 1\n"),
    # a decorated prepare (a decorator can keep what it computed)
    ("def prepare(index):\n", "@functools.lru_cache(maxsize=None)\ndef prepare(index):\n"),
    # a module-level value bound by a walrus, read by prepare
    ("def prepare(index):\n", "(SEEN := [])\n\n\ndef prepare(index):\n    SEEN.append(1)\n"),
    # unseeded randomness: numpy's generator without a literal seed, numpy's legacy functions imported by name
    ("def prepare(index):\n", "def prepare(index):\n    k = np.random.default_rng().uniform()\n"),
    ("def prepare(index):\n", "def prepare(index):\n    k = np.random.default_rng(index.n_docs).uniform()\n"),
    ("def prepare(index):\n", "from numpy.random import default_rng\n\n\ndef prepare(index):\n"
                              "    k = default_rng().uniform()\n"),
    ("def prepare(index):\n", "from numpy.random import seed, random_sample\n\n\ndef prepare(index):\n    seed(7)\n"),
    ("def prepare(index):\n", "from numpy import random\n\n\ndef prepare(index):\n    k = random.rand()\n"),
    ("def prepare(index):\n", "def prepare(index):\n    k = np.random.rand()\n"),
    # values that differ between processes
    ("def prepare(index):\n", "def prepare(index):\n    k = hash(index.terms[0]) % 7\n"),
])
def test_prepare_that_keeps_state_or_draws_unseeded_numbers_gets_no_key(change):
    source = BM25.replace("import numpy as np\n", "import functools\nimport numpy as np\n").replace(*change)
    assert source != BM25 and source.count("def prepare(index)") == 1
    assert prepare_key(source) is None


def test_seeded_randomness_and_score_side_state_keep_the_key():
    seeded = BM25.replace(PREPARE, PREPARE + "    k = np.random.default_rng(7).uniform()\n")
    assert prepare_key(seeded) is not None
    # score may keep what it likes: it runs in every candidate
    cached = BM25.replace("def score(query, index, state):\n", "SEEN = {}\n\n\ndef score(query, index, state):\n"
                          "    SEEN[len(SEEN)] = 1\n")
    assert prepare_key(cached) is not None


def test_key_of_a_source_too_deep_to_walk_is_none():
    """A nested expression that parses but makes the key's tree walk recurse past the limit: no key, no exception
    in the worker (the pool would restart under every candidate in it)."""
    deep = BM25.replace(PREPARE, PREPARE + "    z = " + "(" * 90 + "1" + "+1)" * 90 + "\n") \
        .replace("K1 = 0.9", "K1 = " + "-" * 5000 + "0.9")
    assert prepare_key(deep) is None
    assert prepare_key("x = 1\n" * 100_000 + "def prepare(index):\n    return 1\n") is None  # too long to key


def forged_sparse(tmp_path, kind: str, indptr: np.ndarray, n_rows: int = 3) -> Path:
    """A complete stream, written past the writer's checks, holding one sparse matrix with the given pointers."""
    from evorank.evaluators.sandbox import state_wire

    good = getattr(sp, kind)(np.eye(n_rows, dtype=np.float32))
    m = getattr(sp, kind)(np.eye(n_rows, dtype=np.float32))
    m.indptr = indptr
    original = state_wire.check_sparse, state_wire._INDEX_DTYPES
    try:  # the writer's checks off: what an escaped program writing its own bytes can do
        state_wire.check_sparse, state_wire._INDEX_DTYPES = (lambda *a, **k: None), state_wire.DTYPES
        chunks = []
        assert write_state(chunks.append, (good, m), {}, 1 << 30)
    finally:
        state_wire.check_sparse, state_wire._INDEX_DTYPES = original
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(b"".join(chunks))
    return path


@pytest.mark.parametrize("kind, ptr", [
    ("csr_matrix", np.array([0, 3, 0, 3], dtype=np.uint64)),  # unsigned, running backwards
    ("csc_array", np.array([0, 4294967295, 1, 3], dtype=np.uint32)),  # wraps around
    ("csr_array", np.array([0, 2, 1, 3], dtype=np.int32)),  # signed, out of order
    ("csr_matrix", np.array([0, 1, 2, 2], dtype=np.int64)),  # ends before nnz
])
def test_validator_refuses_sparse_pointers_of_bad_type_or_order(tmp_path, kind, ptr):
    path = forged_sparse(tmp_path, kind, ptr)
    with pytest.raises(InvalidState):
        read_state(path, {})
    # the writer (in the jail) refuses the same matrix: an honest jail never sends what the worker refuses
    m = getattr(sp, kind)(np.eye(3, dtype=np.float32))
    m.indptr = ptr
    assert not write_state(lambda b: None, m, {}, 1 << 30)


def test_forged_headers_that_used_to_crash_the_worker_are_invalid_states(tmp_path):
    """Headers that made read_state raise RecursionError or TypeError (and the worker restart its pool)."""
    from evorank.evaluators.sandbox.state_wire import MAGIC, TRAILER, IncompleteState

    def stream(header: bytes, body: bytes = b"") -> bytes:
        head = MAGIC + len(header).to_bytes(4, "little") + header
        data = head + bytes(-len(head) % 64) + body
        data += bytes(-len(data) % 64)
        return data + TRAILER + (len(data) + len(TRAILER) + 8).to_bytes(8, "little")

    slot = '{"t":"ndarray","a":%s}'
    headers = [b"[" * 200_000,
               ('{"root":%s,"offsets":[128]}' % (slot % '{"dtype":["<f8"],"shape":[1],"array":0,"writeable":true}'))
               .encode(),
               ('{"root":%s,"offsets":[]}' % (slot % '{"ref":["doc_len"]}')).encode(),
               ('{"root":%s,"offsets":[128]}' % (slot % '{"dtype":"<f8","shape":[1.5],"array":0,"writeable":true}'))
               .encode(),
               b'{"root":{"t":{"x":1}},"offsets":[]}',
               b'{"root":{"t":"int","v":1e400},"offsets":[]}']
    path = tmp_path / "s.bin"
    for header in headers:
        path.write_bytes(stream(header, bytes(64)))
        with pytest.raises(InvalidState) as info:
            read_state(path, index_arrays(FakeIndex()))
        assert type(info.value) is InvalidState  # complete but forged: refused (the run fails), not just dropped
    path.write_bytes(stream(b'{"root":{"t":"none"},"offsets":[]}')[:-5])
    with pytest.raises(IncompleteState):
        read_state(path, {})


# -- disk amplification -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda index: (lambda big: [big[:] for _ in range(400)])(np.ones(32_768)),  # 400 views of one array
    lambda index: [np.broadcast_to(np.ones(1), (1_000_000,)) for _ in range(10)],  # one value, a million times
    lambda index: [index.term_doc.data[:len(index.term_doc.data) - 1 - i] for i in range(3)],  # slices of the index
    lambda index: (lambda a: [a, a.reshape(2, -1), a[::2]])(np.arange(1000.0)),  # views of one array
])
def test_a_state_that_writes_more_than_it_holds_is_not_shared(make):
    from evorank.evaluators.sandbox.state_wire import array_fingerprints

    index = FakeIndex()
    index.term_doc = sp.csr_matrix(np.ones((3, 40), dtype=np.float32))
    written = []
    assert not write_state(written.append, make(index), array_fingerprints(index), 1 << 30)
    assert not written
    # one array named twice is written once, and an index array travels as a reference
    whole = np.arange(1000.0)
    assert write_state(written.append, [whole, whole, index.term_doc.data], array_fingerprints(index), 1 << 30)
    assert sum(map(len, written)) < whole.nbytes + 1024


def test_states_are_bounded_relative_to_the_index(topics, monkeypatch):
    """A state of distinct arrays larger than STATE_INDEX_FACTOR x the index (+ a base, set to 0 here) is not
    stored; the cache holds nothing but finished states (no spool left)."""
    from evorank.evaluators.sandbox import prepared

    monkeypatch.setattr(prepared, "STATE_BASE_BYTES", 0)
    index_bytes = sum(a.nbytes for a in index_arrays(topics.index).values())
    big = BM25.replace("K1 = 0.9", "K1 = 0.55").replace(
        "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)",
        f"    pad = np.ones({3 * index_bytes // 8})\n"
        "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape), pad")
    big = big.replace("    rows = state[query.term_ids]", "    rows = state[0][query.term_ids]")
    res = run_sandboxed(big, topics.index, topics.queries, 100, REUSE)
    assert res.ok and cache_for(topics.index).lookup(prepare_key(big)) is None
    assert not list(cache_for(topics.index).dir.glob(".spool-*"))
    small = big.replace(f"np.ones({3 * index_bytes // 8})", f"np.ones({index_bytes // 8})")
    assert run_sandboxed(small, topics.index, topics.queries, 100, REUSE).ok
    assert cache_for(topics.index).lookup(prepare_key(small)) is not None


def test_stale_spools_are_swept_and_live_ones_kept(tmp_path):
    from evorank.evaluators.sandbox.prepared import remove_stale_spools

    dead = 2**22 + 12345  # above pid_max on Linux: no such process
    (tmp_path / f".spool-{dead}-1").write_bytes(b"x" * 100)
    (tmp_path / f".tmp-{dead}-2").mkdir()
    (tmp_path / f".spool-{os.getpid()}-3").write_bytes(b"x")
    (tmp_path / "abc").mkdir()
    remove_stale_spools(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".spool-{os.getpid()}-3", "abc"])


def test_prepared_mb_zero_turns_reuse_off_in_workers(topics, monkeypatch):
    """The cap is read where the Evaluator is made (workers start with a scrubbed environment, in which the
    variable used to be blank, so they fell back to the default and kept storing states)."""
    monkeypatch.setenv("EVORANK_PREPARED_MB", "0")
    source = BM25.replace("K1 = 0.9", "K1 = 1.3")
    with Evaluator([], n_workers=1, limits=Limits(timeout_s=30), topics=[topics], cascade=None) as ev:
        assert not ev.limits.reuse_prepare and ev.limits.prepared_mb == 0
        results = ev.evaluate([source, source.replace(SCORE_LINE, SCORE_LINE + " * 3.0")])
    assert all(r.ok for r in results) and [r.prepare_reused for r in results] == [0, 0]
    assert cache_for(topics.index).lookup(prepare_key(source)) is None
    monkeypatch.setenv("EVORANK_PREPARED_MB", "64")
    with Evaluator([], n_workers=1, limits=Limits(timeout_s=30), topics=[topics], cascade=None) as ev:
        assert ev.limits.reuse_prepare and ev.limits.prepared_mb == 64


# -- the battery: a reused state gives exactly what a fresh prepare gives --------------------------------

REPO = Path(__file__).resolve().parents[3]
STATE_LINE = "    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)"
ROWS_LINE = "    rows = state[query.term_ids]"


def with_extra_state(extra: str, k1: str, before: str = "") -> str:
    """BM25 whose state is (weights, <extra>); ``score`` uses the weights (and nothing else of the state)."""
    return (BM25.replace("K1 = 0.9", f"K1 = {k1}").replace(STATE_LINE, STATE_LINE.replace("return ", "w = ")
                                                           + f"\n{before}    return w, {extra}")
            .replace(ROWS_LINE, "    rows = state[0][query.term_ids]"))


BATTERY = {
    "bm25": BM25,
    "ql": seed_path("ql_dirichlet").read_text(),
    **{f"example {p.stem}": p.read_text() for p in sorted((REPO / "examples").glob("*.py")) if p.stem != "__init__"},
    # prepare fills a cache kept by a decorated helper; score reads it
    "lru_cache": BM25.replace("K1 = 0.9", "K1 = 0.61").replace("import numpy as np\n", "import functools\nimport numpy as np\n")
    .replace("def prepare(index):\n", "@functools.lru_cache(maxsize=None)\ndef memo():\n    return {}\n\n\n"
                                      "def prepare(index):\n    memo()['n'] = 1\n")
    .replace(ROWS_LINE, "    if not memo():\n        return np.zeros(index.n_docs)\n" + ROWS_LINE),
    # the same through a closure
    "closure": BM25.replace("K1 = 0.9", "K1 = 0.62")
    .replace("def prepare(index):\n", "def keep(fn):\n    box = {}\n    return lambda: box\n\n\n@keep\ndef shelf():\n"
                                      "    pass\n\n\ndef prepare(index):\n    shelf()['n'] = 1\n")
    .replace(ROWS_LINE, "    if not shelf():\n        return np.zeros(index.n_docs)\n" + ROWS_LINE),
    # numpy's legacy generator seeded in prepare, drawn in score
    "legacy random": BM25.replace("K1 = 0.9", "K1 = 0.63").replace(
        "import numpy as np\n", "import numpy as np\nfrom numpy.random import seed, random_sample\n")
    .replace("def prepare(index):\n", "def prepare(index):\n    seed(7)\n")
    .replace("    return np.where(matched, scores, -np.inf)",
             "    return np.where(matched, scores + 0.5 * random_sample(index.n_docs), -np.inf)"),
    # a seeded generator in prepare: shareable
    "seeded rng": BM25.replace("K1 = 0.9", "K1 = 0.64").replace(
        "    td = index.term_doc\n", "    td = index.term_doc\n    jitter = np.random.default_rng(3).uniform(0.9, 1.1)\n")
    .replace("    tf = td.data\n", "    tf = td.data * np.float32(jitter)\n"),
    # states that write more than they hold, or hold malformed matrices: not shared (the producer still runs)
    "views": with_extra_state("[big[:] for _ in range(40)]", "0.65", "    big = np.ones(32_768)\n"),
    "broadcast": with_extra_state("[np.broadcast_to(np.ones(1), (100_000,)) for _ in range(5)]", "0.66"),
    "index slices": with_extra_state("[td.data[:len(td.data) - 1 - i] for i in range(20)]", "0.67"),
    "unsigned pointers": with_extra_state("bad", "0.68").replace(
        "    return w, bad", "    bad = sp.csr_matrix(w)\n    bad.indptr = np.full(len(w.indptr), w.nnz, dtype=np.uint64)\n"
                            "    bad.indptr[0] = 0\n    bad.indptr[2::2] = 0\n    return w, bad"),
}
# unseeded randomness: every fresh prepare differs, so nothing may be shared
UNSEEDED = BM25.replace("K1 = 0.9", "K1 = 0.69").replace(
    "    td = index.term_doc\n", "    td = index.term_doc\n    jitter = np.random.default_rng().uniform(0.5, 2.0)\n") \
    .replace("    tf = td.data\n", "    tf = td.data * np.float32(jitter)\n")


@pytest.mark.parametrize("name", sorted(BATTERY))
def test_reused_prepare_gives_exactly_the_fresh_results(topics, name):
    source = BATTERY[name]
    assert source != BM25 or name == "bm25"
    producer = run_sandboxed(source, topics.index, topics.queries, 100, REUSE, restrict_builtins=False)
    consumer = run_sandboxed(source, topics.index, topics.queries, 100, REUSE, restrict_builtins=False)
    fresh = run_sandboxed(source, topics.index, topics.queries, 100, Limits(timeout_s=30), restrict_builtins=False)
    assert producer.ok and consumer.ok and fresh.ok, (name, producer.reason, consumer.reason, fresh.reason)
    assert same(consumer, fresh) and same(producer, fresh), name
    shareable = name in ("bm25", "ql", "seeded rng") or name.startswith("example")
    assert consumer.prepare_reused == (1 if shareable else 0), name


def test_unseeded_prepare_is_never_shared(topics):
    assert prepare_key(UNSEEDED) is None
    runs = [run_sandboxed(UNSEEDED, topics.index, topics.queries, 100, REUSE) for _ in range(2)]
    assert all(r.ok and r.prepare_reused == 0 for r in runs)
