"""The picture of the launch window: a timeline read from the store, rendered as one HTML page (pure).

The page is what `/` serves and what `healer report --html` writes: the deploy being watched
and its phase, every cycle green or red, incidents as red bands, repairs, rollbacks, pauses and
deploys as markers, latency against the baseline, the open incident with its likely cause and
the last actions. It is one self-contained file: inline CSS and SVG, no script, no external
asset, so it works offline and from a file. Every piece of text is HTML-escaped: check output
and commit subjects are outside text and must never become markup.

    html = render_page(timeline, "shop: the launch window", refresh=timedelta(seconds=10))
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from healer.config import format_elapsed
from healer.model import Outcome

# ---- the read model (built by healer.views.timeline_data) -----------------------------------


@dataclass(frozen=True, slots=True)
class CyclePoint:
    """One recorded cycle: its verdict, what it said and the latency each check measured."""

    at: datetime
    ok: bool
    who: str  # loop | person
    summary: str
    cause: str | None  # a failing loop cycle's likely cause
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # check name -> ms


@dataclass(frozen=True, slots=True)
class DeploySpan:
    """A deployed commit and the latency its baseline took, per check (empty until taken)."""

    id: int
    commit: str
    first_seen: datetime
    via_rollback: bool
    baseline_ms: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncidentBand:
    """An incident from its opening to its resolution (None: still open)."""

    id: int
    opened_at: datetime
    resolved_at: datetime | None
    cause: str


@dataclass(frozen=True, slots=True)
class ActionMark:
    """A row of the action log: a repair, a rollback, a pause, a hold, a tag ..."""

    at: datetime
    kind: str
    name: str
    who: str
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class Watched:
    """The deploy healer watches now, and where it stands."""

    commit: str
    subject: str | None  # the commit's subject line (None: not readable)
    first_seen: datetime
    phase: str
    in_window: bool
    via_rollback: bool
    held: str | None
    paused: str | None  # "until ...: reason" while a person's pause is in force
    stable_tag: str | None
    last_ok: bool | None
    open_incident: IncidentBand | None
    likely_cause: str | None  # the latest failing cycle's
    next_step: str | None  # what healer does next, as the latest cycle said


@dataclass(frozen=True, slots=True)
class Timeline:
    """Everything the page shows for [start, end]."""

    app: str
    start: datetime
    end: datetime
    watched: Watched | None
    deploys: tuple[DeploySpan, ...]
    cycles: tuple[CyclePoint, ...]
    incidents: tuple[IncidentBand, ...]
    actions: tuple[ActionMark, ...]
    # a cycle's verdict holds until the next cycle, unless that is further away than this: then
    # healer was not watching (stopped), and the picture shows a gap, not a verdict
    max_gap: timedelta = timedelta(hours=8)


# ---- geometry -------------------------------------------------------------------------------

_W, _H = 1000, 236
_LEFT, _RIGHT = 64, 16
_LABEL_ROWS = (14, 28, 42)  # y of the marker labels, staggered so close markers stay readable
_CHAR_WIDTH = 6.5  # about how wide a character of an 11-unit label is, to keep labels apart
_CYCLES = (54, 84)  # y range of the cycle lane
_MARK_Y = 96  # where the marker symbols sit
_LAT = (110, 200)  # y range of the latency chart
_AXIS_Y = 218
_MAX_BAR = 4.0  # the width of a cycle's bar when the next cycle is too far (see Timeline.max_gap)
_LAST_ACTIONS = 8
_PALETTE = ("#1565c0", "#00897b", "#6d4c41", "#5e35b1")
_TICKS = tuple(
    timedelta(seconds=s)
    for s in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# action kind -> (marker class, colour); kinds not listed are drawn as "other"
_MARKERS = {
    "repair": ("repair", "#ef6c00"),
    "rollback": ("rollback", "#8e24aa"),
    "pause": ("pause", "#616161"),
    "resume": ("pause", "#616161"),
    "deploy.begin": ("deploy", "#1a73e8"),
    "deploy.end": ("deploy", "#1a73e8"),
}
_DEPLOY_COLOUR = "#1a73e8"
_OTHER_COLOUR = "#757575"

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1f2328}
header{background:#24292f;color:#fff;padding:10px 20px}header h1{font-size:18px;margin:0}
header p{margin:2px 0 0;color:#c9d1d9;font-size:12px}main{padding:14px 20px;max-width:1200px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;
padding:10px 14px;flex:1 1 320px}.card h2{font-size:13px;text-transform:uppercase;color:#57606a;margin:0 0 6px}
.state{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.state.healthy{background:#2e7d32}.state.failing,.state.incident{background:#c62828}
.state.held{background:#6a1b9a}.state.paused{background:#616161}.state.waiting{background:#8c959f}
.phase{font-weight:600}code{font:12px ui-monospace,monospace;background:#eef1f4;padding:0 3px;border-radius:3px}
section.chart{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:12px 0;padding:8px}
svg{width:100%;height:auto;display:block}.legend{font-size:12px;color:#57606a;margin:4px 6px}
.legend span{margin-right:14px;white-space:nowrap}.sw{display:inline-block;width:10px;height:10px;
margin-right:4px;vertical-align:middle;border-radius:2px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e1e4e8;padding:4px 8px;text-align:left;vertical-align:top}
th{color:#57606a;font-weight:600}span.ok{color:#2e7d32}span.failed,span.error{color:#c62828}
h2.sec{font-size:15px;margin:16px 0 6px}.muted{color:#57606a}
"""


