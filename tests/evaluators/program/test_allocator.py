"""The scoring loop's arrays come from the heap: no page faults per query once the allocator is set."""
from __future__ import annotations

import subprocess
import sys

import pytest

from evorank.evaluators.program import allocator

# A query's worth of collection-long arrays (a float32 score vector, a mask, the float64 -inf fill, top-k's
# candidates), allocated and freed 20 times after one warm-up, with the thresholds set; prints the minor page faults per query.
LOOP = """
import resource, numpy as np
from evorank.evaluators.program.allocator import keep_score_arrays
n = 1_000_000
assert keep_score_arrays(n)
def query():
    s = np.ones(n, dtype=np.float32)
    w = np.where((s * 2) > 0, s, -np.inf)
    return np.flatnonzero(w > -np.inf).size
query()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    query()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20)
"""


def faults_per_query() -> float:
    out = subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


@pytest.mark.skipif(allocator.MALLOPT is None, reason="the C library has no mallopt (not glibc)")
def test_score_arrays_are_kept_between_queries():
    # 1M documents: ~3,000 pages of arrays per query. glibc's defaults map and unmap them per query
    # (measured: ~2,770 faults per query); with the thresholds set, none.
    assert faults_per_query() < 30
