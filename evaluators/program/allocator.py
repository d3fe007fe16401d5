"""The C allocator's thresholds for a scoring loop: per-query arrays reused, not mapped and unmapped per query.

Every query allocates a few arrays as long as the collection (the program's score vector and its temporaries,
the trusted float64 copy, top-k's mask). glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB until a
larger mapped block is freed) with a fresh ``mmap`` and returns it with ``munmap`` when freed: a million
documents then cost a page fault per 4 KiB page, per array, per query. A process whose earlier work freed a big
block (an in-jail ``prepare``) has had the threshold raised by glibc; one that reuses a stored ``prepare`` state has
not, and spent more than twice as long per query on 1M documents (``docs/scale.md``, ``bench/RESULTS.md``).
``keep_score_arrays`` fixes both thresholds for the collection at hand, so the same pages serve every query.

A no-op where the C library has no ``mallopt`` (musl, macOS): only speed depends on it.
"""
from __future__ import annotations

import ctypes

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: bytes per document the scoring loop keeps in flight: a float64 score vector and its copy, a float32 temporary,
#: masks; allocations up to this many bytes per document come from the heap
BYTES_PER_DOC = 24
#: glibc's own minimum threshold (never lowered below it)
MIN_THRESHOLD = 128 << 10


def _mallopt():
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


#: glibc's ``mallopt``, resolved at import (nothing can be loaded once the jail is closed); None elsewhere
MALLOPT = _mallopt()


def keep_score_arrays(n_docs: int) -> bool:
    """Serve allocations up to ``BYTES_PER_DOC * n_docs`` bytes from the heap and keep up to four times that
    free in it, for this process; True when the C library accepted both settings."""
    if MALLOPT is None:
        return False
    threshold = max(MIN_THRESHOLD, BYTES_PER_DOC * int(n_docs))
    try:
        ok = MALLOPT(M_MMAP_THRESHOLD, ctypes.c_int(min(threshold, 2**31 - 1)))
        return bool(ok) and bool(MALLOPT(M_TRIM_THRESHOLD, ctypes.c_int(min(4 * threshold, 2**31 - 1))))
    except (OSError, ValueError, ctypes.ArgumentError):
        return False
