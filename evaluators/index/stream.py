"""Streaming, bounded-memory index build: the path ``index.get_index`` takes for every collection.

Documents arrive as blocks (``collections.DocBlock``), are analysed in parallel worker processes
(``analyse``) and come back in order. ``StreamBuilder`` then

1. numbers terms globally in order of first occurrence (each block's vocabulary merged in block order, so the
   numbering is the one ``build.build_arrays`` gives, whatever process analysed what);
2. appends the by-document arrays (``doc_tokens``, ``doc_positions``, lengths, and the ``doc_term`` rows of
   each inverted chunk) to spill files as it goes;
3. whenever the tokens held reach the memory budget, inverts them into a run on disk (``merge``);
4. at the end merges the runs into the by-term arrays one block of terms at a time, and writes every array
   in its final dtype (chosen, as ``build_arrays`` chooses it, from the finished collection's sizes).

Memory is bounded by ``memory_mb`` (``EVORANK_INDEX_MEMORY_MB``, default ``DEFAULT_MEMORY_MB``): half for the
chunk being inverted, half for the merge and the workers' memo tables. What grows with the collection is
only the vocabulary (one dict entry and two int64 counters per distinct term) and 8 bytes per document
(hashes to detect duplicate ids). Disk: the spill files take about the index's size again, next to it, until
the build ends. The output is array-equal to ``build_arrays`` (tests: the shared collections and random ones).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analyse import AnalysedBlock, analysed_blocks, default_workers
from .files import COPY_PIECE, NpyWriter, Spill, TextWriter
from .merge import invert_chunk, merge_runs

DEFAULT_MEMORY_MB = 1024
MEMORY_ENV = "EVORANK_INDEX_MEMORY_MB"
#: Peak working memory of ``invert_chunk`` per token (token arrays, the stable order, sorted copies).
CHUNK_BYTES_PER_TOKEN = 64
#: Memory of one entry of a worker's memo tables (raw token -> term number, token -> stem, term -> number).
MEMO_BYTES_PER_ENTRY = 400
#: Text per block sent to a worker.
BLOCK_BYTES = 1 << 22


def index_memory_mb() -> int:
    """The build's memory budget in MB: ``$EVORANK_INDEX_MEMORY_MB``, else ``DEFAULT_MEMORY_MB``."""
    try:
        return max(1, int(os.environ.get(MEMORY_ENV, "") or DEFAULT_MEMORY_MB))
    except ValueError:
        return DEFAULT_MEMORY_MB


@dataclass
class BuildResult:
    """What ``StreamBuilder.finish`` wrote into its folder: file signatures and the manifest's statistics."""

    files: dict[str, dict]
    n_docs: int
    n_terms: int
    total_tokens: int
    warnings: list[str] = field(default_factory=list)
    has_titles: bool = False


