"""Views of an index's vocabulary that ranking programs read: the terms' prefix groups and character n-grams.

A program that matches query terms to their variants (shared prefixes, character n-grams: corpus-based stemming,
n-gram matching) would otherwise build these tables in ``prepare`` with a Python loop over the vocabulary, every
candidate again. Here each view is built once per index, by trusted code and vectorised, on the first request,
written beside the index (``<index>/views/<kind>-<n>/``, renamed into place whole, like the index itself) and
memory-mapped from then on:

``PrefixGroups`` (``index.prefix_groups(n)``, n in ``PREFIX_LENGTHS``)
    the terms grouped by their first n characters: ``group`` (int32 per term, -1 for a term shorter than n),
    ``members`` (csr, groups x terms), ``prefixes`` (each group's prefix, sorted), ``group_of(s)`` for any string.
``CharNgrams`` (``index.char_ngrams(n)``, n in ``NGRAM_SIZES``)
    the character n-grams of each term written with a boundary mark on both sides (``"#" + term + "#"``, so
    "#pr" is a beginning and "ng#" an end): ``term_grams`` (csr, terms x grams, how often each gram occurs in the
    term), ``gram_terms`` (its transpose, csr), ``grams`` (the grams, sorted), ``ids(s)`` / ``grams_of(s)`` for any
    string.

Inside the sandbox nothing can be written or opened once the jail is closed, so the worker loads the views a
program names (``preload``, from its syntax tree: the sizes written as numbers or as names bound to numbers)
before it forks the jail; a view the jail did not get is built there in memory (correct, at the program's
expense).
"""
from __future__ import annotations

import ast
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from evorank.threadsafe_ast import parse_ast

PREFIX_LENGTHS = range(1, 17)
NGRAM_SIZES = range(1, 7)
BOUNDARY = "#"
#: The view folder's format: a folder of another format is rebuilt.
VIEWS_FORMAT = 1


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Positions of ``keys`` in the sorted array ``sorted_keys``, -1 where absent."""
    if not len(sorted_keys) or not len(keys):
        return np.full(len(keys), -1, dtype=np.int64)
    at = np.searchsorted(sorted_keys, keys)
    inside = at < len(sorted_keys)
    found = inside.copy()
    found[inside] = sorted_keys[at[inside]] == keys[inside]
    return np.where(found, at, -1).astype(np.int64)


@dataclass(frozen=True)
class PrefixGroups:
    """The vocabulary grouped by the terms' first ``n`` characters (see the module docstring)."""

    n: int
    group: np.ndarray  # int32[n_terms]: the term's group, -1 when the term is shorter than n
    members: sp.csr_matrix  # (n_groups x n_terms) float32, 1.0 for each member: row g lists group g's terms
    prefixes: np.ndarray  # str[n_groups]: group g's prefix, ascending

    def group_of(self, s):
        """The group of the terms that begin with the first n characters of ``s`` (-1: none does, or ``s`` is
        shorter than n); for a list of strings, an int64 array of their groups (one lookup for all)."""
        many = not isinstance(s, str)
        words = list(s) if many else [s]
        keys = np.array([w[:self.n] for w in words], dtype=self.prefixes.dtype)
        found = _lookup(self.prefixes, keys)
        found[np.array([len(w) < self.n for w in words], dtype=bool)] = -1
        return found if many else int(found[0])


