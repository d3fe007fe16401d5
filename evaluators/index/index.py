"""Inverted and forward index of a collection, built once and cached on disk, loaded memory-mapped.

An index lives in ``$EVORANK_CACHE/indexes/<name>-<key>/`` where the key hashes the collection's
fingerprint, the analyzer version and the index format. A build is written into a temporary folder
and renamed into place, so readers never see half an index; the manifest records every file's size
and CRC32, and an index that fails the check (or whose key no longer matches) is rebuilt.

Arrays are opened with ``mmap_mode="r"``: parallel workers share the same pages, and a ranking
program that tries to write into them gets ``ValueError: assignment destination is read-only``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .analyzer import ANALYZER_VERSION
from .build import ARRAYS, INDEX_FORMAT, build_arrays, commit_index, file_signature, new_build_folder  # noqa: F401 (build_arrays: re-exported)
from .stream import BLOCK_BYTES, build_streaming
from .views import CharNgrams, PrefixGroups, view

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
    """Read-only statistics of one analysed collection. ``contract.md`` documents what ranking programs
    may use (with examples); in short, all numpy / scipy.sparse and read-only:

      n_docs, n_terms                 sizes; documents and terms are numbered 0..n-1
      doc_len   float64[n_docs]       number of index terms in each document
      avg_doc_len, total_tokens       mean document length; sum of doc_len
      df, cf    int64[n_terms]        documents containing each term; occurrences of each term
      term_doc  csr (n_terms x n_docs) float32 term frequencies: row t = postings of term t
      doc_term  csr (n_docs x n_terms) float32 term frequencies: row d = terms of document d
      terms     tuple[str]            the analysed vocabulary, in term-id order; term_id(s) -> id or -1
      doc_tokens, doc_positions       every token's term id and position, document after document, in text
                                      order; doc_token_ptr[d]:doc_token_ptr[d+1] are document d's
      posting_positions               positions in posting order: posting p (an entry of term_doc) has its tf
                                      positions at posting_position_ptr[p]:posting_position_ptr[p+1]
      has_titles, title_tf, title_len title occurrences per posting and title length per document;
                                      field("title") / field("body") give per-field tf matrices and lengths
      prefix_groups(n), char_ngrams(n) the vocabulary's prefix groups and character n-grams (``views``)
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
        self.doc_tokens = arrays["doc_tokens"]
        self.doc_positions = arrays["doc_positions"]
        self.posting_positions = arrays["term_positions"]
        self.title_tf = arrays["title_tf"]
        self.title_len = arrays["title_len"]
        self.has_titles = bool(meta.get("has_titles"))
        self.build_warnings: list[str] = list(meta.get("warnings", []))
        self._terms: tuple[str, ...] | None = meta.get("_terms")
        self._doc_ids: list[str] | None = meta.get("_doc_ids")
        self._vocab: dict[str, int] | None = None
        self._fields: dict[str, Field] = {}
        self._views: dict[tuple[str, int], object] = {}  # views.view: (kind, n) -> PrefixGroups / CharNgrams

    # -- access helpers shown to ranking programs --------------------------------------------
    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc ids, term frequencies) of one term, doc ids ascending."""
        a, b = self.term_doc.indptr[term_id], self.term_doc.indptr[term_id + 1]
        return self.term_doc.indices[a:b], self.term_doc.data[a:b]

    def doc_terms(self, doc_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, term frequencies) of one document, term ids ascending."""
        a, b = self.doc_term.indptr[doc_id], self.doc_term.indptr[doc_id + 1]
        return self.doc_term.indices[a:b], self.doc_term.data[a:b]

    @functools.cached_property
    def doc_token_ptr(self) -> np.ndarray:
        """int64[n_docs + 1]: document d's tokens are ``doc_tokens[doc_token_ptr[d]:doc_token_ptr[d + 1]]``."""
        return _read_only(np.concatenate([[0], np.cumsum(self.doc_len.astype(np.int64))]))

    @functools.cached_property
    def posting_position_ptr(self) -> np.ndarray:
        """int64[nnz + 1]: posting p's positions are ``posting_positions[ptr[p]:ptr[p + 1]]`` (tf of them)."""
        return _read_only(np.concatenate([[0], np.cumsum(self.term_doc.data.astype(np.int64))]))

    def positions(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(document of each occurrence, its position) of one term: documents ascending, then positions."""
        a, b = self.term_doc.indptr[term_id], self.term_doc.indptr[term_id + 1]
        ptr = self.posting_position_ptr
        docs = np.repeat(self.term_doc.indices[a:b], self.term_doc.data[a:b].astype(np.int64))
        return docs, self.posting_positions[ptr[a]:ptr[b]]

    def doc_token_list(self, doc_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, positions) of one document's tokens, in text order."""
        a, b = self.doc_token_ptr[doc_id], self.doc_token_ptr[doc_id + 1]
        return self.doc_tokens[a:b], self.doc_positions[a:b]

    def field(self, name: str) -> "Field":
        """Per-field statistics, ``"title"`` or ``"body"`` (a document without a title is all body)."""
        if name not in ("title", "body"):
            raise KeyError(f"no field {name!r}; fields are 'title' and 'body'")
        if name not in self._fields:
            td = self.term_doc
            data = self.title_tf if name == "title" else _read_only(td.data - self.title_tf)
            lengths = self.title_len if name == "title" else _read_only(self.doc_len - self.title_len)
            m = sp.csr_matrix((data, td.indices, td.indptr), shape=td.shape, copy=False)
            m.has_sorted_indices = True
            self._fields[name] = Field(name, m, lengths, float(lengths.mean()) if self.n_docs else 0.0)
        return self._fields[name]

    def prefix_groups(self, n: int) -> PrefixGroups:
        """The terms grouped by their first ``n`` characters: ``.group`` per term (-1: shorter than n), ``.members``
        (groups x terms), ``.prefixes``, ``.group_of(s)``."""
        return view(self, "prefix", n)

    def char_ngrams(self, n: int) -> CharNgrams:
        """The character n-grams of ``"#" + term + "#"`` for every term: ``.term_grams`` (terms x grams, counts),
        ``.gram_terms``, ``.grams``, ``.ids(s)`` / ``.grams_of(s)`` for any string."""
        return view(self, "ngram", n)

    @property
    def terms(self) -> tuple[str, ...]:
        """The analysed vocabulary in term-id order."""
        if self._terms is None:
            self._terms = tuple(_read_lines(self.path / "terms.txt"))
        return self._terms

    def term_id(self, term: str) -> int:
        """Id of an analysed term, or -1 when it does not occur in the collection."""
        if self._vocab is None:
            self._vocab = {t: i for i, t in enumerate(self.terms)}
        return self._vocab.get(term, -1)

    # -- trusted side only (the sandbox hides these from programs) ----------------------------
    @property
    def doc_ids(self) -> list[str]:
        if self._doc_ids is None:
            self._doc_ids = _read_lines(self.path / "doc_ids.txt")
        return self._doc_ids

    def __repr__(self) -> str:
        return f"Index({self.name!r}, n_docs={self.n_docs}, n_terms={self.n_terms}, avg_doc_len={self.avg_doc_len:.1f})"


@dataclass(frozen=True)
class Field:
    """One field's statistics: ``term_doc`` shares ``Index.term_doc``'s structure (explicit zeros where a term
    occurs only in the other field), ``doc_len`` its terms per document, ``avg_doc_len`` their mean."""

    name: str
    term_doc: sp.csr_matrix
    doc_len: np.ndarray
    avg_doc_len: float


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _csr(arrays: dict, prefix: str, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape, copy=False
    )
    m.has_sorted_indices = True  # built sorted; lets scipy skip a sort that would need to write
    return m


def _read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text else []


def index_key(fingerprint: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{ANALYZER_VERSION}|{INDEX_FORMAT}".encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "collection"


def load_index(folder: Path, verify: bool = True) -> Index:
    """Open a cached index memory-mapped. Raises CorruptIndex when files are missing or altered."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        for fname, sig in manifest["files"].items():
            p = folder / fname
            if p.stat().st_size != sig["size"]:
                raise CorruptIndex(f"{p}: size {p.stat().st_size} != {sig['size']}")
            if verify and file_signature(p)["crc32"] != sig["crc32"]:
                raise CorruptIndex(f"{p}: checksum mismatch")
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
    except CorruptIndex:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise CorruptIndex(f"{folder}: {type(e).__name__}: {e}") from None
    return Index(manifest["name"], arrays, manifest, path=folder)


def docs_name(collection) -> str:
    """The name a collection's documents are indexed under: ``collection.docs_name`` when it has one (addresses
    that differ only in their queries share one index), else its name."""
    return getattr(collection, "docs_name", "") or collection.name


def index_folder(collection, cache_dir: Path | None = None) -> Path:
    """Where the index of a loaded collection is (or will be) cached; it is complete when it holds a manifest."""
    name = f"{safe_name(docs_name(collection))}-{index_key(collection.fingerprint)}"
    return (cache_dir or cache_root()) / "indexes" / name


def prepared_folder(folder: Path) -> Path:
    """Where the ``prepare()`` states computed on the index in ``folder`` are kept (``prepared.py``): a folder of
    the same name under ``prepared/``, beside ``indexes/`` in the cache."""
    return folder.parent.parent / "prepared" / folder.name


def get_index(collection, cache_dir: Path | None = None, progress: bool = False, log=None,
              memory_mb: int | None = None, workers: int | None = None) -> Index:
    """The cached index of a loaded collection, building (and replacing a stale or corrupt copy) if needed.

    A build streams (``stream``): analysis on ``workers`` processes (default: all cores), working memory
    bounded by ``memory_mb`` (default ``$EVORANK_INDEX_MEMORY_MB`` or 1024). ``progress`` shows a bar with
    documents, documents/s and the time left."""
    folder = index_folder(collection, cache_dir)
    root = folder.parent
    if (folder / "manifest.json").exists():
        try:
            return load_index(folder)
        except CorruptIndex as e:
            if log:
                log(f"index cache for {collection.name} is corrupt ({e}); rebuilding")
    bar = BuildProgress(collection) if progress else None
    tmp = new_build_folder(folder)
    try:
        built = build_streaming(collection.iter_doc_blocks(BLOCK_BYTES), tmp, memory_mb, workers,
                                progress=bar.advance if bar else None, phase=bar.phase if bar else None)
        commit_index(tmp, folder, docs_name(collection), collection.fingerprint, built.files, built.n_docs, built.n_terms,
                     built.total_tokens, built.warnings, built.has_titles)
    finally:
        if bar is not None:
            bar.stop()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    # Older builds of the same collection (other analyzer versions or data) are stale: drop them, and every
    # prepare() state computed on them or on an earlier build in this folder (prepared.py).
    same_name = re.compile(re.escape(safe_name(docs_name(collection))) + r"-[0-9a-f]{16}")
    shutil.rmtree(prepared_folder(folder), ignore_errors=True)
    for old in root.iterdir():
        if old != folder and old.is_dir() and same_name.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(prepared_folder(old), ignore_errors=True)
    return load_index(folder, verify=False)


class BuildProgress:
    """A progress bar for an index build: documents, documents/s and time left. Measured in bytes of the corpus
    file when its size is known, else in documents when the collection says how many it has."""

    def __init__(self, collection):
        import time

        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._time = time.monotonic
        self._start = self._time()
        self.docs = 0
        self.by_bytes = collection.size_hint is not None
        total = collection.size_hint if self.by_bytes else collection.n_docs_hint
        # No refresh thread (auto_refresh off): the build forks its workers from this process.
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn(), transient=True, auto_refresh=False)
        self._shown = 0.0
        self.bar.start()
        self.task = self.bar.add_task(f"indexing {collection.name}", total=total, rate="")
        self.name = collection.name

    def advance(self, docs: int, n_bytes: int) -> None:
        self.docs += docs
        now = self._time()
        rate = self.docs / max(1e-9, now - self._start)
        self.bar.update(self.task, advance=n_bytes if self.by_bytes else docs,
                        rate=f"{self.docs:,} docs  {rate:,.0f} docs/s")
        if now - self._shown >= 0.1:
            self._shown = now
            self.bar.refresh()

    def phase(self, text: str) -> None:
        self.bar.update(self.task, description=f"indexing {self.name}: {text}")
        self.bar.refresh()

    def stop(self) -> None:
        self.bar.stop()
