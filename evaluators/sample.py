"""What a program's ranking on the cascade's query sample says: whether it ranks as another program.

Stage 1 of the cascade (``parallel.Evaluator``) scores a candidate on a fixed, seeded sample of each collection's
queries (:func:`evorank.evaluators.cascade.cascade_sample`). The same sample finds a no-op (a change that runs but ranks every query as the
program it started from) before it costs a full evaluation: a program's *sample signature* holds, per sample query,
how many documents the top of its ranking has (at most :data:`TOP`) and a digest of their numbers, in order. A
candidate ranks as a program (:func:`ranks_as`) when, on every sample query of every collection, its ranking starts
with exactly the documents of that program's top: the same top, or the same top followed by documents the other
program did not retrieve at all (adding one constant to every document's score, ``-inf`` ones included, only
appends documents at the tail). Rankings are compared by document numbers, never by scores, so float rounding
(float32 against float64, a constant added) does not make two rankings differ.

:func:`metrics_alike` is the same judgement from metrics alone, for programs archived without a signature: equal
within ``1e-6`` at cutoffs up to :data:`TOP`, within ``1e-3`` for the rest (a few documents appended at the tail
move Recall@1000 and MAP@1000 a little).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["TOP", "signature", "ranks_as", "metrics_alike"]

#: How much of each ranking is compared: the top 100 documents (nDCG@10 and Recall@100 depend on no more).
TOP = 100
_CUTOFF = re.compile(r"@(\d+)$")


def _digest(docs: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(docs, dtype="<i8").tobytes(), digest_size=6).hexdigest()


def signature(doc_lists: Sequence[np.ndarray], top: int = TOP) -> str:
    """The sample signature of one collection: ``"n:digest"`` per query (``doc_lists``: document numbers, best
    first), separated by spaces."""
    return " ".join(f"{min(top, len(d))}:{_digest(np.asarray(d)[:top])}" for d in doc_lists)


def ranks_as(doc_lists: Sequence[np.ndarray], other: str) -> bool:
    """Whether rankings ``doc_lists`` (of the same queries, in the same order) start, for every query, with exactly
    the top that signature ``other`` describes."""
    entries = other.split()
    if len(entries) != len(doc_lists):
        return False
    for docs, entry in zip(doc_lists, entries):
        n, _, digest = entry.partition(":")
        if not n.isdigit() or len(docs) < int(n) or _digest(np.asarray(docs)[:int(n)]) != digest:
            return False
    return True


def metrics_alike(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    """Whether two programs' per-collection metrics say they rank alike (see the module docstring); False when
    either has none or they were measured on different collections or metrics."""
    if not a or not b or set(a) != set(b):
        return False
    for coll, ma in a.items():
        mb = b[coll]
        if set(ma) != set(mb):
            return False
        for name, va in ma.items():
            vb = mb[name]
            if va is None or vb is None:
                return False
            m = _CUTOFF.search(name)
            tol = 1e-6 if m and int(m.group(1)) <= TOP else 1e-3
            if abs(va - vb) > tol:
                return False
    return True