# ---- the page -------------------------------------------------------------------------------


def _e(text: object) -> str:
    """Escaped for both text and attribute values: outside text never becomes markup."""
    return html.escape(str(text), quote=True)


def render_page(t: Timeline, title: str, *, now: datetime, refresh: timedelta | None = None) -> str:
    """The whole page as one HTML string. `refresh`: reload itself this often (a served page)."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
    ]
    if refresh is not None:
        head.append(f'<meta http-equiv="refresh" content="{max(1, int(refresh.total_seconds()))}">')
    head.append(f"<title>{_e(title)}</title><style>{_CSS}</style></head>")
    body = [
        "<body><header>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{_when(t.start)} to {_when(t.end)} · drawn at {_when(now)} · healer, read-only</p>",
        "</header><main>",
        '<div class="cards">',
        _watched_card(t.watched),
        _incident_card(t.watched),
        "</div>",
        '<section class="chart" aria-label="timeline">',
        timeline_svg(t),
        _legend(),
        "</section>",
        _actions_table(t.actions[-_LAST_ACTIONS:]),
        _incidents_table(t.incidents, t.end),
        "</main></body></html>",
    ]
    return "\n".join([*head, *body]) + "\n"


def state_of(w: Watched | None) -> tuple[str, str]:
    """(css class, words) for the deploy's state: held and paused first, they are why nothing acts."""
    if w is None:
        return "waiting", "no deploy seen yet"
    if w.held:
        return "held", "held: waiting for a person"
    if w.paused:
        return "paused", "paused"
    if w.open_incident is not None:
        return "incident", f"incident #{w.open_incident.id} open"
    if w.last_ok is None:
        return "waiting", "no cycle yet"
    return ("healthy", "healthy") if w.last_ok else ("failing", "failing")


def _watched_card(w: Watched | None) -> str:
    css, words = state_of(w)
    rows = [
        '<div class="card" id="deploy"><h2>Deploy being watched</h2>',
        f'<p><span class="state {css}" id="state">{_e(words)}</span></p>',
    ]
    if w is None:
        rows.append('<p class="phase" id="phase">no deploy seen yet</p></div>')
        return "\n".join(rows)
    subject = f" {_e(w.subject)}" if w.subject else ""
    how = " (by a rollback)" if w.via_rollback else ""
    rows += [
        f'<p><code id="commit">{_e(w.commit[:12])}</code>{subject}{_e(how)}</p>',
        f'<p class="phase" id="phase" aria-label="phase">{_e(w.phase)}</p>',
        f'<p class="muted">first seen {_when(w.first_seen)}</p>',
    ]
    if w.stable_tag:
        rows.append(f"<p>tagged <code>{_e(w.stable_tag)}</code></p>")
    if w.held:
        rows.append(f'<p id="held">held: {_e(w.held)}</p>')
    if w.paused:
        rows.append(f'<p id="paused">paused {_e(w.paused)}</p>')
    rows.append("</div>")
    return "\n".join(rows)


