"""Train / validation split of a collection's judged queries, fixed once per run.

Selection (parents, elites, the cascade) sees only the train queries; the validation queries are
scored in the same sandboxed run but measured apart, and only choose, among the programs that
selection ranked highest, which one a run reports as its best (``best.py``, ``export``). So a gain
that exists only on the queries evolution looked at shows up as a gap between the two.

The split is stratified by the number of relevant documents (queries with 1, 2-3, 4-7, 8-15, ...
relevant documents are split in the same proportion), seeded by the collection's name and the run's
seed, and leaves at least one train query. A collection with fewer than ``MIN_QUERIES_TO_SPLIT``
judged queries is not split.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

MIN_QUERIES_TO_SPLIT = 10


def validation_split(n_relevant: np.ndarray, fraction: float, collection: str, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) query positions, each sorted, from each query's number of relevant documents."""
    n = len(n_relevant)
    everything = np.arange(n)
    if fraction <= 0 or n < MIN_QUERIES_TO_SPLIT:
        return everything, everything[:0]
    digest = hashlib.sha256(f"{collection}|{seed}|validation".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    stratum = np.floor(np.log2(np.maximum(np.asarray(n_relevant, dtype=np.float64), 1.0))).astype(np.int64)
    order = np.lexsort((rng.random(n), stratum))  # strata in turn, random order inside each
    # systematic sampling along that order: every 1/fraction-th query goes to validation, so each stratum
    # contributes in proportion to its size
    rank = np.arange(1, n + 1)
    picked = np.floor(rank * fraction) > np.floor((rank - 1) * fraction)
    val = np.sort(order[picked])
    if len(val) >= n:  # keep at least one train query
        val = val[1:]
    train = np.setdiff1d(everything, val)
    return train, val


def relevant_counts(judged) -> np.ndarray:
    """Number of relevant documents (grade >= the collection's threshold) of each query of a ``Judgements``."""
    return np.array([int((a[:, 1] >= judged.min_relevance).sum()) for a in judged.arrays], dtype=np.int64)


def expected_validation_size(n_queries: int, fraction: float) -> int:
    return 0 if fraction <= 0 or n_queries < MIN_QUERIES_TO_SPLIT else min(n_queries - 1, math.floor(n_queries * fraction))
