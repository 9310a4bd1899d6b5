"""Prometheus metrics for /metrics, read from the state store at scrape time (I/O).

The only module that imports prometheus_client. Nothing is counted in memory: every figure
comes from the store (and the loop's Liveness, and in a fleet its Leadership) when Prometheus
scrapes, so a restarted healer keeps its totals. In a fleet ([fleet]) every sample carries
host="<[fleet] host>": one Prometheus scrapes every host's healer, and their series stay apart.
The store is opened per scrape and closed at once (WAL: a scrape never holds up the loop's
writes). Totals count what retention keeps: rows older than `retention` (90 days)
are pruned, which Prometheus sees as a counter reset.

    registry = build_registry(config, liveness, leadership=leadership)   # leadership: [fleet] only
    body = render(registry)            # text format 0.0.4, CONTENT_TYPE
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from healer.clock import Clock, SystemClock
from healer.logging import log_event, redact
from healer.schedule import phase_at

if TYPE_CHECKING:
    from healer.config import Config
    from healer.fleet import Leadership
    from healer.notify import Liveness
    from healer.store import Store

log = logging.getLogger("healer.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
ACTION_KINDS = ("repair", "rollback")
DELIVERY_OUTCOMES = ("delivered", "failed")  # final states; "pending" is the outbox depth


class StoreCollector:
    """A prometheus_client collector: one read of the store per scrape."""

    def __init__(
        self,
        config: Config,
        liveness: Liveness | None = None,
        *,
        clock: Clock | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        self.liveness = liveness
        self.leadership = leadership  # [fleet]: this healer's standing, read in-process
        self.clock: Clock = clock or SystemClock()
        self._failing = False
        self._lock = threading.Lock()  # scrapes may overlap (one thread per request)

    def collect(self) -> Iterable[Metric]:
        """Every family; in a fleet, each sample labelled with this host (here, once for all)."""
        if self.config.fleet is None:
            yield from self._families()
            return
        host = self.config.fleet_host
        for family in self._families():
            family.samples = [s._replace(labels={"host": host, **s.labels}) for s in family.samples]
            yield family

    def _families(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("healer_up", "1 while the healer process answers scrapes.")
        up.add_metric([], 1)
        yield up
        if self.liveness is not None:
            alive = GaugeMetricFamily(
                "healer_loop_alive",
                "1 while the watchdog loop makes progress (as /healthz and systemd see it).",
            )
            alive.add_metric([], 1 if self.liveness.is_alive() else 0)
            yield alive
            seen = GaugeMetricFamily("healer_loop_last_seen_timestamp_seconds", "When the loop last made progress.")
            seen.add_metric([], self.liveness.last_seen().timestamp())
            yield seen
        if self.leadership is not None:
            yield _gauge("healer_fleet_leader", "1 while this healer leads its app's fleet.",
                         int(self.leadership.is_leader))  # fmt: skip
            if self.leadership.epoch is not None:
                yield _gauge("healer_fleet_epoch", "The lease epoch this healer last led at.", self.leadership.epoch)
        store_ok = GaugeMetricFamily(
            "healer_store_ok", "1 when healer's loop can write its state store and this scrape could read it."
        )
        families: list[Metric] | None = None
        try:
            families = self._from_store()
        except Exception as e:  # a bad row or a locked file costs the store figures, not /metrics
            with self._lock:
                first, self._failing = not self._failing, True
            if first:
                log_event(log, "metrics.store_failed", level=logging.WARNING, error=redact(str(e)))
        else:
            with self._lock:
                self._failing = False
        writable = self.liveness is None or self.liveness.store_error is None
        store_ok.add_metric([], 1 if families is not None and writable else 0)
        yield store_ok
        yield from families or ()

    def _from_store(self) -> list[Metric] | None:
        """One short read of the store; None when there is none yet (Store() would create it)."""
        from healer.store import Store

        where = self.config.state_db
        if not where.exists():
            return None
        store = Store(where)
        try:
            return list(self._read(store))
        finally:
            store.close()

    def _read(self, store: Store) -> Iterator[Metric]:
        now = self.clock.now()
        if self.liveness is None:
            seen = store.meta().get("loop_seen")
            if seen:
                g = GaugeMetricFamily("healer_loop_last_seen_timestamp_seconds", "When the loop last made progress.")
                g.add_metric([], datetime.fromisoformat(seen).timestamp())
                yield g
        yield from self._deploy_families(store, now)

        cycles = CounterMetricFamily("healer_cycles", "Recorded check cycles, by result.", labels=["result"])
        for ok, n in sorted(store.cycle_counts().items()):
            cycles.add_metric(["ok" if ok else "failed"], n)
        yield cycles

        counts = store.finished_action_counts(ACTION_KINDS)
        repairs = CounterMetricFamily(
            "healer_repairs",
            "Finished repairs, by playbook and outcome (ok, failed, skipped, error).",
            labels=["playbook", "outcome"],
        )
        rollbacks = CounterMetricFamily(
            "healer_rollbacks",
            "Finished rollbacks, by outcome (ok, failed, skipped, error).",
            labels=["outcome"],
        )
        by_rollback: dict[str, int] = {}
        for (kind, name, outcome), n in sorted(counts.items()):
            if kind == "repair":
                repairs.add_metric([name, outcome], n)
            else:
                by_rollback[outcome] = by_rollback.get(outcome, 0) + n
        for outcome, n in sorted(by_rollback.items()):
            rollbacks.add_metric([outcome], n)
        yield repairs
        yield rollbacks

        deliveries = store.alert_delivery_counts() if self.config.fleet is None else self._fleet_deliveries()
        alerts = CounterMetricFamily(
            "healer_alerts",
            "Alert deliveries by channel and outcome (delivered, or failed for good).",
            labels=["channel", "outcome"],
        )
        depth = GaugeMetricFamily(
            "healer_alert_outbox_depth",
            "Alert deliveries waiting in the outbox, by channel.",
            labels=["channel"],
        )
        channels = sorted({ch for ch, _ in deliveries})
        for ch in channels:
            for outcome in DELIVERY_OUTCOMES:
                alerts.add_metric([ch, outcome], deliveries.get((ch, outcome), 0))
            depth.add_metric([ch], deliveries.get((ch, "pending"), 0))
        yield alerts
        yield depth

    def _fleet_deliveries(self) -> dict[tuple[str, str], int]:
        """In a fleet the outbox is shared (in public): this host's alerts only."""
        from healer.alerts.outbox import Outbox

        outbox = Outbox(self.config.shared_db)
        try:
            return outbox.delivery_counts(self.config.alert_source)
        finally:
            outbox.close()

    def _deploy_families(self, store: Store, now: datetime) -> Iterator[Metric]:
        d = store.current_deploy()
        if d is None:
            return
        schedule = self.config.schedule
        phase = phase_at(d.first_seen, now, schedule)
        info = GaugeMetricFamily("healer_deploy_info", "The deploy being watched.", labels=["commit"])
        info.add_metric([d.commit[:12]], 1)
        yield info
        yield _gauge(
            "healer_deploy_first_seen_timestamp_seconds",
            "When healer first saw this deploy.",
            d.first_seen.timestamp(),
        )
        yield _gauge(
            "healer_phase_index",
            "Phase of the launch window, 0-based; equals healer_phases after it.",
            phase.index,
        )
        yield _gauge("healer_phases", "Phases in the launch window.", phase.count)
        yield _gauge("healer_in_launch_window", "1 during the launch window.", int(phase.in_window))
        yield _gauge("healer_consecutive_failures", "Failing cycles in a row.", d.consecutive_failures)
        yield _gauge("healer_rollback_after", "Failing cycles in a row that trigger a rollback.",
                     self.config.escalation.rollback_after)  # fmt: skip
        yield _gauge("healer_incident_open", "1 while an incident is open.", int(d.open_incident is not None))
        yield _gauge(
            "healer_held",
            "1 while healer has stopped acting and waits for a person.",
            int(d.held is not None),
        )
        yield _gauge("healer_paused", "1 while a person has paused repairs and rollbacks.",
                     int(store.active_pause(now) is not None))  # fmt: skip

        cycle = store.last_loop_cycle(d.id)
        ok = GaugeMetricFamily("healer_check_ok", "1 when the check passed in the loop's last cycle.", labels=["check"])
        latency = GaugeMetricFamily(
            "healer_check_latency_seconds",
            "The check's latency in the loop's last cycle.",
            labels=["check"],
        )
        if cycle is not None:
            yield _gauge(
                "healer_last_cycle_timestamp_seconds",
                "When the loop's last cycle ran.",
                cycle.at.timestamp(),
            )
            yield _gauge(
                "healer_last_cycle_ok",
                "1 when every check passed in the loop's last cycle.",
                int(cycle.ok),
            )
            for r in cycle.results:
                ok.add_metric([r.name], int(r.ok))
                if r.latency is not None:
                    latency.add_metric([r.name], r.latency.total_seconds())
        yield ok
        yield latency


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def build_registry(
    config: Config,
    liveness: Liveness | None = None,
    *,
    clock: Clock | None = None,
    leadership: Leadership | None = None,
) -> CollectorRegistry:
    """A registry of its own (never the global one) holding healer's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(config, liveness, clock=clock, leadership=leadership))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format."""
    return generate_latest(registry)
