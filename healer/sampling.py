"""How many more requests an http check sends when its first samples are borderline (pure).

Three samples a cycle are few: each of the judge's readings of them can fall either side by
chance. Where one could, the probe takes up to EXTRA_ROUNDS x `samples` more requests (three
times as many in all), no more than fit in what is left of the check's timeout at the slowest
latency seen, and the check and the judge decide on them all instead of guessing.

Errors. A cycle whose requests partly failed (1 or 2 of 3) is borderline: the app answered some
correctly, so it is neither crashed nor wedged, and whether most of its requests fail (the
http check's majority rule) or a few do at random (a healthy app's noise) is what more samples
tell; the share is then judged over all of them. A cycle whose every request was refused or
timed out decides at once (a crash, a wedge). One whose every request got a failing HTTP answer
(500 to all) is sampled more too: it is a broken release, or a healthy app's random errors
falling together (1 cycle in 8,000 at 5 % errors, 1 in 1,000 at 10 %), and the extra requests
tell which for the price of a few requests a broken release answers at once.

Latency against the release before (healer/judge.py fails it only when the rank test, the
median's ratio and the floor agree), each read as a clear yes, a clear no, or borderline:

    rank test  yes: p < REFERENCE_ALPHA               no: p >= BORDERLINE_ALPHA
    factor     yes: ratio >= factor x MARGIN          no: ratio < factor / MARGIN
    floor      yes: increase >= floor x MARGIN        no: increase < floor / MARGIN

It is decided when one of them says a clear no (an app as fast as the release before is not
sampled more) or all three a clear yes; otherwise it is borderline. Without a conclusive
reference (fewer than MIN_REFERENCE_SAMPLES) or an answered sample, latency takes nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from healer.judge import MIN_REFERENCE_SAMPLES, REFERENCE_ALPHA, ComparedToPrevious, latency_effect
from healer.stats import mann_whitney_greater

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


@dataclass(frozen=True, slots=True)
class FirstSamples:
    """What a cycle's first requests showed, as the check and the judge read them."""

    requests: int  # sent and judged (healer's own failures to send one left out)
    failed: int  # of those, failed: a wrong status or body, refused, no answer in time
    latencies_ms: tuple[float, ...]  # each request that got an HTTP answer (`CheckResult.samples_ms`)

    @property
    def all_answered(self) -> bool:
        """Every request got an HTTP answer (none refused, timed out or garbled)."""
        return len(self.latencies_ms) == self.requests


def errors_borderline(first: FirstSamples) -> bool:
    """Whether more samples could change what the errors say: some but not all requests failed,
    or all failed with HTTP answers (the module's docstring)."""
    if not first.failed:
        return False
    return first.failed < first.requests or first.all_answered


def is_borderline(check: ComparedToPrevious, samples_ms: Sequence[float], pooled_ms: Sequence[float]) -> bool:
    """Whether more samples could change the judge's latency verdict against the release before:
    no test says a clear no and not all three say a clear yes (the table in the module's docstring)."""
    if len(pooled_ms) < MIN_REFERENCE_SAMPLES or not samples_ms:
        return False  # inconclusive: the judge decides nothing, more samples would not help
    e = latency_effect(check, samples_ms, pooled_ms)
    effect = (
        _read(e.ratio, e.factor * MARGIN, e.factor / MARGIN),
        _read(e.increase, e.floor * MARGIN, e.floor / MARGIN),
    )
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
    check: ComparedToPrevious,
    samples: int,
    first: FirstSamples,
    pooled_ms: Sequence[float],
    left: timedelta,
) -> int:
    """How many more requests to send: none unless the errors (`errors_borderline`) or the
    latency (`is_borderline`, against the release before's `pooled_ms`) are borderline; then up
    to EXTRA_ROUNDS x `samples` (the check's configured count), as many as fit in `left` (what
    remains of the check's budget) at _HEADROOM x the slowest latency seen."""
    if not (errors_borderline(first) or is_borderline(check, first.latencies_ms, pooled_ms)):
        return 0
    slowest = max((*first.latencies_ms, 1.0)) * _HEADROOM
    fit = int(left / timedelta(milliseconds=1) // slowest)
    return max(0, min(EXTRA_ROUNDS * samples, fit))