def _incident_card(w: Watched | None) -> str:
    inc = None if w is None else w.open_incident
    if w is None or inc is None:
        return '<div class="card" id="open-incident"><h2>Open incident</h2><p class="muted">none</p></div>'
    rows = [
        '<div class="card" id="open-incident"><h2>Open incident</h2>',
        f"<p><strong>#{inc.id}</strong> since {_when(inc.opened_at)}: {_e(inc.cause)}</p>",
    ]
    if w.likely_cause:
        rows.append(f'<p id="likely-cause">likely cause: <strong>{_e(w.likely_cause)}</strong></p>')
    if w.next_step:
        rows.append(f'<p id="next-step">next: {_e(w.next_step)}</p>')
    rows.append("</div>")
    return "\n".join(rows)


def _legend() -> str:
    items = (
        ("#2e9e44", "healthy cycle"), ("#d93025", "failing cycle"), ("rgba(217,48,37,.25)", "incident"),
        (_DEPLOY_COLOUR, "deploy"), ("#ef6c00", "repair"), ("#8e24aa", "rollback"), ("#616161", "pause"),
        ("#1565c0", "latency"), ("#9e9e9e", "baseline (dashed)"),
    )  # fmt: skip
    spans = "".join(f'<span><i class="sw" style="background:{c}"></i>{_e(n)}</span>' for c, n in items)
    return f'<div class="legend">{spans}</div>'


def _actions_table(actions: Sequence[ActionMark]) -> str:
    rows = [
        (_when(a.at), _e(a.kind), _e(a.name), _e(a.who), f'<span class="{_e(a.outcome)}">{_e(a.outcome)}</span>',
         _e(a.reason))
        for a in reversed(actions)
    ]  # fmt: skip
    return _table("Last actions", "last-actions", ("when", "what", "name", "who", "outcome", "why"), rows)


def _incidents_table(incidents: Sequence[IncidentBand], end: datetime) -> str:
    rows = [
        (str(i.id), _when(i.opened_at), "open" if i.resolved_at is None else _when(i.resolved_at),
         format_elapsed((i.resolved_at or end) - i.opened_at), _e(i.cause))
        for i in incidents
    ]  # fmt: skip
    return _table("Incidents", "incidents", ("#", "opened", "resolved", "lasted", "cause"), rows)


