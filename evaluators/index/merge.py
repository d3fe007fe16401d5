"""The term-ordered half of a streaming index build: invert chunks of documents into runs, then merge the runs.

``invert_chunk`` turns the tokens of consecutive documents into (a) that chunk's rows of the by-document CSR
(``doc_term``) and (b) a *run*: its postings in (term, document) order with tf and title tf, and its token
positions in (term, document, position) order, spilled to disk. ``merge_runs`` then writes the by-term
arrays (``term_doc_*``, ``title_tf``, ``term_positions``) one block of terms at a time: for each block, each
run's slice for those terms is read back and scattered to where its postings go (after those of earlier
runs, which hold earlier documents), so memory holds one block, never the collection. Both are vectorised
(stable orders come from scipy's linear-time CSR -> CSC conversion, a counting sort).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .files import NpyWriter, Spill

_POINTERS = ("present", "post_ptr", "tok_ptr")
#: Working memory per posting / per token while a block of terms is merged (output, read buffer, destination).
MERGE_BYTES_PER_POSTING = 32
MERGE_BYTES_PER_TOKEN = 20


def stable_permute(keys: np.ndarray, n_keys: int, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``data`` reordered so that ``keys`` (integers in [0, n_keys)) ascend, stably; how many of each key): a
    counting sort in C (scipy's CSR -> CSC conversion of a one-entry-per-row matrix), linear in
    len(keys) + n_keys. Several fields travel together packed into one int64 ``data``."""
    n = len(keys)
    idx = np.int32 if max(n, n_keys) < 2**31 - 1 else np.int64
    m = sp.csr_matrix((data, keys.astype(idx, copy=False), np.arange(n + 1, dtype=idx)), shape=(n, max(1, n_keys)))
    t = m.tocsc()
    return t.data, np.diff(t.indptr)[:n_keys]


@dataclass
class Run:
    """One chunk's postings in term order, on disk. ``present``: the terms it holds (ascending);
    ``post_ptr`` / ``tok_ptr``: offsets of each present term's postings / tokens in the run (len(present) + 1)."""

    doc: Spill  # int32: global document number of each posting
    tf: Spill  # float32
    title_tf: Spill  # float32
    positions: Spill  # int32: positions, (term, document, position) order
    meta: Path  # prefix of present.npy, post_ptr.npy, tok_ptr.npy

    def pointers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(present, post_ptr, tok_ptr), memory-mapped: a merge step reads only the slice it needs."""
        return tuple(np.load(f"{self.meta}.{k}.npy", mmap_mode="r") for k in _POINTERS)

    def save_pointers(self, *arrays: np.ndarray) -> None:
        for k, a in zip(_POINTERS, arrays):
            np.save(f"{self.meta}.{k}.npy", a)

    def remove(self) -> None:
        for s in (self.doc, self.tf, self.title_tf, self.positions):
            s.remove()
        for k in _POINTERS:
            Path(f"{self.meta}.{k}.npy").unlink(missing_ok=True)


@dataclass
class ChunkRows:
    """A chunk's share of the by-document arrays and of the term statistics."""

    dt_indices: np.ndarray  # term ids of its postings, documents in order, terms ascending
    dt_data: np.ndarray  # float32 tf of those postings
    dt_counts: np.ndarray  # postings per document
    present: np.ndarray  # terms that occur in the chunk, ascending
    df: np.ndarray  # documents of the chunk containing each present term
    cf: np.ndarray  # occurrences of each present term


def invert_chunk(tids: np.ndarray, positions: np.ndarray, doc_len: np.ndarray, title_len: np.ndarray,
                 n_terms: int, first_doc: int, spill_dir: Path, number: int) -> tuple[ChunkRows, Run]:
    """Invert the tokens of consecutive documents (``tids``: global term ids in text order, documents in order;
    ``doc_len`` / ``title_len`` per document, a document's first ``title_len`` tokens being its title's) into the
    chunk's by-document rows and its on-disk run."""
    n, n_docs = len(tids), len(doc_len)
    doc_len = doc_len.astype(np.int64)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), doc_len)
    # tokens by term, then document, then position: (document, position) packed and moved together
    packed, per_term = stable_permute(tids, n_terms, (doc_of << 32) | positions.astype(np.int64))
    del doc_of
    d_sorted = (packed >> 32).astype(np.int32)
    pre = spill_dir / f"run{number}"
    run = Run(Spill(pre.with_suffix(".doc"), np.int32), Spill(pre.with_suffix(".tf"), np.float32),
              Spill(pre.with_suffix(".title"), np.float32), Spill(pre.with_suffix(".pos"), np.int32), pre)
    run.positions.append(packed & 0xFFFFFFFF)
    del packed
    # postings: runs of one (term, document) in that order
    boundary = np.ones(n, dtype=bool)
    np.not_equal(d_sorted[1:], d_sorted[:-1], out=boundary[1:])
    term_ends = np.cumsum(per_term)
    boundary[term_ends[per_term > 0][:-1]] = True  # a new term starts a new posting even in the same document
    starts = np.flatnonzero(boundary)
    del boundary
    tf = np.diff(np.append(starts, n)).astype(np.int64)
    p_doc = d_sorted[starts]
    del d_sorted
    post_per_term = np.diff(np.searchsorted(starts, np.concatenate([[0], term_ends])))
    present = np.flatnonzero(per_term).astype(np.int32)
    p_term = np.repeat(np.arange(n_terms, dtype=np.int64), post_per_term)
    title_tf = _title_tf(tids, doc_len, title_len.astype(np.int64), p_term, p_doc, n_docs)
    run.doc.append(p_doc.astype(np.int64) + first_doc)
    run.tf.append(tf)
    run.title_tf.append(title_tf)
    del title_tf
    for s in (run.doc, run.tf, run.title_tf, run.positions):
        s.finish()
    post_ptr = np.concatenate([[0], np.cumsum(post_per_term[present])]).astype(np.int64)
    tok_ptr = np.concatenate([[0], np.cumsum(per_term[present])]).astype(np.int64)
    run.save_pointers(present, post_ptr, tok_ptr)
    # postings by document, then term: (term, tf) packed and moved together
    by_doc, per_doc = stable_permute(p_doc, n_docs, (p_term << 32) | tf)
    rows = ChunkRows((by_doc >> 32).astype(np.int32), (by_doc & 0xFFFFFFFF).astype(np.float32), per_doc,
                     present.astype(np.int64), post_per_term[present], per_term[present].astype(np.int64))
    return rows, run


