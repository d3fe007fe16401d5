"""Building an index: the format, the in-memory reference build, and the atomic commit of a built folder.

``build_arrays`` analyses documents into arrays in memory; it is the reference the streaming build
(``stream``, the one ``index.get_index`` uses) is tested against, array for array and byte for byte.
``write_index`` writes such arrays; ``commit_index`` writes the manifest of any built folder and renames it
into place.

What is stored (format 2; ``ARRAYS`` lists the files, one ``.npy`` each, read back memory-mapped):

- ``doc_term_*`` / ``term_doc_*``: term frequencies as CSR by document and by term (float32 data,
  int32 indices/indptr, int64 beyond 2^31 entries);
- ``doc_len``, ``df``, ``cf``: lengths and document/collection frequencies;
- ``doc_tokens``: the term id of every token, document after document, in text order (uint16 when the
  vocabulary has at most 65,536 terms, else int32);
- ``doc_positions``: each of those tokens' position in its document, counted as Lucene counts them
  (every token of the tokenizer takes a position, so stopwords leave gaps);
- ``term_positions``: the same positions in posting order: for the postings of ``term_doc`` in order,
  each posting's ``tf`` positions, ascending (the positional postings);
- ``title_tf``: for each posting of ``term_doc``, how many of its occurrences are in the title;
  ``title_len``: title terms per document. The body is the rest (``tf - title_tf``).

Positions are uint16 when every position fits, else int32. A document is analysed as its title
followed by its body, exactly as the text "title body" would be, so the term statistics do not
depend on whether a collection has titles.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .analyzer import ANALYZER_VERSION, Analyzer

INDEX_FORMAT = 2
ARRAYS = (
    "doc_term_data", "doc_term_indices", "doc_term_indptr",
    "term_doc_data", "term_doc_indices", "term_doc_indptr",
    "doc_len", "df", "cf",
    "doc_tokens", "doc_positions", "term_positions", "title_tf", "title_len",
)


def build_arrays(docs, analyzer: Analyzer | None = None, progress=None):
    """Analyse documents into index arrays. ``docs`` yields ``(doc_id, title, body)`` (or ``(doc_id, text)`` for a
    document without a title). Returns (arrays, doc_ids, terms, warnings, has_titles)."""
    analyzer = analyzer or Analyzer()
    vocab: dict[str, int] = {}
    doc_ids: list[str] = []
    lengths: list[int] = []
    title_lengths: list[int] = []
    id_chunks: list[np.ndarray] = []
    pos_chunks: list[np.ndarray] = []
    ids: list[int] = []
    positions: list[int] = []
    has_titles = False
    for item in docs:
        doc_id, title, body = item if len(item) == 3 else (item[0], "", item[1])
        t_terms, t_pos, start = analyzer.analyze_positions(title) if title else ([], [], 0)
        b_terms, b_pos, _ = analyzer.analyze_positions(body, start)
        has_titles = has_titles or bool(title)
        ids.extend(vocab.setdefault(t, len(vocab)) for t in t_terms)
        ids.extend(vocab.setdefault(t, len(vocab)) for t in b_terms)
        positions.extend(t_pos)
        positions.extend(b_pos)
        lengths.append(len(t_terms) + len(b_terms))
        title_lengths.append(len(t_terms))
        doc_ids.append(doc_id)
        if len(ids) > 1 << 20:
            id_chunks.append(np.asarray(ids, dtype=np.int64))
            pos_chunks.append(np.asarray(positions, dtype=np.int64))
            ids, positions = [], []
        if progress is not None:
            progress(1)
    id_chunks.append(np.asarray(ids, dtype=np.int64))
    pos_chunks.append(np.asarray(positions, dtype=np.int64))
    cols = np.concatenate(id_chunks)
    pos = np.concatenate(pos_chunks)
    doc_len = np.asarray(lengths, dtype=np.int64)
    n_docs, n_terms = len(doc_ids), len(vocab)
    rows = np.repeat(np.arange(n_docs, dtype=np.int64), doc_len)
    doc_term = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(n_docs, n_terms)
    )
    doc_term.sum_duplicates()
    doc_term.sort_indices()
    term_doc = doc_term.T.tocsr()
    term_doc.sort_indices()
    idx_dtype = np.int32 if max(doc_term.nnz, n_docs, n_terms) < 2**31 - 1 else np.int64
    pos_dtype = np.uint16 if (len(pos) == 0 or pos.max() < 2**16) else np.int32
    arrays = {
        "doc_len": doc_len.astype(np.float64),
        "df": np.diff(term_doc.indptr).astype(np.int64),
        "cf": np.bincount(cols, minlength=n_terms).astype(np.int64),  # exact (a float32 sum is not, past 2^24)
        "doc_tokens": cols.astype(np.uint16 if n_terms <= 2**16 else np.int32),
        "doc_positions": pos.astype(pos_dtype),
    }
    for prefix, m in (("doc_term", doc_term), ("term_doc", term_doc)):
        arrays[f"{prefix}_data"] = m.data.astype(np.float32)
        arrays[f"{prefix}_indices"] = m.indices.astype(idx_dtype)
        arrays[f"{prefix}_indptr"] = m.indptr.astype(idx_dtype)
    # Posting order = tokens sorted by term, stably: (term, document, position), the order of term_doc's postings
    # with each posting's tf occurrences in a row.
    order = np.argsort(cols, kind="stable")
    arrays["term_positions"] = pos[order].astype(pos_dtype)
    title_len = np.asarray(title_lengths, dtype=np.int64)
    within = np.arange(len(cols), dtype=np.int64) - np.repeat(np.cumsum(doc_len) - doc_len, doc_len)
    in_title = (within < np.repeat(title_len, doc_len))[order]
    tf = term_doc.data.astype(np.int64)
    starts = np.cumsum(tf) - tf
    arrays["title_tf"] = (np.add.reduceat(in_title.astype(np.float32), starts) if len(starts)
                          else np.zeros(0)).astype(np.float32)
    arrays["title_len"] = title_len.astype(np.float64)
    warnings = []
    if len(set(doc_ids)) != n_docs:
        warnings.append(f"{n_docs - len(set(doc_ids))} duplicate document id(s); judgements refer to the first")
    terms = [None] * n_terms
    for t, i in vocab.items():
        terms[i] = t
    return arrays, doc_ids, terms, warnings, has_titles


def new_build_folder(folder: Path) -> Path:
    """A fresh temporary sibling of ``folder`` to build into (``commit_index`` renames it into place)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def commit_index(tmp: Path, folder: Path, name: str, fingerprint: str, files: dict, n_docs: int, n_terms: int,
                 total_tokens: int, warnings, has_titles: bool) -> None:
    """Write the manifest into the built folder ``tmp`` and rename it to ``folder`` (replacing a stale one)."""
    manifest = {
        "name": name,
        "fingerprint": fingerprint,
        "analyzer": ANALYZER_VERSION,
        "format": INDEX_FORMAT,
        "n_docs": n_docs,
        "n_terms": n_terms,
        "total_tokens": total_tokens,
        "has_titles": bool(has_titles),
        "warnings": warnings,
        "files": files,
        "created": time.time(),
    }
    with open(tmp / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "manifest.json").exists():
            raise  # not a lost race with another builder


def write_index(folder: Path, name: str, fingerprint: str, arrays, doc_ids, terms, warnings,
                has_titles: bool = False) -> None:
    """Write arrays built in memory atomically: into a sibling temp folder, then rename."""
    tmp = new_build_folder(folder)
    try:
        files = {}
        for key in ARRAYS:
            p = tmp / f"{key}.npy"
            np.save(p, arrays[key])
            files[p.name] = file_signature(p)
        for fname, lines in (("terms.txt", terms), ("doc_ids.txt", doc_ids)):
            p = tmp / fname
            with open(p, "w", encoding="utf-8", newline="\n") as f:
                for line in lines:
                    f.write(line.replace("\n", " "))
                    f.write("\n")
            files[fname] = file_signature(p)
        commit_index(tmp, folder, name, fingerprint, files, len(doc_ids), len(terms), int(arrays["doc_len"].sum()),
                     warnings, has_titles)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_signature(path: Path) -> dict:
    """Size and CRC32 of a file, as recorded in the manifest."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return {"size": path.stat().st_size, "crc32": crc}
