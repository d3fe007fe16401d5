"""Inverted and forward index of a collection, built once and cached on disk, loaded memory-mapped.

An index lives in ``$EVORANK_CACHE/indexes/<name>-<key>/`` where the key hashes the collection's
fingerprint, the analyzer version and the index format. A build is written into a temporary folder
and renamed into place, so readers never see half an index; the manifest records every file's size
and CRC32, and an index that fails the check (or whose key no longer matches) is rebuilt.

Arrays are opened with ``mmap_mode="r"``: parallel workers share the same pages, and a ranking
program that tries to write into them gets ``ValueError: assignment destination is read-only``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .analyzer import ANALYZER_VERSION, Analyzer

INDEX_FORMAT = 1
_ARRAYS = (
    "doc_term_data", "doc_term_indices", "doc_term_indptr",
    "term_doc_data", "term_doc_indices", "term_doc_indptr",
    "doc_len", "df", "cf",
)


class CorruptIndex(Exception):
    pass


def cache_root() -> Path:
    """``$EVORANK_CACHE``, else the per-user cache folder (e.g. ~/.cache/evorank)."""
    env = os.environ.get("EVORANK_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evorank"))


class Index:
    """Read-only statistics of one analysed collection. See ``program_contract.md`` for the contract.

    Attributes (all numpy / scipy.sparse, read-only):
      n_docs, n_terms            sizes; documents and terms are numbered 0..n-1
      doc_len   float64[n_docs]  number of index terms in each document
      avg_doc_len, total_tokens  mean document length; sum of doc_len
      df        int64[n_terms]   documents containing each term
      cf        int64[n_terms]   occurrences of each term in the collection
      term_doc  csr (n_terms x n_docs) float32 term frequencies: row t = postings of term t
      doc_term  csr (n_docs x n_terms) float32 term frequencies: row d = terms of document d
    """

    def __init__(self, name: str, arrays: dict[str, np.ndarray], meta: dict, path: Path | None = None):
        self.name = name
        self.path = path
        self.n_docs = int(meta["n_docs"])
        self.n_terms = int(meta["n_terms"])
        self.total_tokens = int(meta["total_tokens"])
        self.avg_doc_len = self.total_tokens / self.n_docs if self.n_docs else 0.0
        self.doc_len = arrays["doc_len"]
        self.df = arrays["df"]
        self.cf = arrays["cf"]
        self.doc_term = _csr(arrays, "doc_term", (self.n_docs, self.n_terms))
        self.term_doc = _csr(arrays, "term_doc", (self.n_terms, self.n_docs))
        self.build_warnings: list[str] = list(meta.get("warnings", []))
        self._terms: list[str] | None = meta.get("_terms")
        self._doc_ids: list[str] | None = meta.get("_doc_ids")
        self._vocab: dict[str, int] | None = None

    # -- access helpers shown to ranking programs --------------------------------------------
    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc ids, term frequencies) of one term, doc ids ascending."""
        a, b = self.term_doc.indptr[term_id], self.term_doc.indptr[term_id + 1]
        return self.term_doc.indices[a:b], self.term_doc.data[a:b]

    def doc_terms(self, doc_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, term frequencies) of one document, term ids ascending."""
        a, b = self.doc_term.indptr[doc_id], self.doc_term.indptr[doc_id + 1]
        return self.doc_term.indices[a:b], self.doc_term.data[a:b]

    # -- trusted-side helpers (strings) ------------------------------------------------------
    @property
    def terms(self) -> list[str]:
        if self._terms is None:
            self._terms = _read_lines(self.path / "terms.txt")
        return self._terms

    @property
    def doc_ids(self) -> list[str]:
        if self._doc_ids is None:
            self._doc_ids = _read_lines(self.path / "doc_ids.txt")
        return self._doc_ids

    def term_id(self, term: str) -> int:
        """Id of an analysed term, or -1 when it does not occur in the collection."""
        if self._vocab is None:
            self._vocab = {t: i for i, t in enumerate(self.terms)}
        return self._vocab.get(term, -1)

    def __repr__(self) -> str:
        return f"Index({self.name!r}, n_docs={self.n_docs}, n_terms={self.n_terms}, avg_doc_len={self.avg_doc_len:.1f})"


def _csr(arrays: dict, prefix: str, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape, copy=False
    )
    m.has_sorted_indices = True  # built sorted; lets scipy skip a sort that would need to write
    return m


def _read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text else []


# -- building ----------------------------------------------------------------------------------

def build_arrays(docs, analyzer: Analyzer | None = None, progress=None):
    """Analyse ``(doc_id, text)`` pairs into index arrays. Returns (arrays, doc_ids, terms, warnings)."""
    analyzer = analyzer or Analyzer()
    vocab: dict[str, int] = {}
    doc_ids: list[str] = []
    lengths: list[int] = []
    chunks: list[np.ndarray] = []
    buf: list[int] = []
    for doc_id, text in docs:
        ids = [vocab.setdefault(t, len(vocab)) for t in analyzer.analyze(text)]
        buf.extend(ids)
        lengths.append(len(ids))
        doc_ids.append(doc_id)
        if len(buf) > 1 << 20:
            chunks.append(np.asarray(buf, dtype=np.int64))
            buf = []
        if progress is not None:
            progress(1)
    chunks.append(np.asarray(buf, dtype=np.int64))
    cols = np.concatenate(chunks)
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
    arrays = {
        "doc_len": doc_len.astype(np.float64),
        "df": np.diff(term_doc.indptr).astype(np.int64),
        "cf": np.asarray(term_doc.sum(axis=1)).ravel().astype(np.int64),
    }
    for prefix, m in (("doc_term", doc_term), ("term_doc", term_doc)):
        arrays[f"{prefix}_data"] = m.data.astype(np.float32)
        arrays[f"{prefix}_indices"] = m.indices.astype(idx_dtype)
        arrays[f"{prefix}_indptr"] = m.indptr.astype(idx_dtype)
    warnings = []
    if len(set(doc_ids)) != n_docs:
        warnings.append(f"{n_docs - len(set(doc_ids))} duplicate document id(s); judgements refer to the first")
    terms = [None] * n_terms
    for t, i in vocab.items():
        terms[i] = t
    return arrays, doc_ids, terms, warnings


def index_key(fingerprint: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{ANALYZER_VERSION}|{INDEX_FORMAT}".encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "collection"


def write_index(folder: Path, name: str, fingerprint: str, arrays, doc_ids, terms, warnings) -> None:
    """Write atomically: into a sibling temp folder, then rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        files = {}
        for key in _ARRAYS:
            p = tmp / f"{key}.npy"
            np.save(p, arrays[key])
            files[p.name] = _file_sig(p)
        for fname, lines in (("terms.txt", terms), ("doc_ids.txt", doc_ids)):
            p = tmp / fname
            with open(p, "w", encoding="utf-8", newline="\n") as f:
                for line in lines:
                    f.write(line.replace("\n", " "))
                    f.write("\n")
            files[fname] = _file_sig(p)
        manifest = {
            "name": name,
            "fingerprint": fingerprint,
            "analyzer": ANALYZER_VERSION,
            "format": INDEX_FORMAT,
            "n_docs": len(doc_ids),
            "n_terms": len(terms),
            "total_tokens": int(arrays["doc_len"].sum()),
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
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _file_sig(path: Path) -> dict:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return {"size": path.stat().st_size, "crc32": crc}


def load_index(folder: Path, verify: bool = True) -> Index:
    """Open a cached index memory-mapped. Raises CorruptIndex when files are missing or altered."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        for fname, sig in manifest["files"].items():
            p = folder / fname
            if p.stat().st_size != sig["size"]:
                raise CorruptIndex(f"{p}: size {p.stat().st_size} != {sig['size']}")
            if verify and _file_sig(p)["crc32"] != sig["crc32"]:
                raise CorruptIndex(f"{p}: checksum mismatch")
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
    except CorruptIndex:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise CorruptIndex(f"{folder}: {type(e).__name__}: {e}") from None
    return Index(manifest["name"], arrays, manifest, path=folder)


def index_folder(collection, cache_dir: Path | None = None) -> Path:
    """Where the index of a loaded collection is (or will be) cached; it is complete when it holds a manifest."""
    return (cache_dir or cache_root()) / "indexes" / f"{safe_name(collection.name)}-{index_key(collection.fingerprint)}"


def get_index(collection, cache_dir: Path | None = None, progress: bool = False, log=None) -> Index:
    """The cached index of a loaded collection, building (and replacing a stale or corrupt copy) if needed."""
    folder = index_folder(collection, cache_dir)
    root = folder.parent
    if (folder / "manifest.json").exists():
        try:
            return load_index(folder)
        except CorruptIndex as e:
            if log:
                log(f"index cache for {collection.name} is corrupt ({e}); rebuilding")
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"indexing {collection.name}", total=collection.n_docs_hint)
        tick = lambda n: bar.advance(task, n)  # noqa: E731
    try:
        arrays, doc_ids, terms, warnings = build_arrays(collection.iter_docs(), progress=tick if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    write_index(folder, collection.name, collection.fingerprint, arrays, doc_ids, terms, warnings)
    # Older builds of the same collection (other analyzer versions or data) are stale: drop them.
    same_name = re.compile(re.escape(safe_name(collection.name)) + r"-[0-9a-f]{16}")
    for old in root.iterdir():
        if old != folder and old.is_dir() and same_name.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return load_index(folder, verify=False)
