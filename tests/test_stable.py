"""The stable-tag rule: healthy by the judge's standard for `tag_stable_after`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healer.stable import Cycle, is_stable

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
AFTER = 6 * H


def window(*marks: str) -> list[Cycle]:
    """One cycle an hour from T0: "+" passed, "-" failed."""
    return [Cycle(at=T0 + i * H, ok=m == "+") for i, m in enumerate(marks)]


@pytest.mark.parametrize(
    ("cycles", "incident", "now", "expected"),
    [
        pytest.param(window(*"+++++++"), False, T0 + 6 * H, True, id="every-cycle-passed"),
        pytest.param(window(*"+--++++"), False, T0 + 6 * H, True, id="a-resolved-blip-while-restarting"),
        pytest.param(window(*"+++++-+"), False, T0 + 6 * H, False, id="one-pass-since-the-last-failure"),
        pytest.param(window(*"++++++-"), False, T0 + 6 * H, False, id="failing-now"),
        pytest.param(window(*"+++++++"), True, T0 + 6 * H, False, id="an-incident-open"),
        pytest.param(window(*"++++++"), False, T0 + 6 * H, False, id="last-cycle-before-the-window-ends"),
        pytest.param(window(*"+++++++"), False, T0 + 5 * H, False, id="not-watched-long-enough"),
        pytest.param(window(), False, T0 + 7 * H, False, id="never-watched"),
        pytest.param([Cycle(at=T0 + 6 * H, ok=True)], False, T0 + 6 * H, False, id="a-single-lucky-cycle"),
    ],
)  # fmt: skip
def test_is_stable_needs_the_window_healthy_not_every_cycle(
    cycles: list[Cycle], incident: bool, now: datetime, expected: bool
) -> None:
    """Watched for tag_stable_after, no open incident, the last recover_after cycles passing."""
    seen = is_stable(cycles, first_seen=T0, has_open_incident=incident, now=now, after=AFTER, recover_after=2)
    assert seen is expected
