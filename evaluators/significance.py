"""Paired significance of a ranking program against a baseline on the same queries.

For each metric, per collection and pooled over all queries of a suite: the mean per-query difference
(program - baseline) with a paired bootstrap confidence interval (BCa), a two-sided paired randomization
test (each query's pair of values swapped or not: a sign flip of the difference; exact when there are
few enough queries to enumerate every flip), a paired t-test, wins/ties/losses, and the randomization
p-values Holm-Bonferroni corrected over the collections of one metric (the family a claim such as "better
on every collection" is tested over; the pooled test is one test and needs none).

The statistics are scipy.stats (``permutation_test``, ``bootstrap``, ``ttest_rel``), a core dependency that
imports in a fraction of a second; tests check them against ranx's Fisher randomization and t-tests and
against hand-enumerated cases. Everything is seeded, so a comparison printed twice is the same. This runs
only on demand (``evorank eval --compare``, the report, ``top``/``status`` marks), never in a run's loop.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np

#: The metrics a comparison tests by default: the two that make up the default fitness.
COMPARED_METRICS = ("ndcg@10", "recall@100")
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
#: Two per-query values closer than this count as a tie.
TIE_TOLERANCE = 1e-9
#: The significance level marks and summaries use (two-sided).
ALPHA = 0.05


@dataclass(frozen=True)
class PairedTest:
    """One metric on one set of queries: the program's and the baseline's mean, the mean per-query difference
    with its confidence interval, the randomization and t-test p-values (two-sided; ``p_ttest`` is None when
    the differences are all equal and nonzero, where the t statistic is undefined), wins/ties/losses of the
    program, and ``p_holm``: the randomization p-value Holm-corrected over the collections (None pooled)."""

    n: int
    mean: float
    baseline_mean: float
    delta: float
    ci_low: float
    ci_high: float
    p_randomization: float
    p_ttest: float | None
    wins: int
    ties: int
    losses: int
    p_holm: float | None = None

    @property
    def verdict(self) -> str:
        """'better', 'worse' or 'n.s.' at ``ALPHA`` by the randomization test (after Holm where it applies)."""
        p = self.p_holm if self.p_holm is not None else self.p_randomization
        if p >= ALPHA or self.delta == 0:
            return "n.s."
        return "better" if self.delta > 0 else "worse"


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def _bootstrap_ci(a, b, method: str, n_resamples: int, confidence: float, rng) -> tuple[float, float]:
    from scipy import stats

    ci = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=n_resamples,
                         confidence_level=confidence, method=method, random_state=rng, batch=1000).confidence_interval
    return float(ci.low), float(ci.high)


def paired_test(values, baseline, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                seed: int = 0) -> PairedTest:
    """Compare per-query ``values`` with the ``baseline``'s on the same queries (equal-length sequences)."""
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        raise ValueError("no queries to compare")
    d = a - b
    delta = float(d.mean())
    wins, losses = int((d > TIE_TOLERANCE).sum()), int((d < -TIE_TOLERANCE).sum())
    rng = np.random.default_rng(seed)
    if abs(delta) <= TIE_TOLERANCE / n:  # no difference on average (wins and losses cancel): every flip is as far
        p_rand = 1.0                     # from 0, and rounding noise in the mean must not decide the test
    else:
        # One sample with permutation_type="samples" is the paired randomization test: each difference keeps or
        # flips its sign (swapping the two systems' values of that query); exact when 2**n <= n_resamples.
        p_rand = float(stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                              n_resamples=n_resamples, alternative="two-sided", random_state=rng,
                                              batch=1000).pvalue)
    if np.ptp(d) <= TIE_TOLERANCE:  # no spread: every bootstrap resample is the same, and the t statistic is undefined
        lo = hi = delta
        p_t = 1.0 if delta == 0 else None
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa on heavily tied data can warn; the percentile fallback covers it
            lo, hi = _bootstrap_ci(a, b, "BCa", n_resamples, confidence, rng)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                lo, hi = _bootstrap_ci(a, b, "percentile", n_resamples, confidence, rng)
            p_t = float(stats.ttest_rel(a, b).pvalue)
        if not math.isfinite(p_t):
            p_t = None
    return PairedTest(n, float(a.mean()), float(b.mean()), delta, lo, hi, min(1.0, p_rand), p_t, wins,
                      n - wins - losses, losses)


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: the i-th smallest of m is multiplied by (m - i),
    then made non-decreasing in that order and capped at 1 (reject where the adjusted value is below alpha)."""
    p = [float(x) for x in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    """A program against a baseline: ``collections`` maps collection -> metric -> test; ``pooled`` metric ->
    the test over every query of those collections together."""

    program: str
    baseline: str
    metrics: tuple[str, ...]
    collections: dict[str, dict[str, PairedTest]]
    pooled: dict[str, PairedTest]

    def to_json(self) -> dict:
        def row(t: PairedTest) -> dict:
            return {**asdict(t), "verdict": t.verdict}

        return {"program": self.program, "baseline": self.baseline, "metrics": list(self.metrics),
                "confidence": CONFIDENCE, "alpha": ALPHA, "resamples": N_RESAMPLES,
                "tests": {"ci": "paired bootstrap (BCa) of the mean difference",
                          "p_randomization": "two-sided paired randomization (sign-flip) test of the mean difference",
                          "p_ttest": "two-sided paired t-test",
                          "p_holm": "p_randomization, Holm-Bonferroni corrected over the collections"},
                "collections": {c: {m: row(t) for m, t in per.items()} for c, per in self.collections.items()},
                "pooled": {m: row(t) for m, t in self.pooled.items()}}

    def worse_somewhere(self, metric: str = "ndcg@10") -> list[str]:
        """Collections where the program is significantly worse on ``metric`` after Holm correction."""
        return [c for c, per in self.collections.items() if metric in per and per[metric].verdict == "worse"]


def compare(per_query: dict[str, dict[str, np.ndarray]], baseline: dict[str, dict[str, np.ndarray]], *,
            program: str = "program", baseline_name: str = "baseline", metrics=COMPARED_METRICS,
            n_resamples: int = N_RESAMPLES, seed: int = 0) -> Comparison:
    """Test ``per_query`` (collection -> metric -> per-query values) against ``baseline`` (the same, on the same
    queries in the same order) on the collections both have, per collection and pooled."""
    names = [c for c in per_query if c in baseline]
    for c in names:
        for m in metrics:
            if len(per_query[c][m]) != len(baseline[c][m]):
                raise ValueError(f"{c}: {m} has {len(per_query[c][m])} queries for the program and "
                                 f"{len(baseline[c][m])} for the baseline; compare them on the same queries")
    rows: dict[str, dict[str, PairedTest]] = {c: {} for c in names}
    pooled: dict[str, PairedTest] = {}
    for m in metrics:
        tests = [paired_test(per_query[c][m], baseline[c][m], n_resamples=n_resamples, seed=seed) for c in names]
        for c, t, p in zip(names, tests, holm([t.p_randomization for t in tests])):
            rows[c][m] = replace(t, p_holm=p)
        if names:
            pooled[m] = paired_test(np.concatenate([per_query[c][m] for c in names]),
                                    np.concatenate([baseline[c][m] for c in names]), n_resamples=n_resamples,
                                    seed=seed)
    return Comparison(program, baseline_name, tuple(metrics), rows, pooled)
