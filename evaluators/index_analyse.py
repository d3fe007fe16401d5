"""Analysing blocks of documents into token arrays: the part of an index build that runs in worker processes.

``BlockAnalyser.analyse`` turns a block of (doc id, title, body) documents into an ``AnalysedBlock``: every
kept token's term (numbered within the block, in order of first occurrence), its position, and per document its
length and title length, exactly as ``index_build.build_arrays`` would analyse them one by one. Per document
the work is one regular-expression pass and one dictionary lookup per token (``Analyzer.terms_of_tokens``);
everything after that is vectorised over the block. The builder (``index_stream``) numbers terms globally by
merging each block's vocabulary in block order, so the result does not depend on which process analysed
which block.

``analysed_blocks`` runs the analysis over a pool of processes (in order, with a bounded number of blocks in
flight) or, for one worker, in the calling process.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .analyzer import STOP, Analyzer, raw_tokens

#: Worker id of a raw token that is a stopword (takes a position, gives no term) / that needs the exact path.
_STOPWORD, _SPECIAL = -1, -2


@dataclass
class AnalysedBlock:
    """One block of documents, analysed. Arrays are per kept token (``tokens``, ``positions``) or per document
    (``doc_len``, ``title_len``).

    Terms travel as the worker's own term numbers, which stay valid from block to block of one worker: each block
    carries only the terms the worker numbered while analysing it (``new_terms``, numbers ``first_new`` on, given
    in order of first occurrence in the block unless ``new_order`` says otherwise): every term the builder has
    never seen is among them, and the builder numbers such terms in that order. A worker that empties its memo
    starts a new ``generation`` of numbers."""

    doc_ids: list[str]
    tokens: np.ndarray  # int32: worker term number of every kept token, documents in order, text order
    positions: np.ndarray  # int32: position of each of those tokens in its document
    doc_len: np.ndarray  # int32: kept tokens per document
    title_len: np.ndarray  # int32: kept title tokens per document (a document's first tokens are its title's)
    has_titles: bool
    new_terms: list[str]  # the terms numbered ``first_new``, ``first_new + 1``, ... while analysing this block
    first_new: int = 0
    new_order: np.ndarray | None = None  # those numbers in order of first occurrence, when that is not numeric order
    worker: int = 0  # the analysing process
    generation: int = 0
    n_bytes: int = 0


class _Memo(dict):
    """raw token -> worker-level term number (or ``_STOPWORD`` / ``_SPECIAL``); a miss is computed on the spot, so a
    block's tokens are numbered in one C-level pass (``map(memo.__getitem__, tokens)``)."""

    def __init__(self, owner: "BlockAnalyser"):
        super().__init__()
        self.owner = owner

    def __missing__(self, tok: str) -> int:
        term = self.owner.analyzer.token_term(tok)
        n = _SPECIAL if term is None else _STOPWORD if term == STOP else self.owner.term_number(term)
        self[tok] = n
        return n


