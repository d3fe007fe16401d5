"""One candidate cannot harm its batch: what a jail sends the worker (its prepare() state, its result stream) can
make that candidate fail, never the worker. A forged state used to make the worker raise while validating it;
the Evaluator then restarted its pool and the honest candidates in flight failed with it.

The hostile programs here run with the language layers off (``_unsafe_skip_language_checks``, as a candidate
that got past them would run) and write their own bytes into the state pipe the harness keeps for them.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import random_topics
from evorank.evaluators.parallel import Evaluator
from evorank.evaluators.program.source import seed_path
from evorank.evaluators.sandbox.prepare_key import prepare_key
from evorank.evaluators.sandbox.prepared import cache_for
from evorank.evaluators.sandbox.runner import Limits, run_sandboxed

BM25 = seed_path("bm25").read_text(encoding="utf-8")
LIMITS = Limits(timeout_s=30)

# The prepare() state pipe is the last FIFO among the jail's descriptors (kept above the result pipe).
FORGER = """
import os, stat
import numpy as np
import scipy.sparse as sp

def state_pipe():
    last = None
    for fd in range(3, 1024):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                last = fd
        except OSError:
            pass
    return last

def stream(header, body=b''):
    head = b'EVST1\\n' + len(header).to_bytes(4, 'little') + header
    data = head + bytes(-len(head) % 64) + body
    data += bytes(-len(data) % 64)
    return data + b'EVEND\\n' + (len(data) + 14).to_bytes(8, 'little')

def prepare(index):
    fd = state_pipe()
    data = stream(HEADER, bytes(BODY))
    while data:
        data = data[os.write(fd, data[:1 << 20]):]
    return {0}  # a set: not shareable, so the harness sends nothing of its own

def score(query, index, state):
    rows = index.term_doc[query.term_ids]
    return np.where(rows.T @ np.ones(len(query.term_ids)) > 0, rows.T @ query.qtf, -np.inf)
"""
FORGED_HEADERS = {
    "nested": ("b'[' * 200_000", 0),  # RecursionError in the JSON parser
    "unhashable dtype": ("""b'{"root":{"t":"ndarray","a":{"dtype":["<f8"],"shape":[1],"array":0,"writeable":true}},"""
                         """"offsets":[128]}'""", 64),  # TypeError in a membership test
    "reference by list": ("""b'{"root":{"t":"ndarray","a":{"ref":["doc_len"]}},"offsets":[]}'""", 8 << 20),
}


def forger(kind: str) -> str:
    header, body = FORGED_HEADERS[kind]
    return f"HEADER = {header}\nBODY = {body}\n" + FORGER


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    yield from random_topics(tmp_path_factory, "batch", n_docs=150, n_queries=20)


def spools(topics) -> list:
    return list(cache_for(topics.index).dir.glob(".spool-*")) + list(cache_for(topics.index).dir.glob(".tmp-*"))


@pytest.mark.parametrize("kind", sorted(FORGED_HEADERS))
def test_a_forged_state_fails_its_candidate_and_leaves_nothing(topics, kind):
    res = run_sandboxed(forger(kind), topics.index, topics.queries, 100, Limits(timeout_s=30, reuse_prepare=True),
                        restrict_builtins=False)
    assert res.reason == "protocol_error" and "prepare() state" in res.message
    assert cache_for(topics.index).lookup(prepare_key(forger(kind))) is None
    assert spools(topics) == []


def test_honest_candidates_keep_their_fitness_beside_a_state_forger(topics):
    """5 honest candidates evaluated with one state-forging candidate in the same batch (2 workers): their
    fitness is exactly what it is without the forger, no task is retried, no spool is left."""
    honest = [BM25.replace("K1 = 0.9", f"K1 = {k1}") for k1 in (0.5, 0.7, 1.1, 1.3, 1.5)]
    with Evaluator([], n_workers=2, limits=LIMITS, topics=[topics], cascade=None) as ev:
        ev._unsafe_skip_language_checks = True
        alone = ev.evaluate(honest)
        batch = ev.evaluate(honest[:2] + [forger("nested")] + honest[2:] + [forger("unhashable dtype")])
        retries = ev.task_retries
    assert all(r.ok for r in alone)
    mixed = batch[:2] + batch[3:6]
    assert [r.fitness for r in mixed] == [r.fitness for r in alone]
    assert all(r.ok for r in mixed) and retries == 0
    assert [batch[2].failure_reason, batch[6].failure_reason] == ["protocol_error"] * 2
    assert spools(topics) == []


def test_a_source_that_makes_the_key_recurse_fails_nothing_but_itself(topics):
    """A nested expression that the jail runs fine but that is too deep for the worker's key computation (it used
    to raise RecursionError in the worker, before the jail started)."""
    deep = BM25.replace("    td = index.term_doc\n",
                        "    td = index.term_doc\n    z = 0 * (" + "1 + " * 300 + "1)\n")
    assert prepare_key(deep) is None
    res = run_sandboxed(deep, topics.index, topics.queries, 100, Limits(timeout_s=30, reuse_prepare=True))
    ref = run_sandboxed(BM25, topics.index, topics.queries, 100, LIMITS)
    assert res.ok or res.reason.startswith(("exception:", "syntax_error")), (res.reason, res.message)
    if res.ok:
        assert all(np.array_equal(a, b) for a, b in zip(res.ranking.doc_idx, ref.ranking.doc_idx))
