"""When a deploy has earned a stable tag (pure): healthy by the judge's standard for long enough.

A stable tag is what a later rollback goes back to, so it must mark a release that was healthy
as healer judges health: incidents open and resolve, and a blip that resolved (the deploy
restarting the app, one slow request) does not make a release unfit. What counts is the whole
window watched, no incident open now, and the last cycles passing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Cycle:
    """One recorded cycle of the deploy, as the stable-tag rule reads it."""

    at: datetime
    ok: bool


def is_stable(
    cycles: Sequence[Cycle],
    *,
    first_seen: datetime,
    has_open_incident: bool,
    now: datetime,
    after: timedelta,
    recover_after: int,
) -> bool:
    """Whether a deploy first seen at `first_seen` may be tagged stable at `now`.

    1. It has been watched for `after` (`tag_stable_after`): `now` and its last recorded
       cycle are both at least `after` past `first_seen`.
    2. No incident is open now; incidents that opened and resolved in the window do not count.
    3. Its last `recover_after` cycles passed, the judge's own bar for a resolved incident, so
       a release is never tagged on a failing cycle or a single lucky one.
    """
    if has_open_incident or now - first_seen < after:
        return False
    if len(cycles) < recover_after or cycles[-1].at - first_seen < after:
        return False
    return all(c.ok for c in cycles[-recover_after:])
