"""Running a ranking program over queries: analysed queries in, validated top-k rankings out.

This is the only code that calls into a ranking program. It returns rankings (document numbers and
scores), never metrics, so it can run inside an untrusted sandbox while judgements stay outside.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .allocator import keep_score_arrays
from evorank.evaluators.index.analyzer import Analyzer, tokenize
from evorank.evaluators.errors import ProgramError

DEFAULT_K = 1000


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class ProgramQuery:
    """An analysed query as ``score`` receives it (see contract.md). It has no id: a collection's query ids are
    external identifiers that a program could only use to look judgements up, so they stay on the trusted side
    (``Query.id``, ``Ranking.query_ids``)."""

    text: str
    terms: tuple[str, ...]  # analysed terms in order, repeats kept, absent ones too
    term_ids: np.ndarray  # int64, distinct in-vocabulary terms, first-occurrence order
    qtf: np.ndarray  # float64, occurrences of each of term_ids in the query
    token_ids: np.ndarray = field(default_factory=_no_ids)  # int64 per term of ``terms``: its id, -1 if absent
    positions: np.ndarray = field(default_factory=_no_ids)  # int64 per term of ``terms``: position (stopword gaps)
    words: tuple[str, ...] = ()  # lower-cased words before stopping and stemming


@dataclass(frozen=True)
class Query:
    """An analysed query with its collection's id (trusted side); ``for_program()`` is what ``score`` gets."""

    id: str
    text: str
    terms: tuple[str, ...]
    term_ids: np.ndarray
    qtf: np.ndarray
    token_ids: np.ndarray = field(default_factory=_no_ids)
    positions: np.ndarray = field(default_factory=_no_ids)
    words: tuple[str, ...] = ()

    def for_program(self) -> ProgramQuery:
        """The same query without its id (the arrays are shared: they are read-only); made once per query."""
        found = self.__dict__.get("_program")
        if found is None:
            found = ProgramQuery(self.text, self.terms, self.term_ids, self.qtf, self.token_ids, self.positions,
                                 self.words)
            object.__setattr__(self, "_program", found)  # a cache, not a field: equality and repr ignore it
        return found


def program_queries(queries) -> list[ProgramQuery]:
    """What a program may see of ``queries`` (``Query`` or already ``ProgramQuery``)."""
    return [q.for_program() if isinstance(q, Query) else q for q in queries]


def query_names(queries) -> list[str]:
    """The ids of ``queries``; for a ``ProgramQuery`` (which has none), its position ("1", "2", ...). The trusted
    side that knows the ids puts them in the ranking afterwards."""
    return [q.id if isinstance(q, Query) else str(i + 1) for i, q in enumerate(queries)]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def make_queries(pairs: list[tuple[str, str]], index, analyzer: Analyzer | None = None) -> list[Query]:
    """Analyse (id, text) pairs against an index's vocabulary."""
    analyzer = analyzer or Analyzer()
    out = []
    for qid, text in pairs:
        terms, positions, _ = analyzer.analyze_positions(text)
        token_ids = [index.term_id(t) for t in terms]
        counts: dict[int, int] = {}
        for tid in token_ids:
            if tid >= 0:
                counts[tid] = counts.get(tid, 0) + 1
        term_ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        qtf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        out.append(Query(qid, text, tuple(terms), _frozen(term_ids), _frozen(qtf),
                         _frozen(np.asarray(token_ids, dtype=np.int64)), _frozen(np.asarray(positions, dtype=np.int64)),
                         tuple(tokenize(text))))
    return out


@dataclass
class Ranking:
    """Top-k results of one program on one collection's queries (document numbers, not ids)."""

    query_ids: list[str]
    doc_idx: list[np.ndarray]  # int64 per query, best first
    scores: list[np.ndarray]  # float64 per query, non-increasing
    latency_ms: np.ndarray  # per-query wall time of score() + top-k
    prepare_ms: float


# Captured at import (before any program runs), so that a program rebinding numpy's names changes nothing here.
_ndarray, _float64, _empty, _copyto, _max, _isnan = np.ndarray, np.float64, np.empty, np.copyto, np.max, np.isnan
_INF = float("inf")


