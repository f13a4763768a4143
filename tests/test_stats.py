"""Leaderboard statistics: the paired test against scipy.stats, Holm, t intervals, trial bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from eegbench.errors import DataFormatError
from eegbench.stats import bootstrap_trials, holm, paired_test, t_interval


def _scipy_p(a, b):
    res = sps.permutation_test((np.asarray(a), np.asarray(b)), lambda x, y, axis: np.mean(x - y, axis=axis),
                               permutation_type="samples", vectorized=True, n_resamples=np.inf)
    return res.pvalue


@pytest.mark.parametrize("n", [2, 5, 9])
def test_paired_test_equals_scipy_exact_permutation_test(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(size=n) + 0.3
    out = paired_test(a, b)
    assert out["exact"] and out["n"] == n
    assert out["p"] == pytest.approx(_scipy_p(a, b), rel=1e-12)
    d = a - b
    assert out["mean_diff"] == pytest.approx(d.mean()) and out["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))


def test_paired_test_exact_p_by_hand():
    # three paired seeds, every difference positive: 2 of the 8 sign patterns are as extreme
    out = paired_test([3.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert out["p"] == pytest.approx(0.25) and out["min_p"] == pytest.approx(0.25)
    # ten paired units, all positive and distinct: 2 / 1024
    out = paired_test(np.arange(1, 11) + 0.5, np.zeros(10))
    assert out["p"] == pytest.approx(2 / 1024)


def test_identical_methods_give_no_difference():
    a = [0.51, 0.49, 0.50, 0.52]
    out = paired_test(a, list(a))
    assert out["p"] == 1.0 and out["mean_diff"] == 0.0 and out["d_z"] == 0.0
    assert paired_test([1.0], [2.0])["p"] == 1.0  # one unit can never show a difference


def test_paired_test_sampled_beyond_the_exact_limit_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20)
    first, again = paired_test(a, b, seed=3), paired_test(a, b, seed=3)
    assert not first["exact"] and first["p"] == again["p"]
    assert abs(first["p"] - _scipy_p_sampled(a, b)) < 0.03  # the same test, another Monte-Carlo sample


def _scipy_p_sampled(a, b):
    res = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=20000, rng=np.random.default_rng(11))
    return res.pvalue


def test_paired_test_rejects_bad_input():
    with pytest.raises(DataFormatError, match="equal-length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(DataFormatError, match="NaN"):
        paired_test([1.0, np.nan], [1.0, 2.0])


def test_holm_matches_hand_computed_values():
    # sorted 0.01, 0.03, 0.04, 0.2 -> 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.2
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.2]), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    out = holm([0.01, np.nan, 0.02])  # NaN stays NaN and is not counted in m
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_t_interval_is_scipys_student_t():
    lo, hi = t_interval([40.0, 50.0, 60.0])
    ref = sps.t.interval(0.95, 2, loc=50.0, scale=10.0 / np.sqrt(3))
    assert (lo, hi) == pytest.approx(ref)
    assert all(np.isnan(t_interval([1.0])))


def test_bootstrap_over_trials_covers_the_mean_and_narrows_with_more_trials():
    rng = np.random.default_rng(0)

    def runs(n_trials, n_seeds=3, p=0.7):
        return [(list(rng.binomial(2, p, n_trials)), [2] * n_trials) for _ in range(n_seeds)]

    few, many = runs(40), runs(2000)
    lo, hi = bootstrap_trials([few])
    mean = np.mean([np.sum(c) / np.sum(t) for c, t in few])
    assert lo < mean < hi
    lo2, hi2 = bootstrap_trials([many])
    assert hi2 - lo2 < (hi - lo) / 3 and lo2 < 0.7 < hi2
    assert bootstrap_trials([few], seed=1) == bootstrap_trials([few], seed=1)
    with pytest.raises(DataFormatError, match="same trials"):
        bootstrap_trials([[([1, 0], [1, 1]), ([1], [1])]])
