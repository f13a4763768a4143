"""Statistics for leaderboards: paired tests between methods, Holm correction, intervals.

How the leaderboard uses them (``eegbench compare``):

- **Paired units.** Two methods are compared on the units both were run on: seeds for the
  multi-subject setting, (subject, seed) pairs for single- and cross-subject settings. Every method
  sees the same split and the same test trials for a unit, so the per-unit differences are paired.
- **Test.** :func:`paired_test` is the exact two-sided sign-flip permutation test of the mean paired
  difference (``scipy.stats.permutation_test`` with ``permutation_type="samples"``; every one of the
  ``2**n`` sign patterns when ``2**n <= 65536``, otherwise a seeded Monte-Carlo sample). With n
  paired units the smallest attainable p is ``2 / 2**n`` (0.25 for three seeds), so a claim of a
  significant difference needs at least six units. Identical results give p = 1.
- **Multiple comparisons.** :func:`holm` (Holm 1979, step-down Bonferroni) over all method pairs of
  one metric.
- **Effect size.** The mean paired difference (in the metric's unit) and Cohen's d_z (mean difference
  / standard deviation of the differences).
- **Intervals.** 95 % Student-t interval over units where only per-unit values exist
  (:func:`t_interval`: FID, KID, IS); a percentile bootstrap over test trials for accuracy-type
  metrics whose results carry per-trial counts (:func:`bootstrap_trials`), resampling the same trials
  for every seed of a subject (they share them) and within each subject.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from eegbench.errors import DataFormatError

__all__ = ["bootstrap_trials", "holm", "paired_test", "t_interval"]

#: Above this many sign patterns the permutation test samples them (seeded) instead of enumerating.
EXACT_LIMIT = 2**16


def _mean_diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def paired_test(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 20000, seed: int = 0) -> dict:
    """Two-sided paired sign-flip permutation test of ``mean(a - b) == 0``.

    Parameters
    ----------
    a, b : sequence of float, length n >= 1
        Values of two methods on the same n paired units (seeds, or subject × seed), in the same order.
    n_resamples : int
        Monte-Carlo sign patterns when ``2**n`` exceeds :data:`EXACT_LIMIT` (else all are enumerated).
    seed : int
        Seed of the Monte-Carlo sample.

    Returns
    -------
    dict
        ``n`` (int), ``mean_diff`` (float, ``mean(a - b)``), ``d_z`` (float, mean difference / sample
        std of the differences; 0 when every difference is 0, ``inf`` with the sign of the mean when
        the differences are equal and non-zero, NaN for n = 1), ``p`` (float, two-sided),
        ``exact`` (bool), ``min_p`` (float, the smallest p attainable with n units), ``test``
        (``"paired sign-flip permutation (mean difference)"``).

    Raises
    ------
    DataFormatError
        If ``a`` and ``b`` differ in length, are empty, or contain NaN or infinite values.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise DataFormatError(f"paired values need two equal-length 1-D sequences, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataFormatError("paired values contain NaN or infinite values")
    n = int(x.size)
    d = x - y
    mean = float(d.mean())
    if n > 1:
        sd = float(d.std(ddof=1))
        if sd > 0:
            d_z = mean / sd
        else:
            d_z = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
    else:
        d_z = float("nan")
    exact = 2**n <= EXACT_LIMIT
    if np.all(d == 0) or n == 1:  # n = 1: both sign patterns give the same |mean difference|
        p = 1.0
    else:
        res = stats.permutation_test(
            (x, y), _mean_diff, permutation_type="samples", vectorized=True, alternative="two-sided",
            n_resamples=np.inf if exact else int(n_resamples), rng=np.random.default_rng(seed))
        p = float(min(1.0, res.pvalue))
    return {"n": n, "mean_diff": mean, "d_z": d_z, "p": p, "exact": exact, "min_p": min(1.0, 2.0 / 2**n),
            "test": "paired sign-flip permutation (mean difference)"}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (Holm 1979), in the input order.

    Parameters
    ----------
    p_values : sequence of float, length m
        Unadjusted p-values of one family of tests; NaN entries are left NaN and do not count in m.

    Returns
    -------
    numpy.ndarray of float64, shape (m,)
        ``p_(i) * (m - i + 1)`` for the i-th smallest, made monotone and capped at 1. Reject at
        level alpha where the adjusted p <= alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (NaN, NaN for fewer than 2 values).

    Parameters
    ----------
    values : sequence of float
        Per-unit values (NaN entries dropped).
    level : float
        Confidence level.

    Returns
    -------
    (float, float)
        Lower and upper bound, ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` (scipy.stats.t).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size < 2:
        return float("nan"), float("nan")
    sem = v.std(ddof=1) / np.sqrt(v.size)
    if sem == 0:
        return float(v.mean()), float(v.mean())
    lo, hi = stats.t.interval(level, v.size - 1, loc=v.mean(), scale=sem)
    return float(lo), float(hi)


def bootstrap_trials(
    groups: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval over test trials of a mean accuracy.

    The statistic is the mean over groups (subjects) of the mean over that group's runs (seeds) of
    ``sum(correct) / sum(total)``. Each bootstrap replicate resamples each group's trials with
    replacement, with the same draw for every run of the group (they score the same trials).

    Parameters
    ----------
    groups : sequence of sequence of (correct, total) or (correct, total, correct_b, total_b)
        One entry per group; per run, two equal-length sequences over the group's test trials:
        correct outcomes and outcomes per trial (e.g. samples, or samples × n-way draws; per-trial
        values with total 1 for a mean of per-trial scores). With four sequences the statistic is
        the difference ``sum(correct) / sum(total) - sum(correct_b) / sum(total_b)`` of two
        scorings of the same trials (a run and its control), resampled with the same draw.
    level : float
        Confidence level.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    (float, float)
        Lower and upper percentile bound.

    Raises
    ------
    DataFormatError
        If a group is empty, the runs of a group have different numbers of trials, or a trial has
        no outcomes.
    """
    rng = np.random.default_rng(seed)
    stat = np.zeros(n_boot)
    for runs in groups:
        if not runs:
            raise DataFormatError("bootstrap over trials: a group has no runs")
        lengths = {len(r[0]) for r in runs} | {len(r[1]) for r in runs}
        if len(lengths) != 1 or 0 in lengths:
            raise DataFormatError(
                f"bootstrap over trials: the runs of one group must score the same trials, got lengths "
                f"{[len(r[0]) for r in runs]}")
        paired = {len(r) for r in runs}
        if paired not in ({2}, {4}) or (paired == {4} and {len(r[2]) for r in runs} | {len(r[3]) for r in runs}
                                        != lengths):
            raise DataFormatError("bootstrap over trials: every run of a group needs (correct, total) or "
                                  "(correct, total, correct_b, total_b) over the same trials")
        parts = [np.asarray([r[j] for r in runs], dtype=np.float64) for j in range(len(runs[0]))]
        if parts[0].ndim != 2 or any(p.shape != parts[0].shape for p in parts):
            raise DataFormatError(
                f"bootstrap over trials: the runs of one group must score the same trials, got shapes "
                f"{[len(r[0]) for r in runs]}")
        if any((p <= 0).any() for p in parts[1::2]):
            raise DataFormatError("bootstrap over trials: a trial has no outcomes (total 0)")
        n = parts[0].shape[1]
        idx = rng.integers(0, n, size=(n_boot, n))
        acc = parts[0][:, idx].sum(axis=2) / parts[1][:, idx].sum(axis=2)  # (runs, n_boot)
        if len(parts) == 4:
            acc = acc - parts[2][:, idx].sum(axis=2) / parts[3][:, idx].sum(axis=2)
        stat += acc.mean(axis=0)
    stat /= len(groups)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stat, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