def _table(title: str, id_: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A titled table of cells already escaped, or a line saying the period had none."""
    if not rows:
        return f'<h2 class="sec">{title}</h2><p class="muted" id="{id_}">none in this period</p>'
    lines = [
        f'<h2 class="sec">{title}</h2><table id="{id_}">',
        "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
    ]
    lines += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    lines.append("</table>")
    return "\n".join(lines)


# ---- the timeline -----------------------------------------------------------------------------


class _Scale:
    """Time -> x in the SVG's user units."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, t: datetime) -> float:
        frac = min(max((t - self.start).total_seconds() / self.span, 0.0), 1.0)
        return round(_LEFT + frac * (_W - _LEFT - _RIGHT), 1)


def timeline_svg(t: Timeline) -> str:
    """The window as inline SVG: bands, then cycles, latency, markers on top, and the time axis."""
    scale = _Scale(t.start, t.end)
    label = (
        f"timeline {_when(t.start)} to {_when(t.end)}: {len(t.cycles)} cycles, "
        f"{sum(not c.ok for c in t.cycles)} failing, {len(t.incidents)} incidents"
    )
    parts = [f'<svg id="timeline" viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(label)}">']
    parts.append(f'<text x="4" y="{(_CYCLES[0] + _CYCLES[1]) / 2 + 4}" font-size="11" fill="#57606a">cycles</text>')
    parts.append(f'<text x="4" y="{(_LAT[0] + _LAT[1]) / 2 + 4}" font-size="11" fill="#57606a">latency</text>')
    parts += _bands(t.incidents, scale, t.end)
    parts += _cycle_bars(t, scale)
    parts += _latency(t, scale)
    parts += _markers(t, scale)
    parts += _axis(t.start, t.end, scale)
    if not t.cycles:
        parts.append(
            f'<text x="{_W / 2}" y="{(_CYCLES[0] + _CYCLES[1]) / 2 + 4}" text-anchor="middle" font-size="13" '
            'fill="#57606a" id="no-cycles">healer recorded no cycle in this period</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _bands(incidents: Iterable[IncidentBand], scale: _Scale, end: datetime) -> list[str]:
    """A red band over the whole chart for each incident, a solid stripe on top."""
    out = []
    for i in incidents:
        x0 = scale.x(i.opened_at)
        x1 = max(scale.x(i.resolved_at or end), x0 + 3)
        state = "open" if i.resolved_at is None else f"resolved {_when(i.resolved_at)}"
        label = f"incident #{i.id} ({i.cause}): opened {_when(i.opened_at)}, {state}"
        top, height = _CYCLES[0] - 6, _LAT[1] - _CYCLES[0] + 6
        out.append(
            f'<g class="incident-band" id="incident-{i.id}" aria-label="{_e(label)}"><title>{_e(label)}</title>'
            f'<rect x="{x0}" y="{top}" width="{round(x1 - x0, 1)}" height="{height}" fill="#d93025" '
            f'fill-opacity="0.16"/><rect x="{x0}" y="{top}" width="{round(x1 - x0, 1)}" height="5" '
            'fill="#d93025"/></g>'
        )
    return out


@dataclass(slots=True)
class _Run:
    """Consecutive cycles with the same verdict whose bars touch: drawn as one rect."""

    ok: bool
    x0: float
    x1: float
    first: CyclePoint
    last: CyclePoint
    count: int


def cycle_runs(cycles: Sequence[CyclePoint], scale: _Scale, end: datetime, max_gap: timedelta) -> list[_Run]:
    """The cycles as runs of bars: each bar reaches to the next cycle (the last to the end of the
    period), or, past `max_gap`, only _MAX_BAR units, so a time healer was not watching shows as
    a gap; a run ends where the verdict changes."""
    runs: list[_Run] = []
    for i, c in enumerate(cycles):
        x = scale.x(c.at)
        until = cycles[i + 1].at if i + 1 < len(cycles) else end
        x1 = max(scale.x(until), x + 1.0) if until - c.at <= max_gap else x + _MAX_BAR
        last = runs[-1] if runs else None
        if last is not None and last.ok == c.ok and x - last.x1 <= 0.01:
            last.x1, last.last, last.count = x1, c, last.count + 1
        else:
            runs.append(_Run(c.ok, x, x1, c, c, 1))
    return runs


def _cycle_bars(t: Timeline, scale: _Scale) -> list[str]:
    runs = cycle_runs(t.cycles, scale, t.end, t.max_gap)
    out = []
    # red on top: a failing cycle is never hidden under a healthy one at the same pixel
    for r in sorted(runs, key=lambda r: r.ok, reverse=True):
        words = "healthy" if r.ok else "failing"
        when = _when(r.first.at) if r.count == 1 else f"{_when(r.first.at)} to {_when(r.last.at)}"
        said = "" if r.ok else f": {r.last.summary}" + (f" (likely cause: {r.last.cause})" if r.last.cause else "")
        label = f"{r.count} {words} cycle{'' if r.count == 1 else 's'}, {when}{said}"
        colour = "#2e9e44" if r.ok else "#d93025"
        out.append(
            f'<rect class="cycle {"ok" if r.ok else "failed"}" x="{round(r.x0, 1)}" y="{_CYCLES[0]}" '
            f'width="{round(max(r.x1 - r.x0, 1.0), 1)}" height="{_CYCLES[1] - _CYCLES[0]}" fill="{colour}">'
            f"<title>{_e(label)}</title></rect>"
        )
    return out


def _latency(t: Timeline, scale: _Scale) -> list[str]:
    """One line per check that measures latency, and each deploy's baseline as a dashed line."""
    series: dict[str, dict[int, tuple[float, float]]] = {}
    for c in t.cycles:
        x = scale.x(c.at)
        for name, ms in c.latency_ms.items():
            col = series.setdefault(name, {})
            # one point per user unit, the slowest: a month of minutes stays a small polyline
            if int(x) not in col or ms > col[int(x)][1]:
                col[int(x)] = (x, ms)
    baselines = list(_baseline_segments(t, scale))
    top = max([ms for col in series.values() for _, ms in col.values()] + [b[3] for b in baselines] + [1.0])
    top *= 1.1

    def y(ms: float) -> float:
        return round(_LAT[1] - (ms / top) * (_LAT[1] - _LAT[0]), 1)

    out = [
        f'<line x1="{_LEFT}" y1="{_LAT[1]}" x2="{_W - _RIGHT}" y2="{_LAT[1]}" stroke="#d0d7de"/>',
        f'<text x="{_LEFT - 4}" y="{_LAT[0] + 4}" font-size="10" text-anchor="end" fill="#57606a">'
        f"{_e(_ms(top))}</text>",
        f'<text x="{_LEFT - 4}" y="{_LAT[1]}" font-size="10" text-anchor="end" fill="#57606a">0</text>',
    ]
    colours = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(series))}
    for name, x0, x1, ms in baselines:
        label = f"baseline of {name}: {_ms(ms)}"
        out.append(
            f'<line class="baseline" x1="{x0}" y1="{y(ms)}" x2="{x1}" y2="{y(ms)}" stroke="#9e9e9e" '
            f'stroke-dasharray="4 3" stroke-width="1.5"><title>{_e(label)}</title></line>'
        )
    for name, col in sorted(series.items()):
        pts = " ".join(f"{x},{y(ms)}" for x, ms in sorted(col.values()))
        out.append(
            f'<polyline class="latency" points="{pts}" fill="none" stroke="{colours[name]}" stroke-width="1.5">'
            f"<title>{_e(f'latency of {name}')}</title></polyline>"
        )
    return out


