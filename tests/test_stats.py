"""healer.stats against textbook values and brute force, and its properties."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.stats import (
    fisher_greater,
    mann_whitney_greater,
    median,
    percentile,
    remove_outliers,
)

MALES = [19.0, 22.0, 16.0, 29.0, 24.0]  # scipy.stats.mannwhitneyu's documented example
FEMALES = [20.0, 11.0, 17.0, 12.0]


def _brute_p(x: list[float], y: list[float]) -> float:
    """P(U >= u) by trying every assignment of the pooled values to the two groups."""
    pooled = x + y

    def u_of(xs: list[float], ys: list[float]) -> float:
        return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys)

    u = u_of(x, y)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(x)):
        xs = [pooled[i] for i in idx]
        ys = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        hits += u_of(xs, ys) >= u
    return hits / total


@pytest.mark.parametrize(
    ("x", "y", "u", "p", "exact"),
    [
        # scipy docs: U1 = 17, exact two-sided p = 0.111 -> one-sided 7/126
        pytest.param(MALES, FEMALES, 17.0, 7 / 126, True, id="scipy-example-exact"),
        pytest.param([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], 9.0, 1 / 20, True, id="complete-separation-3v3"),
        pytest.param([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 0.0, 1.0, True, id="the-other-way"),
        # 10 vs 10, every x above every y: z = (100 - 50 - 0.5) / sqrt(175) = 3.742, P = 9.14e-5
        pytest.param(
            [float(v) for v in range(11, 21)],
            [float(v) for v in range(1, 11)],
            100.0,
            9.14e-5,
            False,
            id="normal-10v10",
        ),
        # ties: x = [2, 2, 3], y = [1, 2] -> ranks 3,3,5 | 1,3; U = 11 - 6 = 5; var = 6/12*(6 - 24/20) = 2.4
        # z = (5 - 3 - 0.5)/sqrt(2.4) = 0.968, P = 0.1665
        pytest.param([2.0, 2.0, 3.0], [1.0, 2.0], 5.0, 0.1665, False, id="tie-corrected"),
    ],
)
def test_mann_whitney_matches_known_values(x: list[float], y: list[float], u: float, p: float, exact: bool) -> None:
    """U and the one-sided p agree with hand-checked and documented values."""
    t = mann_whitney_greater(x, y)
    assert t.u == u
    assert t.exact is exact
    assert t.p == pytest.approx(p, rel=2e-3)


@pytest.mark.parametrize("seed", range(6))
def test_exact_p_equals_brute_force(seed: int) -> None:
    """The enumerated distribution of U equals trying every assignment."""
    rng = random.Random(seed)
    x = rng.sample(range(100), rng.randint(1, 6))
    y = [v for v in rng.sample(range(100), 8) if v not in x][: rng.randint(1, 6)]
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    t = mann_whitney_greater(xs, ys)
    assert t.exact
    assert t.p == pytest.approx(_brute_p(xs, ys))


def test_same_distribution_gives_p_roughly_uniform() -> None:
    """Drawn from one distribution, p < alpha about alpha of the time (seeded)."""
    rng = random.Random(15)
    ps = []
    for _ in range(800):
        cur = [rng.lognormvariate(3, 0.5) for _ in range(20)]
        ref = [rng.lognormvariate(3, 0.5) for _ in range(60)]
        ps.append(mann_whitney_greater(cur, ref).p)
    for alpha in (0.02, 0.05, 0.2, 0.5):
        share = sum(p < alpha for p in ps) / len(ps)
        assert abs(share - alpha) < 3 * math.sqrt(alpha * (1 - alpha) / len(ps)) + 0.01, (alpha, share)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_forty_times_slower_is_significant(seed: int) -> None:
    """20 samples 40 times slower than 60 reference samples give p < 0.001."""
    rng = random.Random(seed)
    ref = [rng.lognormvariate(math.log(30), 0.6) for _ in range(60)]
    cur = [40 * rng.lognormvariate(math.log(30), 0.6) for _ in range(20)]
    assert mann_whitney_greater(cur, ref).p < 0.001


def test_all_equal_values_are_no_evidence() -> None:
    """Nothing but ties gives p = 1."""
    assert mann_whitney_greater([5.0] * 10, [5.0] * 10).p == 1.0


@pytest.mark.parametrize(
    ("table", "p"),
    [
        # Fisher's tea tasting: 3 of 4 right vs 1 of 4, one-sided p = 17/70
        pytest.param((3, 4, 1, 4), 17 / 70, id="lady-tasting-tea"),
        pytest.param((0, 10, 5, 10), 1.0, id="fewer-errors-than-before"),
        # 5 of 5 vs 0 of 5: only the observed table is as extreme, 1 / C(10, 5)
        pytest.param((5, 5, 0, 5), 1 / 252, id="all-vs-none"),
        # 1 of 3 vs 0 of 60: P(X >= 1) = 3/63
        pytest.param((1, 3, 0, 60), 3 / 63, id="one-error-in-a-cycle"),
    ],
)
def test_fisher_matches_known_values(table: tuple[int, int, int, int], p: float) -> None:
    """The one-sided Fisher p agrees with textbook and hand-computed values."""
    assert fisher_greater(*table) == pytest.approx(p)


@pytest.mark.parametrize(
    ("xs", "q", "expected"),
    [
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="median-even"),
        pytest.param([5.0], 90, 5.0, id="one-value"),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 90, 4.6, id="p90-interpolated"),
        pytest.param([3.0, 1.0, 2.0], 0, 1.0, id="min"),
    ],
)
def test_percentile_interpolates_linearly(xs: list[float], q: float, expected: float) -> None:
    """Percentiles interpolate between ranks as numpy's default does."""
    assert percentile(xs, q) == pytest.approx(expected)


def test_median_is_the_50th_percentile() -> None:
    """median() is percentile(50)."""
    assert median([9.0, 1.0, 5.0]) == 5.0


def test_remove_outliers_drops_values_beyond_the_fences() -> None:
    """Values beyond 1.5 IQR of the quartiles go; fewer than four values stay as they are."""
    xs = [10.0, 11.0, 12.0, 13.0, 14.0, 500.0]
    assert remove_outliers(xs) == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert remove_outliers([1.0, 1000.0]) == [1.0, 1000.0]
