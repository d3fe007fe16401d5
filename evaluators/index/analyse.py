"""Analysing blocks of documents into token arrays: the part of an index build that runs in worker processes.

``BlockAnalyser.analyse`` turns a block of (doc id, title, body) documents into an ``AnalysedBlock``: every
kept token's term (the worker's own term numbers), its position, and per document its length and title
length, exactly as ``build.build_arrays`` would analyse them one by one. Per document the work is a
split at whitespace and one C-level dictionary lookup per chunk (each distinct chunk is tokenized, stemmed
and numbered once, with the analyzer's exact code); everything after that is vectorised over the block. The
builder (``stream``) gives global term ids in block order, so the result does not depend on which
process analysed which block.

``analysed_blocks`` runs the analysis over a pool of processes (in order, with a bounded number of blocks in
flight) or, for one worker, in the calling process.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .analyzer import STOPWORDS, Analyzer, tokenize

#: Codes of a chunk: one stopword (a position, no term); no token at all; several tokens (``_MANY - k``).
_STOPWORD, _NOTHING, _MANY = -1, -2, -3


@dataclass
class AnalysedBlock:
    """One block of documents, analysed. Arrays are per kept token (``tokens``, ``positions``) or per document
    (``doc_len``, ``title_len``).

    Terms travel as the worker's own term numbers, which stay valid from block to block of one worker: each block
    carries only the terms the worker numbered while analysing it (``new_terms``, numbers ``first_new`` on, given
    in order of first occurrence in the block): every term the builder has never seen is among them, and the
    builder numbers such terms in that order. A worker that empties its memo starts a new ``generation``."""

    doc_ids: list[str]
    tokens: np.ndarray  # int32: worker term number of every kept token, documents in order, text order
    positions: np.ndarray  # int32: position of each of those tokens in its document
    doc_len: np.ndarray  # int32: kept tokens per document
    title_len: np.ndarray  # int32: kept title tokens per document (a document's first tokens are its title's)
    has_titles: bool
    new_terms: list[str]  # the terms numbered ``first_new``, ``first_new + 1``, ... while analysing this block
    first_new: int = 0
    worker: int = 0  # the analysing process
    generation: int = 0
    n_bytes: int = 0


class _Memo(dict):
    """Whitespace-separated chunk -> code of the tokens it holds (computed on a miss with the exact tokenizer, so a
    block's chunks are coded in one C-level pass, ``map(memo.__getitem__, chunks)``): a term number (>= 0) or
    ``_STOPWORD`` for a chunk of one token, ``_NOTHING`` for none, ``_MANY - k`` for several (``many[k]``)."""

    def __init__(self, owner: "BlockAnalyser"):
        super().__init__()
        self.owner = owner
        self.many: list[np.ndarray] = []  # codes of the tokens of chunks that hold several

    def __missing__(self, chunk: str) -> int:
        owner = self.owner
        codes = [owner.term_number(owner.analyzer.stem(tok)) if tok and tok not in STOPWORDS else _STOPWORD
                 for tok in tokenize(chunk)]
        if len(codes) == 1:
            code = codes[0]
        elif not codes:
            code = _NOTHING
        else:
            code = _MANY - len(self.many)
            self.many.append(np.asarray(codes, dtype=np.int64))
        self[chunk] = code
        return code

    def clear(self) -> None:
        super().clear()
        self.many.clear()


class BlockAnalyser:
    """Analyses blocks with one ``Analyzer``. Text is cut at whitespace (a token never spans whitespace, and the
    tokenizer's look-arounds never see past it, so tokenizing the chunks one by one gives the tokens of the
    whole text); each distinct chunk is tokenized, stemmed and numbered once and memoised across blocks
    (numbers are only meaningful within one block's output, so the memo is dropped between blocks when it
    grows past ``cache_limit`` entries)."""

    def __init__(self, cache_limit: int = 1_000_000):
        self.analyzer = Analyzer(cache_limit=cache_limit)
        self.cache_limit = cache_limit
        self._codes = _Memo(self)
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
        if len(self._codes) > self.cache_limit or len(self._strings) > self.cache_limit:
            self._codes.clear()
            self._term_ids.clear()
            self._strings.clear()
            self._sent = 0
            self.generation += 1
        doc_ids: list[str] = []
        chunks: list[str] = []
        n_chunks: list[int] = []
        n_title_chunks: list[int] = []
        has_titles = False
        for item in docs:
            doc_id, title, body = item if len(item) == 3 else (item[0], "", item[1])
            doc_ids.append(doc_id)
            t = title.lower().split() if title else []
            b = body.lower().split()
            chunks += t
            chunks += b
            n_title_chunks.append(len(t))
            n_chunks.append(len(t) + len(b))
            has_titles = has_titles or bool(title)
        n_docs = len(doc_ids)
        first_new = self._sent
        codes = np.fromiter(map(self._codes.__getitem__, chunks), dtype=np.int64, count=len(chunks))
        # per document: chunks -> tokens (every token takes a position; most chunks hold exactly one)
        chunk_start = np.cumsum(n_chunks) - n_chunks
        if len(codes) and codes.min() < _STOPWORD:
            numbers, per_chunk = self._expand(codes)
            before = np.concatenate([[0], np.cumsum(per_chunk)])  # tokens before each chunk
            counts = before[chunk_start + n_chunks] - before[chunk_start]
            n_title = before[chunk_start + n_title_chunks] - before[chunk_start]
        else:
            numbers, counts, n_title = codes, np.asarray(n_chunks, np.int64), np.asarray(n_title_chunks, np.int64)
        raw_start = np.cumsum(counts) - counts
        kept = numbers >= 0
        kept_idx = np.flatnonzero(kept)
        before = np.concatenate([[0], np.cumsum(kept)])  # kept tokens before each token
        doc_len = before[raw_start + counts] - before[raw_start]
        title_len = before[raw_start + n_title] - before[raw_start]
        ids = numbers[kept_idx]
        pos = kept_idx - np.repeat(raw_start, doc_len)
        new_terms = self._strings[first_new:]
        self._sent = len(self._strings)
        return AnalysedBlock(doc_ids, ids.astype(np.int32), pos.astype(np.int32), doc_len.astype(np.int32),
                             title_len.astype(np.int32), has_titles, new_terms, first_new, os.getpid(),
                             self.generation, n_bytes)

    def _expand(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(code of every token, tokens per chunk) for chunks that hold none or several tokens."""
        per_chunk = np.ones(len(codes), dtype=np.int64)
        per_chunk[codes == _NOTHING] = 0
        many = np.flatnonzero(codes <= _MANY)
        parts = [self._codes.many[_MANY - c] for c in codes[many].tolist()]
        per_chunk[many] = [len(p) for p in parts]
        numbers = np.repeat(codes, per_chunk)
        if parts:
            starts = (np.cumsum(per_chunk) - per_chunk)[many]
            at = np.repeat(starts - (np.cumsum(per_chunk[many]) - per_chunk[many]), per_chunk[many])
            numbers[at + np.arange(len(at))] = np.concatenate(parts)
        return numbers, per_chunk


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
    the analysis runs in that many processes, with at most ``in_flight`` blocks sent ahead (default 4 per worker,
    enough to keep them busy while the builder inverts a chunk; it bounds memory to some 10 MB per block); a
    collection of one block is analysed here without starting any."""
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
    in_flight = in_flight or 4 * workers
    # fork: workers start in milliseconds and never re-import the caller's main module (spawn and forkserver run
    # an unguarded script again); the build's progress bar refreshes from the calling thread, so a CLI process
    # has no other thread. A process that has threads (a Dask worker) gets forkserver instead: forking a
    # threaded process can copy a lock some other thread holds.
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
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