def _baseline_segments(t: Timeline, scale: _Scale) -> Iterable[tuple[str, float, float, float]]:
    """(check, x from, x to, ms): each deploy's baseline, from its start to the next deploy's."""
    ds = sorted(t.deploys, key=lambda d: d.first_seen)
    for i, d in enumerate(ds):
        until = ds[i + 1].first_seen if i + 1 < len(ds) else t.end
        x0, x1 = scale.x(max(d.first_seen, t.start)), scale.x(until)
        if x1 <= x0:
            continue
        for name, ms in d.baseline_ms.items():
            yield name, x0, x1, ms


@dataclass(frozen=True, slots=True)
class _Marker:
    at: datetime
    css: str
    colour: str
    text: str  # the short label drawn
    label: str  # the whole story, for the tooltip and aria-label


def markers(t: Timeline) -> list[_Marker]:
    """Deploys (a new commit seen), and every action that was done (a skipped one drew no line)."""
    out = [
        _Marker(
            d.first_seen, "deploy", _DEPLOY_COLOUR, ("↩ " if d.via_rollback else "") + d.commit[:7],
            f"deploy {d.commit[:12]} seen {_when(d.first_seen)}" + (" (by a rollback)" if d.via_rollback else ""),
        )
        for d in t.deploys
        if t.start <= d.first_seen <= t.end
    ]  # fmt: skip
    for a in t.actions:
        if a.outcome == Outcome.SKIPPED:
            continue
        css, colour = _MARKERS.get(a.kind, ("other", _OTHER_COLOUR))
        text = f"rollback → {a.name}" if a.kind == "rollback" else (a.name if a.kind == "repair" else a.kind)
        label = f"{a.kind} {a.name} by {a.who} at {_when(a.at)}: {a.outcome}; {a.reason}"
        out.append(_Marker(a.at, css, colour, text, label))
    return sorted(out, key=lambda m: m.at)


