"""How many more requests an http check sends when its first samples are borderline against the
release before (pure).

The judge (healer/judge.py) fails a check's latency against the release before only when three
things agree: the rank test, the median's ratio and the floor. On the few samples of one cycle
each can fall either side by chance, so each is read as a clear yes, a clear no, or borderline:

    rank test  yes: p < REFERENCE_ALPHA               no: p >= BORDERLINE_ALPHA
    factor     yes: ratio >= factor x MARGIN          no: ratio < factor / MARGIN
    floor      yes: increase >= floor x MARGIN        no: increase < floor / MARGIN

The cycle is decided when one of them says a clear no (the check passes whatever more samples
would say: an app as fast as the release before is not sampled more) or all three a clear yes.
Otherwise it is borderline, and the probe takes up to EXTRA_ROUNDS x `samples` more requests
(three times as many in all), no more than fit in what is left of the check's timeout at the
slowest latency seen, so the judge decides on them instead of guessing. Without a conclusive
reference (fewer than MIN_REFERENCE_SAMPLES) or an answered sample, nothing more is taken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

from healer.judge import MIN_REFERENCE_SAMPLES, REFERENCE_ALPHA, ComparedToPrevious
from healer.stats import mann_whitney_greater, median

# A rank test this far from significance says "no slower" clearly (10x REFERENCE_ALPHA) ...
BORDERLINE_ALPHA = 0.2
# ... and the factor and the floor are borderline within this ratio either side of their bar.
# A release as fast as the one before is then borderline in about 1 cycle of 7 with heavy jitter
# (lognormal sigma 0.5, 3 samples), 1 of 40 with light (sigma 0.2) (tests/test_sampling.py): the
# extra requests are few, and they turn a noisy cycle's near-miss into a clear pass.
MARGIN = 1.15
# Borderline: up to this many times `samples` more requests, within the check's timeout.
EXTRA_ROUNDS = 2
# A further request may take this much longer than the slowest seen and still fit.
_HEADROOM = 1.5


def is_borderline(check: ComparedToPrevious, samples_ms: Sequence[float], pooled_ms: Sequence[float]) -> bool:
    """Whether more samples could change the judge's verdict against the release before: no test
    says a clear no and not all three say a clear yes (the table in the module's docstring)."""
    if len(pooled_ms) < MIN_REFERENCE_SAMPLES or not samples_ms:
        return False  # inconclusive: the judge decides nothing, more samples would not help
    # as the judge reads them: the reference whole (ranks and medians are robust to its outliers)
    now, before = median(samples_ms), median(pooled_ms)
    floor = check.min_latency_increase_vs_previous / timedelta(milliseconds=1)
    factor = check.max_latency_factor_vs_previous
    ratio = now / before if before > 0 else math.inf
    effect = (_read(ratio, factor * MARGIN, factor / MARGIN), _read(now - before, floor * MARGIN, floor / MARGIN))
    if False in effect:
        return False
    p = mann_whitney_greater(samples_ms, pooled_ms).p
    if p >= BORDERLINE_ALPHA:
        return False
    return not (p < REFERENCE_ALPHA and all(effect))


def _read(value: float, yes_from: float, no_under: float) -> bool | None:
    """True: clearly over the bar; False: clearly under it; None: borderline."""
    if value >= yes_from:
        return True
    return False if value < no_under else None


def extra_samples(
    check: ComparedToPrevious, samples: int, samples_ms: Sequence[float], pooled_ms: Sequence[float], left: timedelta
) -> int:
    """How many more requests to send: none unless borderline (`is_borderline`); then up to
    EXTRA_ROUNDS x `samples` (the check's configured count), as many as fit in `left` (what
    remains of the check's budget) at _HEADROOM x the slowest latency seen."""
    if not is_borderline(check, samples_ms, pooled_ms):
        return 0
    slowest = max(max(samples_ms), 1.0) * _HEADROOM
    fit = int(left / timedelta(milliseconds=1) // slowest)
    return max(0, min(EXTRA_ROUNDS * samples, fit))
