"""The paired statistics of ``evaluators.significance`` against cases computed by hand (every sign flip
enumerated, the t distribution's closed form at two degrees of freedom) and against a second implementation
(ranx's Fisher randomization test and paired t-test, on the same per-query values)."""
import itertools
import math

import numpy as np
import pytest

from evorank.evaluators.significance import compare, holm, paired_test


def enumerated_p(d) -> float:
    """Two-sided p of the paired randomization test by brute force: the share of all 2**n sign flips whose mean
    difference is at least as far from 0 as the observed one."""
    d = np.asarray(d, dtype=float)
    observed = abs(d.mean())
    flips = [abs(np.mean(d * np.array(signs))) for signs in itertools.product((1, -1), repeat=len(d))]
    return sum(f >= observed - 1e-12 for f in flips) / len(flips)


def test_randomization_test_is_exact_on_small_samples():
    # 1, 2, 3 against 0: of the 8 sign flips only +++ and --- reach |mean| 2, so p = 2/8
    assert paired_test([1, 2, 3], [0, 0, 0]).p_randomization == pytest.approx(0.25, abs=1e-12)
    rng = np.random.default_rng(3)
    for n in (4, 7, 10):
        a, b = rng.random(n), rng.random(n)
        assert paired_test(a, b).p_randomization == pytest.approx(enumerated_p(a - b), abs=1e-9)
    # ties with the observed statistic count as extreme: the sums of +-1 +-1 +-2 are 4, 2, 2, 0, 0, -2, -2, -4,
    # and 6 of the 8 are at least as far from 0 as the observed 1 - 1 + 2 = 2
    assert paired_test([1, -1, 2], [0, 0, 0]).p_randomization == pytest.approx(0.75, abs=1e-12)


def test_t_test_ci_and_counts_by_hand():
    t = paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    # d = 1, 2, 3: mean 2, sd 1, t = 2 * sqrt(3); with 2 degrees of freedom the two-sided p is 1 - t / sqrt(2 + t^2)
    tt = 2 * math.sqrt(3)
    assert t.p_ttest == pytest.approx(1 - tt / math.sqrt(2 + tt * tt), rel=1e-9)
    assert (t.n, t.mean, t.baseline_mean, t.delta) == (3, 2.0, 0.0, 2.0)
    assert (t.wins, t.ties, t.losses) == (3, 0, 0)
    assert t.ci_low <= 2.0 <= t.ci_high and 1.0 <= t.ci_low and t.ci_high <= 3.0  # within the sample's range
    same = paired_test([0.5, 0.2, 0.0], [0.5, 0.2, 0.0])  # identical systems: nothing to see
    assert (same.p_randomization, same.p_ttest, same.delta, same.ci_low, same.ci_high) == (1.0, 1.0, 0, 0, 0)
    assert (same.wins, same.ties, same.losses) == (0, 3, 0) and same.verdict == "n.s."
    shifted = paired_test([0.6, 0.3, 0.1, 0.9], [0.5, 0.2, 0.0, 0.8])  # the same gain on every query
    assert shifted.p_ttest is None and shifted.ci_low == shifted.ci_high == pytest.approx(0.1)
    assert shifted.p_randomization == pytest.approx(2 / 16)
    # wins and losses that cancel exactly, up to rounding in the mean (1/3 + 1/2 - 1/3 - 1/2 is not 0.0 in floats)
    cancel = paired_test([1 / 3, 1 / 2, 0.0, 0.0, 0.7], [0.0, 0.0, 1 / 3, 1 / 2, 0.7])
    assert cancel.p_randomization == 1.0 and cancel.p_ttest == pytest.approx(1.0)
    mixed = paired_test([0.3, 0.1, 0.5, 0.5], [0.2, 0.4, 0.5, 0.1])
    assert (mixed.wins, mixed.ties, mixed.losses) == (2, 1, 1)


def test_bootstrap_interval_matches_the_normal_approximation_on_large_samples():
    rng = np.random.default_rng(0)
    a = rng.random(600)
    b = np.clip(a - rng.normal(0.02, 0.15, 600), 0, 1)
    t = paired_test(a, b)
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert t.ci_low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert t.ci_high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert paired_test(a, b) == t  # seeded: the same comparison prints the same numbers


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []


@pytest.mark.parametrize("shift", [0.0, 0.03, 0.08])
def test_agrees_with_ranx_on_the_same_per_query_values(shift):
    """ranx's Fisher randomization test (Monte Carlo, its own random stream) and paired t-test, the tests
    ``ranx.compare`` runs, on the same values: the t-test agrees exactly, the randomization p within the Monte Carlo
    error of 10,000 permutations each."""
    from ranx.statistical_tests import fisher_randomization_test, paired_student_t_test

    rng = np.random.default_rng(7)
    base = rng.random(60)
    ours = np.clip(base + shift + rng.normal(0, 0.15, 60), 0, 1)
    t = paired_test(ours, base)
    p_fisher, _ = fisher_randomization_test(base, ours, 10_000, 0.05, 42)
    p_student, _ = paired_student_t_test(base, ours, 0.05)
    assert t.p_ttest == pytest.approx(float(p_student), rel=1e-9)
    sd = math.sqrt(max(t.p_randomization * (1 - t.p_randomization), 1e-4) / 10_000)
    assert abs(t.p_randomization - float(p_fisher)) <= 5 * sd + 2e-4


def test_compare_corrects_over_collections_and_pools_every_query():
    rng = np.random.default_rng(1)
    base = {c: {"ndcg@10": rng.random(n), "recall@100": rng.random(n)} for c, n in (("a", 40), ("b", 25), ("c", 12))}
    ours = {c: {m: np.clip(v + (0.1 if c == "a" else -0.02) + rng.normal(0, 0.1, len(v)), 0, 1) for m, v in per.items()}
            for c, per in base.items()}
    cmp = compare(ours, base, program="p", baseline_name="bm25", n_resamples=2000)
    for m in ("ndcg@10", "recall@100"):
        raw = [cmp.collections[c][m].p_randomization for c in ("a", "b", "c")]
        assert [cmp.collections[c][m].p_holm for c in ("a", "b", "c")] == pytest.approx(holm(raw))
        pooled = cmp.pooled[m]
        assert pooled.n == 77 and pooled.p_holm is None
        assert pooled.delta == pytest.approx(np.mean(np.concatenate([ours[c][m] - base[c][m] for c in base])))
    assert cmp.collections["a"]["ndcg@10"].verdict == "better"
    js = cmp.to_json()
    assert set(js["collections"]) == {"a", "b", "c"} and js["pooled"]["ndcg@10"]["n"] == 77
    assert js["collections"]["a"]["ndcg@10"]["verdict"] == "better" and js["baseline"] == "bm25"
    with pytest.raises(ValueError, match="same queries"):
        compare({"a": {"ndcg@10": np.zeros(3), "recall@100": np.zeros(3)}},
                {"a": {"ndcg@10": np.zeros(4), "recall@100": np.zeros(4)}})