def _markers(t: Timeline, scale: _Scale) -> list[str]:
    """Each marker: a dashed line, its symbol, and a short label on the first of the label rows
    where it overlaps no other (near the right edge it reads leftwards)."""
    out = []
    taken: list[list[tuple[float, float]]] = [[] for _ in _LABEL_ROWS]
    for m in markers(t):
        x = scale.x(m.at)
        width = _CHAR_WIDTH * len(m.text) + 6
        leftwards = x + 3 + width > _W
        span = (x - 3 - width, x) if leftwards else (x, x + 3 + width)
        row = next(
            (i for i, spans in enumerate(taken) if all(span[1] <= a or span[0] >= b for a, b in spans)),
            len(_LABEL_ROWS) - 1,
        )
        taken[row].append(span)
        ly = _LABEL_ROWS[row]
        anchor = f'x="{x - 3}" text-anchor="end"' if leftwards else f'x="{x + 3}"'
        out.append(
            f'<g class="marker {m.css}" aria-label="{_e(m.label)}"><title>{_e(m.label)}</title>'
            f'<line x1="{x}" y1="{ly + 3}" x2="{x}" y2="{_LAT[1]}" stroke="{m.colour}" stroke-width="1.2" '
            f'stroke-dasharray="3 2"/>{_symbol(m.css, x, m.colour)}'
            f'<text {anchor} y="{ly}" font-size="11" fill="{m.colour}">{_e(m.text)}</text></g>'
        )
    return out


def _symbol(css: str, x: float, colour: str) -> str:
    """A shape per kind, so markers read without colour: ▲ deploy, ● repair, ◆ rollback, ■ other."""
    y = _MARK_Y
    if css == "deploy":
        return f'<path d="M{x} {y - 6}L{x + 6} {y + 5}L{x - 6} {y + 5}Z" fill="{colour}"/>'
    if css == "repair":
        return f'<circle cx="{x}" cy="{y}" r="5.5" fill="{colour}"/>'
    if css == "rollback":
        return f'<path d="M{x} {y - 8}L{x + 7} {y}L{x} {y + 8}L{x - 7} {y}Z" fill="{colour}"/>'
    return f'<rect x="{x - 5}" y="{y - 5}" width="10" height="10" fill="{colour}"/>'


def _axis(start: datetime, end: datetime, scale: _Scale) -> list[str]:
    """Ticks at round times, at most about eight of them."""
    span = end - start
    step = next((s for s in _TICKS if span / s <= 8), _TICKS[-1])
    fmt = "%H:%M:%S" if step < timedelta(minutes=1) else ("%H:%M" if step < timedelta(days=1) else "%m-%d")
    if step < timedelta(days=1) and span >= timedelta(days=1):
        fmt = "%m-%d %H:%M"
    first = _EPOCH + ((start - _EPOCH) // step + 1) * step
    out = [f'<line x1="{_LEFT}" y1="{_AXIS_Y - 12}" x2="{_W - _RIGHT}" y2="{_AXIS_Y - 12}" stroke="#8c959f"/>']
    tick = first
    while tick <= end:
        x = scale.x(tick)
        out.append(
            f'<line x1="{x}" y1="{_AXIS_Y - 15}" x2="{x}" y2="{_AXIS_Y - 9}" stroke="#8c959f"/>'
            f'<text x="{x}" y="{_AXIS_Y + 2}" font-size="10" text-anchor="middle" fill="#57606a">'
            f"{tick.astimezone(UTC).strftime(fmt)}</text>"
        )
        tick += step
    out.append(f'<text x="{_W - _RIGHT}" y="{_H - 2}" font-size="10" text-anchor="end" fill="#57606a">UTC</text>')
    return out


# ---- words ----------------------------------------------------------------------------------


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(ms: float) -> str:
    return f"{ms / 1000:.1f}s" if ms >= 1000 else f"{ms:.0f}ms"
