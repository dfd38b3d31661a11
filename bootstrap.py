"""Bootstrap intervals over examples: every reported score's 95% interval and the paired comparison of two
configurations.

The method, everywhere: the percentile bootstrap. The examples of one set (a BAPPS subsplit)
are drawn with replacement `RESAMPLES` times, each resample's statistic is computed, and the
interval is their 2.5th and 97.5th percentiles (numpy's linear interpolation). The draws come
from numpy's PCG64 generator seeded with `SEED` (and the stratum, see `resample_indices`), so
the same examples give the same interval on every run and machine. Resample b draws the same
examples for every configuration and measure of a set, so intervals of one set are paired.

- `mean_intervals`: means of per-example values (2AFC score and accuracy, rank flips), for any
  number of columns at once.
- `map_interval`: JND mAP (the statistic is recomputed on each resample).
- `paired_difference`: the difference of two configurations' mean over subsplits of the 2AFC
  score, resampling within each subsplit (a stratified bootstrap, strata drawn independently)
  with the same triplets for both configurations, its interval and two-sided p-value.
"""
from typing import NamedTuple

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
CHUNK = 100  # resamples drawn at a time (fixed: the draws do not depend on the size of a set's columns)
METHOD = (f"95% percentile bootstrap over the examples of each set, {RESAMPLES} resamples, numpy PCG64 "
          f"seed {SEED}")


class Estimate(NamedTuple):
    """A measurement and its bootstrap interval (`low`, `high`; None when there is none)."""
    value: float
    low: float = None
    high: float = None


def resample_indices(n, stratum=0):
    """Yield (CHUNK, n) arrays of example indices, `RESAMPLES` rows in all, the same on every call for (n, stratum).

    Independent strata (the subsplits of a stratified bootstrap) draw from their own streams.
    """
    rng = np.random.default_rng([SEED, stratum])
    for start in range(0, RESAMPLES, CHUNK):
        yield rng.integers(0, n, (min(CHUNK, RESAMPLES - start), n))


def percentile_interval(statistics):
    """(low, high) arrays: the percentiles of the resampled `statistics` (resamples on axis 0), ignoring NaN."""
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.nanpercentile(statistics, [tail, 100 - tail], axis=0)
    return low, high


def resampled_means(columns, stratum=0):
    """(RESAMPLES, K): the mean of each column of `columns` (N, K) on each resample of its N rows."""
    columns = np.asarray(columns, dtype=np.float64)
    n = len(columns)
    means = []
    for indices in resample_indices(n, stratum):
        # how often each example is drawn: one matrix product serves every column
        offsets = indices + n * np.arange(len(indices))[:, None]
        counts = np.bincount(offsets.ravel(), minlength=len(indices) * n).reshape(len(indices), n)
        means.append(counts @ columns / n)
    return np.concatenate(means)


def mean_intervals(columns):
    """(low (K,), high (K,)): the interval of the mean of each column of per-example values (N, K)."""
    return percentile_interval(resampled_means(columns))


def average_precision(same_sorted):
    """JND mAP of rows of judgements (R, N) already ranked by distance: `metric.score_jnd`'s VOC-style area under
    the precision envelope, NaN where a row has no positive."""
    true_pos = np.cumsum(same_sorted, axis=1)
    positives = true_pos[:, -1:]
    precision = true_pos / np.arange(1, same_sorted.shape[1] + 1)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives[:, 0] > 0, (same_sorted / positives * envelope).sum(1), np.nan)


def map_interval(d, same):
    """(low, high): the interval of the JND mAP of distances `d` against judgements `same` (N,)."""
    d, same = np.asarray(d, dtype=np.float64), np.asarray(same, dtype=np.float64)
    if not same.any():
        return np.nan, np.nan  # no pair is the same: the mAP is undefined on every resample (metric.score_jnd)
    order = np.argsort(d, kind="stable")
    rank = np.empty(len(d), dtype=np.int64)
    rank[order] = np.arange(len(d))
    ranked_same = same[order]
    # a resample ranked by distance is its examples' ranks sorted: integers, no ties to break anew
    maps = [average_precision(ranked_same[np.sort(rank[indices], axis=1)]) for indices in resample_indices(len(d))]
    return percentile_interval(np.concatenate(maps))


class Difference(NamedTuple):
    """B minus A: the point difference, its interval and the two-sided bootstrap p-value of "no difference"."""
    value: float
    low: float
    high: float
    p: float


def paired_difference(strata):
    """The difference in the mean over strata of per-example values, B minus A, paired and stratified.

    `strata` is a list of (a (N_i,), b (N_i,)) arrays, the two configurations' per-example
    values on the same examples of each stratum (subsplit). Each resample draws the examples
    of every stratum anew (each stratum its own stream) and takes both configurations on the
    same draws. p = min(1, 2 min(#(diff* <= 0) + 1, #(diff* >= 0) + 1) / (RESAMPLES + 1)): a
    configuration compared with itself has difference 0 and p = 1.
    """
    value, resampled = 0.0, 0.0
    for stratum, (a, b) in enumerate(strata):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
            raise ValueError(f"a paired comparison needs both configurations on the same examples; stratum "
                             f"{stratum} has {a.shape} and {b.shape} values")
        value += (b.mean() - a.mean()) / len(strata)
        resampled = resampled + resampled_means(np.stack([b - a], axis=1), stratum)[:, 0] / len(strata)
    low, high = percentile_interval(resampled)
    tails = min(np.count_nonzero(resampled <= 0), np.count_nonzero(resampled >= 0)) + 1
    return Difference(float(value), float(low), float(high), min(1.0, 2 * tails / (RESAMPLES + 1)))
