"""The loop's store: a write that fails is kept in memory, in order, and written when the
store works again; reads see it (I/O).

A full disk or a read-only state dir must not blind healer (issue 13, item 3). `healer run`
uses a `BufferedStore`; when one of its writes fails, it

1. keeps the write (a deploy, a cycle, an action, a hold, a meta value ...) in an ordered
   backlog, bounded by `limit`: when full, the oldest cycle that changed only counters is
   forgotten (and counted in `dropped`); incidents, baselines and actions are always kept;
2. answers what the loop asks next from memory: the deploy with its counters, baseline and
   incident, the repairs run meanwhile (so backoffs and caps hold), the meta values;
3. writes the backlog, oldest first, before any later write and on `retry()`; once all of it
   is written the memory is dropped and the database is the truth again.

Rows made in memory get provisional ids (negative numbers); each is mapped to the database's
id when its row is written, and every method translates the ids it is given. `write_error`
is the last write's error, None while the store can be written. Other commands use a plain
`Store`: for them a store that cannot be written is an error that ends the command.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from healer.config import StateDb
from healer.decide import PastRepair
from healer.errors import FencedError, StoreError
from healer.logging import log_event
from healer.model import Deploy, Outcome, Verdict, Who
from healer.store import ActionRow, CycleUpdate, IncidentRow, Store

log = logging.getLogger("healer.store")
T = TypeVar("T")
V = TypeVar("V")

# Writes kept while the store cannot be written: a week of cycles at the 15-minute cadence,
# three and a half days at the failing one (1 minute), each a few kilobytes at most.
DEFAULT_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class _Pending:
    """One write waiting for the store."""

    what: str  # "cycle", "action", ... for the log
    write: Callable[[], None]
    plain: bool = False  # a cycle that changed only counters: the first to forget when full


class BufferedStore(Store):
    """A Store whose writes never fail: what cannot be written waits in memory (module docstring)."""

    def __init__(self, where: StateDb | Path, *, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(where)
        self.limit = limit
        self.write_error: str | None = None  # why the last write failed; None: writable
        self.written = 0  # backlog entries written since the last `take_counts()`
        self.dropped = 0  # backlog entries forgotten because the backlog was full
        self._pending: deque[_Pending] = deque()
        self._meta: dict[str, str | None] = {}  # meta values not written yet (the latest wins)
        self._real: dict[int, int] = {}  # provisional id -> database id, kept for ids still in hand
        self._next_id = -1
        self._current: int | None = None  # the current deploy's id while the memory holds it
        self._deploys: dict[int, Deploy] = {}
        self._previous: dict[int, int | None] = {}  # a deploy made in memory -> the one it replaced
        self._incidents: dict[int, IncidentRow] = {}
        self._actions: dict[int, ActionRow] = {}
        self._causes: dict[int, str | None] = {}
        self._phases: dict[int, int] = {}
        self._bad: dict[str, str] = {}
        self._announced: set[int] = set()
        self._flushing = False

    # ---- the backlog -------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Writes waiting for the store."""
        with self._lock:
            return len(self._pending) + (1 if self._meta else 0)

    def take_counts(self) -> tuple[int, int]:
        """(written, dropped) since the last call, and start counting again."""
        with self._lock:
            counts = (self.written, self.dropped)
            self.written = self.dropped = 0
            return counts

    def retry(self) -> None:
        """Write what waits, oldest first, as far as the store lets us."""
        with self._lock:
            if self._pending or self._meta:
                self._flush()

    def close(self) -> None:
        """Write what waits one last time; what still cannot be written is lost, and logged."""
        with self._lock:
            self.retry()
            if self._pending or self._meta:
                log_event(
                    log, "store.lost_at_stop", level=logging.ERROR, unwritten=self.backlog, error=self.write_error
                )
        super().close()

    def _id(self, any_id: int) -> int:
        """The database's id for `any_id` (itself when it is one, or not written yet)."""
        return self._real.get(any_id, any_id)

    @staticmethod
    def _look_up(memory: dict[int, V], any_id: int, real: int) -> V | None:
        # memory is keyed by the id the row had when it was made: after part of the backlog is
        # written, a row made in memory keeps its provisional key
        found = memory.get(any_id)
        return found if found is not None else memory.get(real)

    def _new_id(self) -> int:
        pid, self._next_id = self._next_id, self._next_id - 1
        return pid

    def _writable(self) -> bool:
        """Nothing waits before a new write (after trying to write what does)."""
        if self._pending or self._meta:
            self._flush()
        return not (self._pending or self._meta)

    def _failed(self, e: StoreError) -> None:
        self.write_error = str(e)

    def _direct(self, write: Callable[[], T]) -> tuple[bool, T | None]:
        """Write now when nothing waits before it: (True, its value); (False, None) when the
        write must wait in memory."""
        if self._writable():
            try:
                value = write()
            except FencedError:
                raise  # refused for good, not failed: never kept to be written later
            except StoreError as e:
                self._failed(e)
            else:
                self.write_error = None
                return True, value
        return False, None

    def _flush(self) -> None:
        self._flushing = True  # Store's own methods read the database, not the memory
        try:
            self._flush_pending()
        finally:
            self._flushing = False

    def _flush_pending(self) -> None:
        while self._pending:
            try:
                self._pending[0].write()
            except FencedError as e:  # the fence moved on while it waited: it must never be written
                log_event(
                    log, "store.fenced_write_dropped", level=logging.WARNING, what=self._pending[0].what, error=str(e)
                )
                self._pending.popleft()
                continue
            except StoreError as e:
                self._failed(e)
                return
            self._pending.popleft()
            self.written += 1
        if self._meta:
            try:
                super().set_meta(**self._meta)
            except StoreError as e:
                self._failed(e)
                return
            self._meta = {}
            self.written += 1
        self.write_error = None
        # every row is in the database: it is the truth again (the id map stays, for ids in hand)
        self._current = None
        self._deploys.clear()
        self._previous.clear()
        self._incidents.clear()
        self._actions.clear()
        self._causes.clear()
        self._phases.clear()
        self._bad.clear()
        self._announced.clear()

    def _keep(self, what: str, write: Callable[[], None], *, plain: bool = False) -> None:
        if len(self._pending) >= self.limit:
            victim = next((p for p in self._pending if p.plain), None)
            if victim is not None:
                self._pending.remove(victim)
                self.dropped += 1
        self._pending.append(_Pending(what, write, plain))

    def _enter_memory(self) -> None:
        """From the first kept write on, the current deploy lives in memory."""
        if self._current is None:
            current = super().current_deploy()
            if current is not None:
                self._deploys[current.id] = current
                self._current = current.id

    def _deploy(self, deploy_id: int) -> Deploy | None:
        """The deploy as memory has it, or as stored."""
        d = self._look_up(self._deploys, deploy_id, self._id(deploy_id))
        return d if d is not None else super().deploy(self._id(deploy_id))

    def _change_deploy(self, deploy_id: int, change: Callable[[Deploy], Deploy]) -> None:
        d = self._deploy(deploy_id)
        if d is not None:
            self._deploys[d.id] = change(d)

    # ---- meta --------------------------------------------------------------------------------

    def set_meta(self, **values: str | None) -> None:
        with self._lock:
            if self._direct(lambda: super(BufferedStore, self).set_meta(**values))[0]:
                return
            self._meta.update(values)

    def meta(self) -> dict[str, str]:
        with self._lock:
            out = super().meta()
            for k, v in self._meta.items():
                if v is None:
                    out.pop(k, None)
                else:
                    out[k] = v
            return out

    # ---- deploys -----------------------------------------------------------------------------

    def current_deploy(self) -> Deploy | None:
        with self._lock:
            if self._current is not None and not self._flushing:
                return self._deploys[self._current]
            return super().current_deploy()

    def deploy(self, deploy_id: int) -> Deploy | None:
        with self._lock:
            if self._flushing:
                return super().deploy(self._id(deploy_id))
            return self._deploy(deploy_id)

    def previous_deploy(self, deploy_id: int) -> Deploy | None:
        with self._lock:
            for key in (deploy_id, self._id(deploy_id)):
                if key in self._previous:
                    before = self._previous[key]
                    return None if before is None else self._deploy(before)
            return super().previous_deploy(self._id(deploy_id))

    def ensure_deploy(self, commit: str, now: datetime, *, via_rollback: bool = False) -> tuple[Deploy, bool]:
        with self._lock:
            if self._current is None:
                ok, found = self._direct(
                    lambda: super(BufferedStore, self).ensure_deploy(commit, now, via_rollback=via_rollback)
                )
                if ok and found is not None:
                    return found
            current = self.current_deploy()
            if current is not None and current.commit == commit:
                if current.via_rollback or not via_rollback:
                    return current, False
                self._enter_memory()
                self._change_deploy(current.id, lambda d: replace(d, via_rollback=True))
                self._keep("deploy", lambda: self._write_deploy(commit, now, via_rollback, None))
                return self._deploys[current.id], False
            self._enter_memory()
            if current is not None and current.open_incident is not None:
                row = self._incident(current.open_incident)
                if row is not None and row.resolved_at is None:
                    self._incidents[row.id] = replace(
                        row, resolved_at=now, cause=row.cause + " (closed: a new commit was deployed)"
                    )
                self._change_deploy(current.id, lambda d: replace(d, open_incident=None))
            pid = self._new_id()
            bad = self.bad_commits().get(commit)
            self._deploys[pid] = Deploy(id=pid, commit=commit, first_seen=now, via_rollback=via_rollback, bad=bad)
            self._previous[pid] = None if current is None else self._id(current.id)
            self._current = pid
            self._keep("deploy", lambda: self._write_deploy(commit, now, via_rollback, pid))
            return self._deploys[pid], True

    def _write_deploy(self, commit: str, now: datetime, via_rollback: bool, pid: int | None) -> None:
        d, _ = super().ensure_deploy(commit, now, via_rollback=via_rollback)
        if pid is not None:
            self._real[pid] = d.id

    def set_held(self, deploy_id: int, reason: str | None) -> None:
        with self._lock:
            if self._direct(lambda: super(BufferedStore, self).set_held(self._id(deploy_id), reason))[0]:
                return
            self._enter_memory()
            self._change_deploy(deploy_id, lambda d: replace(d, held=reason))
            self._keep("hold", lambda: super(BufferedStore, self).set_held(self._id(deploy_id), reason))

    def set_stable_tag(self, deploy_id: int, tag: str) -> None:
        with self._lock:
            if self._direct(lambda: super(BufferedStore, self).set_stable_tag(self._id(deploy_id), tag))[0]:
                return
            self._enter_memory()
            self._change_deploy(deploy_id, lambda d: replace(d, stable_tag=tag))
            self._keep("tag", lambda: super(BufferedStore, self).set_stable_tag(self._id(deploy_id), tag))

    def phase_index(self, deploy_id: int) -> int | None:
        with self._lock:
            real = self._id(deploy_id)
            found = self._look_up(self._phases, deploy_id, real)
            if found is not None:
                return found
            return None if real < 0 else super().phase_index(real)

    # ---- cycles ------------------------------------------------------------------------------

    def record_cycle(self, deploy_id: int, verdict: Verdict, who: Who | str, update: CycleUpdate | None) -> int | None:
        with self._lock:
            ok, opened = self._direct(
                lambda: super(BufferedStore, self).record_cycle(self._id(deploy_id), verdict, who, update)
            )
            if ok:
                return opened
            self._enter_memory()
            opened = None if update is None else self._cycle_in_memory(deploy_id, verdict, who, update)

            def write() -> None:
                real = super(BufferedStore, self).record_cycle(self._id(deploy_id), verdict, who, update)
                if opened is not None and real is not None:
                    self._real[opened] = real

            plain = update is None or (
                update.open_incident_cause is None and not update.resolve_incident and update.baseline is None
            )
            self._keep("cycle", write, plain=plain)
            return opened

    def _cycle_in_memory(self, deploy_id: int, verdict: Verdict, who: Who | str, update: CycleUpdate) -> int | None:
        """What record_cycle does to the deploy and its incident, done in memory."""
        d = self._deploy(deploy_id)
        if d is None:
            return None
        opened: int | None = None
        open_incident = d.open_incident
        if update.resolve_incident and d.open_incident is not None:
            row = self._incident(d.open_incident)
            if row is not None:
                self._incidents[row.id] = replace(row, resolved_at=verdict.at)
            open_incident = None
        if update.open_incident_cause is not None:
            opened = self._new_id()
            self._incidents[opened] = IncidentRow(opened, d.id, verdict.at, None, update.open_incident_cause)
            open_incident = opened
        self._deploys[d.id] = replace(
            d,
            consecutive_failures=update.consecutive_failures,
            consecutive_passes=update.consecutive_passes,
            emergency_streak=update.emergency_streak,
            last_cycle_at=verdict.at,
            last_ok=verdict.ok,
            baseline=update.baseline if update.baseline is not None else d.baseline,
            healthy_at=d.healthy_at if d.healthy_at is not None or not (verdict.ok and update.settled) else verdict.at,
            open_incident=open_incident,
        )
        if update.phase_index is not None:
            self._phases[d.id] = update.phase_index
        if who is Who.LOOP and not verdict.ok:
            self._causes[d.id] = update.cause
        return opened

    def last_cause(self, deploy_id: int) -> str | None:
        with self._lock:
            real = self._id(deploy_id)
            for key in (deploy_id, real):
                if key in self._causes:
                    return self._causes[key]
            return None if real < 0 else super().last_cause(real)

    # ---- incidents ---------------------------------------------------------------------------

    def _incident(self, incident_id: int) -> IncidentRow | None:
        real = self._id(incident_id)
        row = self._look_up(self._incidents, incident_id, real)
        if row is not None or real < 0:
            return row
        return super().incident(real)

    def incident(self, incident_id: int) -> IncidentRow | None:
        with self._lock:
            return self._incident(incident_id)

    # ---- actions -----------------------------------------------------------------------------

    def start_action(
        self, *, kind: str, name: str, who: Who | str, reason: str, now: datetime,
        deploy_id: int | None, incident_id: int | None = None, outcome: Outcome = Outcome.STARTED,
        detail: str = "", note: str = "",
    ) -> int:  # fmt: skip
        with self._lock:

            def write() -> int:
                return super(BufferedStore, self).start_action(
                    kind=kind, name=name, who=who, reason=reason, now=now,
                    deploy_id=None if deploy_id is None else self._id(deploy_id),
                    incident_id=None if incident_id is None else self._id(incident_id),
                    outcome=outcome, detail=detail, note=note,
                )  # fmt: skip

            ok, action_id = self._direct(write)
            if ok and action_id is not None:
                return action_id
            self._enter_memory()
            pid = self._new_id()
            finished = None if outcome is Outcome.STARTED else now
            self._actions[pid] = ActionRow(
                pid, now, finished, deploy_id, incident_id, kind, name, str(who), reason, str(outcome), detail, note
            )

            def later() -> None:
                self._real[pid] = write()

            self._keep("action", later)
            return pid

    def finish_action(self, action_id: int, outcome: Outcome, now: datetime, detail: str = "") -> None:
        with self._lock:
            if self._direct(
                lambda: super(BufferedStore, self).finish_action(self._id(action_id), outcome, now, detail)
            )[0]:
                return
            self._enter_memory()
            row = self._actions.get(action_id)
            if row is not None:
                self._actions[action_id] = replace(row, outcome=str(outcome), finished_at=now, detail=detail)
            self._keep(
                "action", lambda: super(BufferedStore, self).finish_action(self._id(action_id), outcome, now, detail)
            )

    def past_repairs(self, deploy_id: int) -> tuple[PastRepair, ...]:
        with self._lock:
            real = self._id(deploy_id)
            stored = () if real < 0 else super().past_repairs(real)
            kept = tuple(
                PastRepair(r.name, r.at, Outcome(r.outcome), r.note)
                for r in self._actions.values()
                if r.kind == "repair"
                and r.who == Who.LOOP
                and r.deploy_id is not None
                and self._id(r.deploy_id) == real
            )
            return stored + kept

    # ---- bad commits, pauses, retention --------------------------------------------------------

    def mark_bad(self, commit: str, reason: str, now: datetime) -> None:
        with self._lock:
            if self._direct(lambda: super(BufferedStore, self).mark_bad(commit, reason, now))[0]:
                return
            self._enter_memory()
            self._bad[commit] = reason
            for key, d in self._deploys.items():
                if d.commit == commit:
                    self._deploys[key] = replace(d, bad=reason)
            self._keep("bad commit", lambda: super(BufferedStore, self).mark_bad(commit, reason, now))

    def bad_commits(self) -> dict[str, str]:
        with self._lock:
            return {**super().bad_commits(), **self._bad}

    def mark_pause_announced(self, pause_id: int) -> None:
        with self._lock:
            if self._direct(lambda: super(BufferedStore, self).mark_pause_announced(pause_id))[0]:
                return
            self._enter_memory()
            self._announced.add(pause_id)
            self._keep("pause", lambda: super(BufferedStore, self).mark_pause_announced(pause_id))

    def expired_unannounced_pauses(self, now: datetime) -> list[tuple[int, str]]:
        with self._lock:
            return [p for p in super().expired_unannounced_pauses(now) if p[0] not in self._announced]

    def prune(self, older_than: datetime) -> int:
        """Prune only while nothing waits: forgetting is never urgent, the next prune does it."""
        with self._lock:
            return self._direct(lambda: super(BufferedStore, self).prune(older_than))[1] or 0