class StreamBuilder:
    """Builds an index into ``folder`` (a fresh temporary folder) from ``AnalysedBlock``s added in document order."""

    def __init__(self, folder: Path, memory_mb: int | None = None):
        self.folder = Path(folder)
        self.memory_bytes = (memory_mb or index_memory_mb()) << 20
        self.chunk_tokens = max(1024, self.memory_bytes // 2 // CHUNK_BYTES_PER_TOKEN)
        self.spill_dir = self.folder / ".spill"
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(1 << 16, dtype=np.int64)
        self.cf = np.zeros(1 << 16, dtype=np.int64)
        self.n_docs = 0
        self.total_tokens = 0
        self.nnz = 0
        self.max_position = -1
        self.has_titles = False
        self.doc_ids = TextWriter(self.folder / "doc_ids.txt")
        self._hashes: list[np.ndarray] = []
        s = self.spill_dir
        self.spills = {name: Spill(s / name, dtype) for name, dtype in (
            ("doc_tokens", np.int32), ("doc_positions", np.int32), ("doc_len", np.int32), ("title_len", np.int32),
            ("doc_term_indices", np.int32), ("doc_term_data", np.float32), ("doc_term_counts", np.int32))}
        self.runs = []
        self._workers: dict[int, tuple[int, np.ndarray]] = {}  # worker -> (generation, its number -> global id)
        self._chunk: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._chunk_tokens = 0
        self._chunk_first_doc = 0

    # -- adding documents ---------------------------------------------------------------------------
    def add(self, block: AnalysedBlock) -> None:
        tids = self._global_ids(block)
        if self.n_docs + len(block.doc_ids) >= 2**31 - 1:
            raise ValueError("collections of 2^31 documents or more are not supported")
        self.spills["doc_tokens"].append(tids)
        self.spills["doc_positions"].append(block.positions)
        self.spills["doc_len"].append(block.doc_len)
        self.spills["title_len"].append(block.title_len)
        if len(block.positions):
            self.max_position = max(self.max_position, int(block.positions.max()))
        self.has_titles = self.has_titles or block.has_titles
        self.doc_ids.write_lines(block.doc_ids)
        self._hashes.append(np.fromiter(map(hash, block.doc_ids), dtype=np.int64, count=len(block.doc_ids)))
        self.n_docs += len(block.doc_ids)
        self.total_tokens += len(tids)
        self._chunk.append((tids, block.positions, block.doc_len, block.title_len))
        self._chunk_tokens += len(tids)
        if self._chunk_tokens >= self.chunk_tokens:
            self._invert()

    def _global_ids(self, block: AnalysedBlock) -> np.ndarray:
        """The block's tokens as global term ids: worker numbers are mapped through that worker's table; terms never
        seen before get the next ids in order of first occurrence in the block (as ``build_arrays`` numbers them)."""
        gen, table = self._workers.get(block.worker, (None, None))
        if gen != block.generation:
            table = np.zeros(0, dtype=np.int64)
        if block.first_new != len(table):
            raise RuntimeError("worker term numbers out of step")  # a worker's blocks arrived out of order
        vocab = self.vocab
        known = list(map(vocab.get, block.new_terms))
        table = np.concatenate([table, np.array([-1 if g is None else g for g in known], dtype=np.int64)])
        if None in known:
            base = block.first_new
            new = np.arange(base, len(table))
            for n in new[table[new] < 0].tolist():
                table[n] = vocab[block.new_terms[n - base]] = len(vocab)
            if len(table) > base and table[base:].min() < 0:
                raise RuntimeError("a worker numbered a term its block does not hold")
            if len(vocab) > len(self.df):
                grow = max(len(vocab), 2 * len(self.df)) - len(self.df)
                self.df = np.concatenate([self.df, np.zeros(grow, dtype=np.int64)])
                self.cf = np.concatenate([self.cf, np.zeros(grow, dtype=np.int64)])
            if len(vocab) >= 2**31 - 1:
                raise ValueError("vocabularies of 2^31 terms or more are not supported")
        self._workers[block.worker] = (block.generation, table)
        return table[block.tokens].astype(np.int32)

    def _invert(self) -> None:
        if not self._chunk:
            return
        tids, positions, doc_len, title_len = (np.concatenate(x) for x in zip(*self._chunk))
        self._chunk, self._chunk_tokens = [], 0
        rows, run = invert_chunk(tids, positions, doc_len, title_len, len(self.vocab), self._chunk_first_doc,
                                 self.spill_dir, len(self.runs))
        del tids, positions
        self._chunk_first_doc += len(doc_len)
        self.runs.append(run)
        self.spills["doc_term_indices"].append(rows.dt_indices)
        self.spills["doc_term_data"].append(rows.dt_data)
        self.spills["doc_term_counts"].append(rows.dt_counts)
        self.nnz += len(rows.dt_indices)
        self.df[rows.present] += rows.df
        self.cf[rows.present] += rows.cf

    # -- finishing --------------------------------------------------------------------------------
    def finish(self) -> BuildResult:
        """Invert what is left, merge the runs, write every array and the vocabulary; remove the spill files."""
        self._invert()
        for s in self.spills.values():
            s.finish()
        n_docs, n_terms, nnz = self.n_docs, len(self.vocab), self.nnz
        df, cf = self.df[:n_terms], self.cf[:n_terms]
        idx = np.int32 if max(nnz, n_docs, n_terms) < 2**31 - 1 else np.int64
        pos = np.uint16 if (self.total_tokens == 0 or self.max_position < 2**16) else np.int32
        tok = np.uint16 if n_terms <= 2**16 else np.int32
        files: dict[str, dict] = {}

        def writer(key: str, dtype, n: int) -> NpyWriter:
            return NpyWriter(self.folder / f"{key}.npy", dtype, n)

        def done(w: NpyWriter) -> None:
            files[w.path.name] = w.close()

        sp = self.spills
        for key, spill, dtype in (("doc_term_data", sp["doc_term_data"], np.float32),
                                  ("doc_term_indices", sp["doc_term_indices"], idx),
                                  ("doc_len", sp["doc_len"], np.float64), ("title_len", sp["title_len"], np.float64),
                                  ("doc_tokens", sp["doc_tokens"], tok), ("doc_positions", sp["doc_positions"], pos)):
            w = writer(key, dtype, spill.n)
            spill.copy_to(w)
            spill.remove()
            done(w)
        w = writer("doc_term_indptr", idx, n_docs + 1)
        w.write(np.zeros(1, dtype=idx))
        carry = 0
        counts = sp["doc_term_counts"]
        for start in range(0, counts.n, COPY_PIECE):
            c = np.cumsum(counts.read(start, min(COPY_PIECE, counts.n - start)), dtype=np.int64) + carry
            w.write(c)
            carry = int(c[-1])
        counts.remove()
        done(w)
        for key, values in (("df", df), ("cf", cf)):
            w = writer(key, np.int64, n_terms)
            w.write(values)
            done(w)
        w = writer("term_doc_indptr", idx, n_terms + 1)
        w.write(np.concatenate([[0], np.cumsum(df)]))
        done(w)
        out = {"term_doc_data": writer("term_doc_data", np.float32, nnz),
               "term_doc_indices": writer("term_doc_indices", idx, nnz),
               "title_tf": writer("title_tf", np.float32, nnz),
               "term_positions": writer("term_positions", pos, self.total_tokens)}
        merge_runs(self.runs, df, cf, out, self.memory_bytes // 2)
        for w in out.values():
            done(w)
        for run in self.runs:
            run.remove()
        terms = TextWriter(self.folder / "terms.txt")
        batch = []
        for t in self.vocab:
            batch.append(t)
            if len(batch) >= 100_000:
                terms.write_lines(batch)
                batch = []
        terms.write_lines(batch)
        files["terms.txt"] = terms.close()
        files["doc_ids.txt"] = self.doc_ids.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        warnings = []
        dup = self._duplicates()
        if dup:
            warnings.append(f"{dup} duplicate document id(s); judgements refer to the first")
        return BuildResult(files, n_docs, n_terms, self.total_tokens, warnings, self.has_titles)

    def _duplicates(self) -> int:
        """How many document ids repeat an earlier one: by 64-bit hashes, confirmed on the ids themselves."""
        hashes = np.concatenate(self._hashes) if self._hashes else np.zeros(0, np.int64)
        uniq, counts = np.unique(hashes, return_counts=True)
        if len(uniq) == len(hashes):
            return 0
        suspects = set(uniq[counts > 1].tolist())
        ids = (self.folder / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
        same_hash = [d for d in ids if hash(d) in suspects]
        # ids sharing a hash are either true repeats or (rarely) distinct ids that collide
        return len(hashes) - (len(uniq) - len(suspects) + len(set(same_hash)))

    def abort(self) -> None:
        for s in self.spills.values():
            s.finish()
        self.doc_ids.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)


def build_streaming(blocks, folder: Path, memory_mb: int | None = None, workers: int | None = None,
                    progress=None, phase=None) -> BuildResult:
    """Analyse ``blocks`` (``DocBlock``s, in order) with ``workers`` processes and build the index into ``folder``.
    ``progress(docs, bytes)`` is called after each block; ``phase(text)`` when the final merge starts."""
    memory_mb = memory_mb or index_memory_mb()
    workers = workers or default_workers()
    builder = StreamBuilder(folder, memory_mb)
    memo = max(50_000, (memory_mb << 20) // 4 // workers // MEMO_BYTES_PER_ENTRY)
    try:
        for block in analysed_blocks(blocks, workers, memo):
            builder.add(block)
            if progress is not None:
                progress(len(block.doc_ids), block.n_bytes)
        if phase is not None:
            phase("merging")
        return builder.finish()
    except BaseException:
        builder.abort()
        raise