@dataclass(frozen=True)
class CharNgrams:
    """The character n-grams of every term, written ``"#" + term + "#"`` (see the module docstring)."""

    n: int
    term_grams: sp.csr_matrix  # (n_terms x n_grams) float32: occurrences of gram g in term t
    gram_terms: sp.csr_matrix  # (n_grams x n_terms) float32: the same, by gram
    grams: np.ndarray  # str[n_grams], ascending

    def grams_of(self, s: str) -> tuple[str, ...]:
        """The distinct n-grams of ``"#" + s + "#"``, ascending, whether the vocabulary has them or not."""
        padded = BOUNDARY + s + BOUNDARY
        return tuple(sorted({padded[i:i + self.n] for i in range(len(padded) - self.n + 1)}))

    def ids(self, s):
        """int64 ids (rows of ``gram_terms``) of the distinct n-grams of ``"#" + s + "#"`` that occur in the
        vocabulary, ascending; for a list of strings, a list of such arrays (one lookup for all)."""
        many = not isinstance(s, str)
        grams = [self.grams_of(w) for w in (s if many else [s])]
        found = _lookup(self.grams, np.array([g for gs in grams for g in gs], dtype=self.grams.dtype))
        parts = np.split(found, np.cumsum([len(gs) for gs in grams])[:-1])
        out = [part[part >= 0] for part in parts]
        return out if many else out[0]


# -- building (trusted, vectorised) --------------------------------------------------------------------

def build_prefix_groups(terms, n: int) -> dict[str, np.ndarray]:
    lengths = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
    eligible = np.flatnonzero(lengths >= n)
    cut = np.array(terms, dtype=f"<U{n}") if len(terms) else np.zeros(0, dtype=f"<U{n}")  # truncates to n
    prefixes, inverse = np.unique(cut[eligible], return_inverse=True)
    group = np.full(len(terms), -1, dtype=np.int32)
    group[eligible] = inverse
    order = np.argsort(inverse, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(prefixes)))]).astype(np.int64)
    return {"group": group, "members_indptr": indptr, "members_indices": eligible[order].astype(np.int32),
            "prefixes": prefixes.astype(f"<U{n}")}


def build_char_ngrams(terms, n: int) -> dict[str, np.ndarray]:
    padded = [BOUNDARY + t + BOUNDARY for t in terms]
    lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    # one code point per character, without a codec (none can be imported inside the sandbox); the text ends
    # with a boundary mark, so numpy's dropping of trailing NULs cannot shorten it
    codes = np.array(["".join(padded)]).view(np.uint32) if padded else np.zeros(0, dtype=np.uint32)
    per_term = np.maximum(lengths - n + 1, 0)
    starts = np.cumsum(lengths) - lengths
    total = int(per_term.sum())
    pos = np.repeat(starts - np.cumsum(per_term) + per_term, per_term) + np.arange(total, dtype=np.int64)
    term_of = np.repeat(np.arange(len(terms), dtype=np.int64), per_term)
    keys = np.ascontiguousarray(np.stack([codes[pos + i] for i in range(n)], axis=1)) if total else \
        np.zeros((0, n), dtype=np.uint32)
    strings = keys.view(f"<U{n}").reshape(-1)  # n code points = one string of n characters
    grams, gram_of = np.unique(strings, return_inverse=True)
    n_grams = len(grams)
    pair = term_of * max(n_grams, 1) + gram_of.astype(np.int64)
    pairs, counts = np.unique(pair, return_counts=True)
    rows, cols = pairs // max(n_grams, 1), pairs % max(n_grams, 1)
    term_grams = sp.csr_matrix((counts.astype(np.float32), cols.astype(np.int32),
                                np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(terms)))])),
                               shape=(len(terms), n_grams))
    gram_terms = term_grams.T.tocsr()
    gram_terms.sort_indices()
    out = {"grams": grams.astype(f"<U{n}")}
    for name, m in (("term", term_grams), ("gram", gram_terms)):
        out[f"{name}_data"] = m.data.astype(np.float32)
        out[f"{name}_indices"] = m.indices.astype(np.int32)
        out[f"{name}_indptr"] = m.indptr.astype(np.int64)
    return out


_BUILDERS = {"prefix": (build_prefix_groups, PREFIX_LENGTHS), "ngram": (build_char_ngrams, NGRAM_SIZES)}