class BlockAnalyser:
    """Analyses blocks with one ``Analyzer``; raw token -> worker-level term number is memoised across blocks
    (numbers are only meaningful within one block's output, so the memo is dropped between blocks when it
    grows past ``cache_limit`` entries)."""

    def __init__(self, cache_limit: int = 1_000_000):
        self.analyzer = Analyzer(cache_limit=cache_limit)
        self.cache_limit = cache_limit
        self._ids = _Memo(self)
        self._term_ids: dict[str, int] = {}  # term -> term number
        self._strings: list[str] = []  # term number -> term
        self._sent = 0  # numbers whose terms earlier blocks carried
        self.generation = 0

    def term_number(self, term: str) -> int:
        n = self._term_ids.get(term)
        if n is None:
            n = self._term_ids[term] = len(self._strings)
            self._strings.append(term)
        return n

    def analyse(self, docs: Iterable, n_bytes: int = 0) -> AnalysedBlock:
        if len(self._ids) > self.cache_limit or len(self._strings) > self.cache_limit:
            self._ids.clear()
            self._term_ids.clear()
            self._strings.clear()
            self._sent = 0
            self.generation += 1
        doc_ids: list[str] = []
        texts: list[tuple[str, str]] = []
        raw: list[str] = []
        n_raw: list[int] = []
        n_title_raw: list[int] = []
        has_titles = False
        for item in docs:
            doc_id, title, body = item if len(item) == 3 else (item[0], "", item[1])
            doc_ids.append(doc_id)
            texts.append((title, body))
            t = raw_tokens(title) if title else []
            b = raw_tokens(body)
            raw += t
            raw += b
            n_title_raw.append(len(t))
            n_raw.append(len(t) + len(b))
            has_titles = has_titles or bool(title)
        n_docs = len(doc_ids)
        first_new = self._sent
        numbers = np.fromiter(map(self._ids.__getitem__, raw), dtype=np.int64, count=len(raw))
        counts = np.asarray(n_raw, dtype=np.int64)
        raw_start = np.cumsum(counts) - counts
        kept = numbers >= 0
        kept_idx = np.flatnonzero(kept)
        before = np.concatenate([[0], np.cumsum(kept)])  # kept tokens before each raw token
        doc_len = before[raw_start + counts] - before[raw_start]
        title_len = before[raw_start + np.asarray(n_title_raw, dtype=np.int64)] - before[raw_start]
        ids = numbers[kept_idx]
        pos = kept_idx - np.repeat(raw_start, doc_len)
        order = None  # new numbers were given in order of first occurrence
        special_at = np.flatnonzero(numbers == _SPECIAL)
        if len(special_at):  # documents with runs of underscores or over-long tokens: analysed token by token
            special = np.unique(np.searchsorted(raw_start, special_at, side="right") - 1)
            ids, pos = self._exact(special, texts, ids, pos, doc_len, title_len)
            fresh = ids[ids >= first_new]
            uniq, first = np.unique(fresh, return_index=True)
            order = uniq[np.argsort(first, kind="stable")].astype(np.int32)
        new_terms = self._strings[first_new:]
        self._sent = len(self._strings)
        return AnalysedBlock(doc_ids, ids.astype(np.int32), pos.astype(np.int32), doc_len.astype(np.int32),
                             title_len.astype(np.int32), has_titles, new_terms, first_new, order, os.getpid(),
                             self.generation, n_bytes)

    def _exact(self, special: np.ndarray, texts, ids, pos, doc_len, title_len):
        """Replace the tokens of the ``special`` documents with the analyzer's exact token-by-token output (and
        their lengths, in place)."""
        starts = np.cumsum(doc_len) - doc_len
        id_parts, pos_parts, at = [], [], 0
        for d in special.tolist():
            title, body = texts[d]
            t_terms, t_pos, start = self.analyzer.analyze_positions(title) if title else ([], [], 0)
            b_terms, b_pos, _ = self.analyzer.analyze_positions(body, start)
            id_parts += [ids[at:starts[d]], np.array([self.term_number(t) for t in t_terms + b_terms], dtype=np.int64)]
            pos_parts += [pos[at:starts[d]], np.array(t_pos + b_pos, dtype=np.int64)]
            at = starts[d] + doc_len[d]
            doc_len[d], title_len[d] = len(t_terms) + len(b_terms), len(t_terms)
        id_parts.append(ids[at:])
        pos_parts.append(pos[at:])
        return np.concatenate(id_parts), np.concatenate(pos_parts)


# -- running it in worker processes -------------------------------------------------------------------

_worker: BlockAnalyser | None = None


def _init_worker(cache_limit: int) -> None:
    global _worker
    _worker = BlockAnalyser(cache_limit)


def _analyse_in_worker(block) -> AnalysedBlock:
    return _worker.analyse(block.docs(), block.n_bytes)


def default_workers() -> int:
    """Processes for analysis: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def analysed_blocks(blocks: Iterator, workers: int = 1, cache_limit: int = 1_000_000,
                    in_flight: int | None = None) -> Iterator[AnalysedBlock]:
    """``AnalysedBlock`` of every ``DocBlock`` (``collections.DocBlock``), in input order. With ``workers`` > 1
    the analysis runs in that many processes, with at most ``in_flight`` blocks (default 2 per worker) sent
    ahead, which bounds memory; a collection of one block is analysed here without starting any."""
    blocks = iter(blocks)
    first = next(blocks, None)
    if first is None:
        return
    second = next(blocks, None)
    if workers <= 1 or second is None:
        analyser = BlockAnalyser(cache_limit)
        for block in (first, second) if second is not None else (first,):
            yield analyser.analyse(block.docs(), block.n_bytes)
        for block in blocks:
            yield analyser.analyse(block.docs(), block.n_bytes)
        return
    in_flight = in_flight or 2 * workers
    # fork: workers start in milliseconds and never re-import the caller's main module (spawn and forkserver run
    # an unguarded script again). Callers keep this process free of threads while it forks (the build's progress
    # bar refreshes from the calling thread).
    ctx = multiprocessing.get_context("fork")
    pending: deque[cf.Future] = deque()
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(cache_limit,)) as pool:
        try:
            for block in _chain(first, second, blocks):
                pending.append(pool.submit(_analyse_in_worker, block))
                if len(pending) >= in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _chain(first, second, rest):
    yield first
    yield second
    yield from rest