def _title_tf(tids, doc_len, title_len, p_term, p_doc, n_docs) -> np.ndarray:
    """float32 title occurrences of each posting (postings in (term, document) order), from the title tokens only."""
    title_tf = np.zeros(len(p_term), dtype=np.float32)
    has = np.flatnonzero(title_len)
    if not len(has):
        return title_tf
    counts = title_len[has]
    starts = (np.cumsum(doc_len) - doc_len)[has]
    at = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    keys = tids[at].astype(np.int64) * n_docs + np.repeat(has, counts)
    uniq, n = np.unique(keys, return_counts=True)
    title_tf[np.searchsorted(p_term * n_docs + p_doc, uniq)] = n
    return title_tf


def term_blocks(df: np.ndarray, cf: np.ndarray, memory_bytes: int) -> list[tuple[int, int]]:
    """Consecutive [t0, t1) ranges of terms whose merge fits ``memory_bytes`` (a single term may exceed it)."""
    cost = np.cumsum(df * MERGE_BYTES_PER_POSTING + cf * MERGE_BYTES_PER_TOKEN)
    edges, t = [0], 0
    n = len(df)
    while t < n:
        base = cost[t - 1] if t else 0
        nxt = int(np.searchsorted(cost, base + memory_bytes, side="right"))
        nxt = max(nxt, t + 1)
        edges.append(min(nxt, n))
        t = edges[-1]
    return list(zip(edges[:-1], edges[1:]))


def merge_runs(runs: list[Run], df: np.ndarray, cf: np.ndarray, out: dict[str, NpyWriter],
               memory_bytes: int) -> None:
    """Write the by-term arrays into ``out`` (writers for term_doc_data, term_doc_indices, title_tf,
    term_positions, declared with their final dtypes and lengths) block of terms by block of terms."""
    post_start = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    tok_start = np.concatenate([[0], np.cumsum(cf)]).astype(np.int64)
    for t0, t1 in term_blocks(df, cf, memory_bytes):
        n_post = int(post_start[t1] - post_start[t0])
        n_tok = int(tok_start[t1] - tok_start[t0])
        doc = np.empty(n_post, dtype=np.int32)
        tf = np.empty(n_post, dtype=np.float32)
        title = np.empty(n_post, dtype=np.float32)
        pos = np.empty(n_tok, dtype=np.int32)
        fill_post = post_start[t0:t1] - post_start[t0]
        fill_tok = tok_start[t0:t1] - tok_start[t0]
        for run in runs:
            present, post_ptr, tok_ptr = run.pointers()
            a, b = np.searchsorted(present, [t0, t1])
            if a == b:
                continue
            local = present[a:b].astype(np.int64) - t0
            for ptr, fill, spills, outs in ((post_ptr, fill_post, (run.doc, run.tf, run.title_tf), (doc, tf, title)),
                                            (tok_ptr, fill_tok, (run.positions,), (pos,))):
                lo, hi = int(ptr[a]), int(ptr[b])
                counts = np.diff(ptr[a:b + 1])
                dest = np.repeat(fill[local] - (ptr[a:b] - lo), counts) + np.arange(hi - lo, dtype=np.int64)
                fill[local] += counts
                for spill, arr in zip(spills, outs):
                    arr[dest] = spill.read(lo, hi - lo)
                del dest
        out["term_doc_indices"].write(doc)
        out["term_doc_data"].write(tf)
        out["title_tf"].write(title)
        out["term_positions"].write(pos)