def _check(kind: str, n) -> int:
    sizes = _BUILDERS[kind][1]
    if type(n) is not int or n not in sizes:
        what = "prefix_groups" if kind == "prefix" else "char_ngrams"
        raise ValueError(f"index.{what}(n): n must be an int from {sizes.start} to {sizes.stop - 1}, got {n!r}")
    return n


def _make(kind: str, n: int, arrays: dict[str, np.ndarray], n_terms: int):
    a = {k: _read_only(v) if isinstance(v, np.ndarray) and v.flags.writeable else v for k, v in arrays.items()}
    if kind == "prefix":
        nnz = len(a["members_indices"])
        members = sp.csr_matrix((_read_only(np.ones(nnz, dtype=np.float32)), a["members_indices"],
                                 a["members_indptr"]), shape=(len(a["prefixes"]), n_terms), copy=False)
        members.has_sorted_indices = True
        return PrefixGroups(n, a["group"], members, a["prefixes"])
    shape = (n_terms, len(a["grams"]))
    m = {}
    for name, sh in (("term", shape), ("gram", shape[::-1])):
        m[name] = sp.csr_matrix((a[f"{name}_data"], a[f"{name}_indices"], a[f"{name}_indptr"]), shape=sh, copy=False)
        m[name].has_sorted_indices = True
    return CharNgrams(n, m["term"], m["gram"], a["grams"])


def view(index, kind: str, n: int):
    """The view ``kind`` ("prefix" or "ngram") of size ``n`` of ``index``: from memory, else from its folder
    (built there first when missing), else (no folder: inside the sandbox) built in memory."""
    n = _check(kind, n)
    cache = index._views
    if (kind, n) not in cache:
        folder = getattr(index, "path", None)
        if folder is not None:
            arrays = _load_or_build(Path(folder), kind, n, index.terms)
        else:
            arrays = _BUILDERS[kind][0](index.terms, n)
        cache[(kind, n)] = _make(kind, n, arrays, int(index.n_terms))
    return cache[(kind, n)]


def _load_or_build(index_folder: Path, kind: str, n: int, terms) -> dict[str, np.ndarray]:
    folder = index_folder / "views" / f"{kind}-{n}-v{VIEWS_FORMAT}"
    if not (folder / "done").exists():
        arrays = _BUILDERS[kind][0](terms, n)
        tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir(parents=True)
        try:
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", a)
            (tmp / "done").write_text("")
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / "done").exists():
                    raise  # not a lost race with another process building the same view
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    # plain ndarrays over the mapping: numpy's memmap subclass costs a Python call on every slice
    return {p.stem: np.load(p, mmap_mode="r").view(np.ndarray) for p in folder.glob("*.npy")}


# -- which views a program reads -----------------------------------------------------------------------

_METHODS = {"prefix_groups": "prefix", "char_ngrams": "ngram"}


def views_named(source: str) -> list[tuple[str, int]]:
    """(kind, n) of every ``x.prefix_groups(n)`` / ``x.char_ngrams(n)`` call in ``source`` whose n is a number, or
    a name bound to numbers anywhere in the module (each of them); [] for a program that does not parse."""
    try:
        tree = parse_ast(source)  # bounded, and serialised with the trusted process's other parses
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    numbers: dict[str, set[int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                and type(node.value.value) is int:
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name):
                    numbers.setdefault(target.id, set()).add(node.value.value)
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _METHODS \
                and len(node.args) == 1:
            arg = node.args[0]
            values = {arg.value} if isinstance(arg, ast.Constant) and type(arg.value) is int else \
                numbers.get(arg.id, set()) if isinstance(arg, ast.Name) else set()
            kind = _METHODS[node.func.attr]
            found |= {(kind, v) for v in values if v in _BUILDERS[kind][1]}
    return sorted(found)


def preload(index, source: str) -> None:
    """Load (building once, on disk) the views ``source`` names, so that a jail forked afterwards has them."""
    for kind, n in views_named(source):
        view(index, kind, n)
