"""Statistics for the judge: rank test, proportions test, outliers, percentiles (pure, stdlib only).

The rules follow Kayenta's judge (IQR outlier removal, a one-sided Mann-Whitney U test) and
kayenta #426 (never a rank test on sparse error counts: Fisher's exact test on the 2x2 table of
failed and answered requests instead). Every test here is one-sided: "is the current release
worse than the reference", never "is it different".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

# Both samples at most this size and no ties: the exact distribution of U is enumerated
# (as scipy's method="auto" does below 8 a side); otherwise the normal approximation.
EXACT_MAX = 8


@dataclass(frozen=True, slots=True)
class RankTest:
    """The outcome of a one-sided Mann-Whitney U test of x greater than y."""

    u: float  # U of x: pairs (xi, yj) with xi > yj, ties counting one half
    p: float  # probability of a U this large or larger if x and y come from one distribution
    exact: bool  # the p-value is enumerated, not the normal approximation


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not xs:
        msg = "percentile of no values"
        raise ValueError(msg)
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(xs, 50)


def remove_outliers(xs: Sequence[float], factor: float = 1.5) -> list[float]:
    """The values within [Q1 - factor x IQR, Q3 + factor x IQR] (Kayenta's IQRDetector); fewer
    than 4 values have no meaningful quartiles and are returned as they are."""
    if len(xs) < 4:
        return list(xs)
    q1, q3 = percentile(xs, 25), percentile(xs, 75)
    spread = q3 - q1
    low, high = q1 - factor * spread, q3 + factor * spread
    return [x for x in xs if low <= x <= high]


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> RankTest:
    """One-sided Mann-Whitney U test that x tends to be greater than y.

    1. Rank the pooled values, ties getting their average rank; U = R_x - n_x(n_x+1)/2.
    2. No ties and both samples small (<= EXACT_MAX): p = P(U >= u) over every arrangement.
    3. Otherwise the normal approximation with the tie-corrected variance
       n_x n_y / 12 x ((n+1) - sum(t^3 - t) / (n(n-1))) and a continuity correction of 1/2
       (as scipy.stats.mannwhitneyu(x, y, alternative="greater")).
    """
    nx, ny = len(x), len(y)
    if nx == 0 or ny == 0:
        msg = "mann_whitney_greater needs values on both sides"
        raise ValueError(msg)
    ranks, ties = _ranks([*x, *y])
    u = sum(ranks[:nx]) - nx * (nx + 1) / 2
    if not ties and nx <= EXACT_MAX and ny <= EXACT_MAX:
        at_least = sum(_arrangements(nx, ny, k) for k in range(math.ceil(u), nx * ny + 1))
        return RankTest(u, at_least / math.comb(nx + ny, nx), exact=True)
    n = nx + ny
    mean = nx * ny / 2
    var = nx * ny / 12 * ((n + 1) - sum(t**3 - t for t in ties) / (n * (n - 1)))
    if var <= 0:  # every value equal: no evidence either way
        return RankTest(u, 1.0, exact=False)
    z = (u - mean - 0.5) / math.sqrt(var)
    return RankTest(u, _upper_tail(z), exact=False)


def fisher_greater(errors: int, total: int, ref_errors: int, ref_total: int) -> float:
    """One-sided Fisher's exact test that the current error rate (errors of total) is greater
    than the reference's: P(X >= errors) for X hypergeometric with the table's margins."""
    if not (0 <= errors <= total and 0 <= ref_errors <= ref_total):
        msg = f"fisher_greater: counts out of range ({errors}/{total}, {ref_errors}/{ref_total})"
        raise ValueError(msg)
    failed = errors + ref_errors
    n = total + ref_total
    denom = math.comb(n, total)
    top = min(total, failed)
    tail = sum(math.comb(failed, k) * math.comb(n - failed, total - k) for k in range(errors, top + 1))
    return min(1.0, tail / denom)


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) in the input order, and the size of each group of ties."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@cache
def _arrangements(m: int, n: int, u: int) -> int:
    """How many orderings of m x's and n y's give U = u (U counts pairs with x above y)."""
    if u < 0 or u > m * n:
        return 0
    if m == 0 or n == 0:
        return 1 if u == 0 else 0
    # the largest value is an x (above all n y's) or a y (above no x)
    return _arrangements(m - 1, n, u - n) + _arrangements(m, n - 1, u)


def _upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))