def plain_scores(scores, n_docs: int, out: np.ndarray | None = None) -> np.ndarray:
    """What ``score`` returned, validated and copied into a plain float64 array; ProgramError otherwise.

    Only an object whose type is exactly ``numpy.ndarray`` with a bool/int/float dtype is accepted:
    converting anything else (a subclass, an object with ``__array__``) could run the program's own
    code after the latency clock stopped. The copy is made without calling any code of the program.

    ``out`` (float64, ``n_docs`` long) is the copy's destination when given, so a loop over queries reuses
    one buffer: at a million documents a fresh 8 MB array per query costs more in page faults than the
    copy itself. The result is then ``out`` and is overwritten by the next call. NaN and +inf are found
    with one ``max`` over the copy (both make it not less than +inf), which is the common case's only pass."""
    if type(scores) is not _ndarray:
        raise ProgramError("invalid_scores:type",
                           f"score() must return a numpy.ndarray (not a subclass or other object), "
                           f"got {type(scores).__name__}")
    if scores.ndim != 1 or scores.shape[0] != n_docs:
        raise ProgramError(
            "invalid_scores:shape", f"score() must return shape ({n_docs},), got {scores.shape}"
        )
    if scores.dtype.kind not in "fiub":
        raise ProgramError("invalid_scores:dtype", f"score() must return numbers, got dtype {scores.dtype}")
    if out is None:
        out = _empty(n_docs, dtype=_float64)
    _copyto(out, scores, casting="unsafe")
    if n_docs and not _max(out) < _INF:
        n_nan = int(_isnan(out).sum())
        if n_nan:
            raise ProgramError("invalid_scores:nan", f"score() returned {n_nan} NaN value(s)")
        raise ProgramError("invalid_scores:inf", "score() returned +inf; use -inf only for documents not retrieved")
    return out


def score_buffer(n_docs: int) -> np.ndarray:
    """Set this process up for a loop of ``score`` calls on ``n_docs`` documents: the C allocator keeps
    collection-long arrays between queries (``allocator.keep_score_arrays``), and the float64 array returned is
    ``plain_scores``' ``out`` for every query (made with numpy's function as captured at import)."""
    keep_score_arrays(n_docs)
    return _empty(n_docs, dtype=_float64)


def top_k(scores: np.ndarray, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """The k best finite-scored documents, by score descending then document number ascending.

    Deterministic at the cut-off too: documents tied with the k-th score are taken in id order.
    """
    cand = np.flatnonzero(scores > -np.inf)
    vals = scores[cand]
    if len(cand) > k:
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        above = vals > kth
        n_tied = k - int(above.sum())
        tied = np.flatnonzero(vals == kth)[:n_tied]  # ascending doc order
        keep = np.concatenate([np.flatnonzero(above), tied])
        cand, vals = cand[keep], vals[keep]
    order = np.lexsort((cand, -vals))
    return cand[order], vals[order]


def rank(program, index, queries: list[Query], k: int = DEFAULT_K) -> Ranking:
    """Run ``prepare`` once and ``score`` per query; raises ProgramError on any program failure."""
    t0 = time.perf_counter()
    try:
        state = program.prepare(index) if program.prepare is not None else None
    except ProgramError:
        raise
    except Exception as e:
        raise ProgramError(f"exception:{type(e).__name__}", f"prepare() raised {type(e).__name__}: {e}") from None
    prepare_ms = (time.perf_counter() - t0) * 1e3
    doc_idx, all_scores, latency = [], [], np.empty(len(queries))
    buffer = score_buffer(index.n_docs)  # plain_scores' copy for every query; per-query arrays kept in the heap
    names = query_names(queries)
    for i, pq in enumerate(program_queries(queries)):
        t0 = time.perf_counter()
        try:
            s = program.score(pq, index, state)
        except Exception as e:
            raise ProgramError(
                f"exception:{type(e).__name__}", f"score() raised {type(e).__name__} on query {names[i]!r}: {e}"
            ) from None
        s = plain_scores(s, index.n_docs, buffer)
        idx, vals = top_k(s, k)
        latency[i] = (time.perf_counter() - t0) * 1e3
        doc_idx.append(idx)
        all_scores.append(vals)
    return Ranking(names, doc_idx, all_scores, latency, prepare_ms)
