"""The command line: click commands, exit codes and rendering; no decisions here (I/O).

Exit codes: 0 done/healthy, 1 unhealthy/not fixed, 2 a usage or config error (one line per
problem on stderr; nothing is started or changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from healer import __version__, redact
from healer.clock import SystemClock
from healer.config import Config, config_path, format_duration, format_elapsed, load_config, parse_duration
from healer.errors import GitError, HealerError, UsageError
from healer.judge import judge
from healer.ladder import Attribution
from healer.model import CheckResult, Conclusion, Outcome, Verdict, Who
from healer.operations import Actor
from healer.operations import when as _when
from healer.views import history_rows, reference_data, status_data

if TYPE_CHECKING:
    from healer.checks.process import Match as ProcessMatch

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _console(stderr: bool = False) -> Console:
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if tty else 120, highlight=False, soft_wrap=not tty)


def _fail(err: HealerError) -> NoReturn:
    for line in err.lines():
        click.echo(f"healer: {line}" if not line.startswith("healer") else line, err=True)
    sys.exit(err.exit_code)


def handles_errors(fn: F) -> F:
    """A HealerError prints one line per problem on stderr and exits 2; anything else is a
    bug and keeps its traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HealerError as e:
            _fail(e)

    return wrapper  # type: ignore[return-value]


def _config(ctx: click.Context) -> Config:
    config = load_config(config_path(ctx.obj.get("config")))
    redact.configure(config)  # every command: nothing it prints, stores or sends holds a secret
    return config


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _duration(value: str, flag: str) -> timedelta:
    try:
        span = parse_duration(value)
    except Exception:  # pydantic's custom error: we want our own line
        msg = f'{flag}: expected a duration like "30m", "24h" or "7d" (at most 10 years), got "{value}"'
        raise UsageError(msg) from None
    if span <= timedelta(0):
        raise UsageError(f'{flag}: expected a duration above zero, got "{value}"')
    return span


def _ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    d = now - t
    if d < timedelta(0):
        return "in " + format_elapsed(timedelta(seconds=round(-d.total_seconds())))
    secs = round(d.total_seconds())
    return "just now" if secs < 1 else f"{format_elapsed(timedelta(seconds=secs))} ago"


def _confirm(what: str, yes: bool) -> None:
    """Destructive commands ask on a terminal unless --yes; with no terminal they need --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: refusing without --yes (no terminal to confirm on)")
    if not click.confirm(f"{what}. Go ahead?", default=False):
        raise UsageError(f"{what}: not confirmed; nothing done")


# ---- the group ---------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config", metavar="PATH", type=click.Path(dir_okay=False),
    help="healer.toml to use (default: $HEALER_CONFIG, else ./healer.toml).",
)  # fmt: skip
@click.version_option(__version__, prog_name="healer")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """healer: a self-healing post-launch watchdog."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


# ---- run ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--observe", is_flag=True, help="Decide and record everything, act on nothing.")
@click.pass_context
@handles_errors
def run(ctx: click.Context, observe: bool) -> None:
    """Run the watchdog loop in the foreground (for a process manager)."""
    from healer.loop import serve

    config = _config(ctx)
    _setup_logging(config)
    # Not asyncio.run(): it joins the worker threads at the end, and a chat send stuck in one
    # would hold the stop for its whole timeout. Everything is recorded and the store closed
    # when serve() returns; an undelivered alert is still in the outbox for the next start.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve(config, observe=observe))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _setup_logging(config: Config) -> None:
    from healer.logging import known_secrets, setup_logging

    setup_logging("info", known_secrets(config))


# ---- check ---------------------------------------------------------------------------------------


async def _check_once(config: Config) -> tuple[Verdict, bool, Attribution | None]:
    """One cycle, judged against the current deploy's baseline when there is one, and the
    likely cause of a failure, as the loop would name it."""
    from healer import gitrepo
    from healer.checks import probe_context, run_checks
    from healer.ladder import attribute
    from healer.model import Deploy
    from healer.store import Store

    commit: str | None = None
    with contextlib.suppress(GitError):  # an unreadable repo: judge against the last deploy seen
        commit = gitrepo.head_commit(config.app.repo) if config.app.repo else None
    now = SystemClock().now()
    deploy = Deploy(id=0, commit=commit or "unversioned", first_seen=now)  # a deploy healer has not seen
    previous: bool | None = None
    if config.state_db.exists():
        with Store(config.state_db) as store:
            d = store.current_deploy()
            if d is not None and (commit is None or d.commit == commit):
                deploy = d
                before = store.previous_deploy(d.id)
                previous = None if before is None else before.last_ok
            elif d is not None:
                previous = d.last_ok  # HEAD moved since healer last looked: d is the release before
    async with probe_context(config) as ctx:
        results = await run_checks(ctx)
    verdict = judge(results, deploy.baseline, config.checks, SystemClock().now())
    att = None if verdict.ok else attribute(verdict, deploy, config, previous_healthy=previous)
    return verdict, deploy.baseline is not None, att


def _results_table(results: tuple[CheckResult, ...], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("check", "type", "result", "latency", "measured", "problem"):
        table.add_column(col, overflow="fold")
    for r in results:
        lat = "-" if r.latency is None else f"{r.latency.total_seconds() * 1000:.0f}ms"
        vals = ", ".join(f"{k}={_num(v)}" for k, v in r.values.items() if k != "latency_ms")
        problem = "" if r.ok else (", ".join(r.symptoms) + (f": {r.error}" if r.error else ""))
        table.add_row(r.name, r.type, "[green]ok[/]" if r.ok else "[red]FAIL[/]", lat, vals, problem)
    return table


def _num(v: float) -> str:
    """A measured value for a table: 12, 4.3, and a small ratio still readable (0.005, not 0.0)."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.1f}" if abs(v) >= 1 else f"{v:.3g}"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@handles_errors
def check(ctx: click.Context, as_json: bool) -> None:
    """Run one cycle now, judged against the baseline; changes nothing. Exit 0 healthy, 1 not."""
    config = _config(ctx)
    verdict, has_baseline, att = _run(_check_once(config))
    matches, warnings = _process_matches(config)
    if as_json:
        results = [r.to_json() for r in verdict.results]
        for r in results:
            if r["name"] in matches:
                r["matched"] = [m.to_json() for m in matches[r["name"]]]
        click.echo(json.dumps({
            "ok": verdict.ok, "at": verdict.at.isoformat(), "baseline": has_baseline,
            "cause": None if att is None else att.label, "cause_why": None if att is None else att.why,
            "symptoms": list(verdict.symptoms), "results": results, "warnings": warnings,
        }, indent=2))  # fmt: skip
    else:
        con = _console()
        base = "against the baseline" if has_baseline else "no baseline yet"
        con.print(_results_table(verdict.results, f"{config.app.name}: {verdict.summary()} ({base})"))
        for name, found in matches.items():
            for m in found:
                con.print(f"{name} matched: pid {m.pid} (group {m.pgid}): {m.cmdline}", markup=False, highlight=False)
        if att is not None:
            con.print(f"likely cause: {att.label} ({att.why})", markup=False, highlight=False)
        for w in warnings:
            con.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
    sys.exit(0 if verdict.ok else 1)


def _process_matches(config: Config) -> tuple[dict[str, list[ProcessMatch]], list[str]]:
    """What each process check finds (by check name), and a warning for each match string
    that finds more than one process group, `[process] match` included (a restart acts on
    it). Blocking."""
    from healer.checks import process as pc
    from healer.checks.process import ProcessCheck

    matches: dict[str, list[ProcessMatch]] = {}
    warnings: dict[str, str | None] = {}
    for i, c in enumerate(config.checks):
        if not isinstance(c, ProcessCheck):
            continue
        match, pidfile, name = pc.target(c, config)
        matches[c.name] = found = pc.matched(match, pidfile, name)
        if match and pidfile is None:
            where = f"checks[{i}] ({c.name}) match {match!r}" if c.match else f"[process] match {match!r}"
            warnings.setdefault(where, pc.split_groups(where, found))
    p = config.process
    if p is not None and p.match and p.pidfile is None:
        where = f"[process] match {p.match!r}"
        if where not in warnings:
            warnings[where] = pc.split_groups(where, pc.matched(p.match, None, None))
    return matches, [w for w in warnings.values() if w]


# ---- status --------------------------------------------------------------------------------------


def _print_fleet(data: dict[str, Any]) -> None:
    """`healer status --fleet`: who leads since when, then one line per host."""
    con = _console()
    now = datetime.fromisoformat(data["now"])
    lead = data["leader"]
    if lead is None:
        head = "nobody has led yet"
    else:
        since = datetime.fromisoformat(lead["since"])
        state = "leads" if lead["live"] else "led (lease expired, a takeover is due)"
        head = f"{lead['host']} {state} since {_when(since)} ({_ago(since, now)}), epoch {lead['epoch']}"
    con.print(f"[bold]{data['app']}[/]  fleet of {len(data['hosts'])}: {head}", highlight=False)
    table = Table(box=None, pad_edge=False)
    for column in ("host", "release", "last cycle", "health", "seen"):
        table.add_column(column)
    for h in data["hosts"]:
        health = {True: "healthy", False: "[red]FAILING[/]", None: "no cycle yet"}[h["healthy"]]
        last = None if h["last_cycle_at"] is None else datetime.fromisoformat(h["last_cycle_at"])
        table.add_row(
            h["host"] + (" (leader)" if h["leads"] else ""),
            (h["release"] or "?")[:12],
            _ago(last, now),
            health,
            _ago(datetime.fromisoformat(h["seen_at"]), now),
        )
    if data["hosts"]:
        con.print(table)
    else:
        con.print("no host has reported yet: start `healer run` on each")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--fleet", "of_fleet", is_flag=True, help="Every host of the fleet, and who leads ([fleet]).")
@click.pass_context
@handles_errors
def status(ctx: click.Context, as_json: bool, of_fleet: bool) -> None:
    """The deploy being watched, its phase, next check, baseline, failures, incident, actions."""
    config = _config(ctx)
    if of_fleet:
        from healer.fleet import fleet_status

        fleet = _run(fleet_status(config))
        click.echo(json.dumps(fleet, indent=2)) if as_json else _print_fleet(fleet)
        return
    data = status_data(config)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    con = _console()
    now = SystemClock().now()
    loop = data["loop"]
    alive = (
        "[green]alive[/]"
        if loop.get("alive")
        else ("[yellow]running, late[/]" if loop["running"] else "[red]not running[/]")
    )
    con.print(f"[bold]{data['app']}[/]  loop: {alive}" + (f" (PID {loop['pid']})" if loop.get("pid") else ""))
    d = data.get("deploy")
    if d is None:
        con.print("no deploy seen yet: start `healer run`")
        return
    con.print(
        f"deploy   {d['commit'][:12]} first seen {_when(datetime.fromisoformat(d['first_seen']))} ({d['age']} ago)"
    )
    con.print(f"phase    {d['phase']}")
    con.print(f"next     {_ago(datetime.fromisoformat(data['next_check']), now)}")
    lc = data.get("last_cycle")
    if lc:
        con.print(f"last     {'healthy' if lc['ok'] else 'FAILING'} {_ago(datetime.fromisoformat(lc['at']), now)}")
        if not lc["ok"]:
            con.print(f"         {lc['summary']}", markup=False, highlight=False)
            if lc.get("cause"):
                con.print(f"cause    likely {lc['cause']}", markup=False, highlight=False)
        if lc.get("compared"):
            con.print(f"vs       {_compared_text(lc['compared'])}", markup=False, highlight=False)
        if lc.get("next_step"):
            con.print(f"then     {lc['next_step']}", markup=False, highlight=False)
    if data.get("deploy_begun_until"):
        until = datetime.fromisoformat(data["deploy_begun_until"])
        if until > now:
            con.print(f"[yellow]deploy in progress[/] (healer deploy begin) until {_when(until)}: acting on nothing")
    con.print(f"failures {data['consecutive_failures']} in a row (rollback after {data['rollback_after']})")
    b = data.get("baseline")
    con.print(
        "baseline "
        + (
            "none yet (taken at the first healthy cycle)"
            if not b
            else f"taken {_when(datetime.fromisoformat(b['taken_at']))}"
        )
    )
    if data.get("open_incident"):
        i = data["open_incident"]
        con.print(f"incident #{i['id']} open since {_when(datetime.fromisoformat(i['opened_at']))}: {i['cause']}")
        if data.get("ack"):
            a = data["ack"]
            note = f": {a['note']}" if a["note"] else ""
            con.print(f"acked    by {a['who']} {_ago(datetime.fromisoformat(a['at']), now)}{note}", markup=False)
    if data.get("pause"):
        until = datetime.fromisoformat(data["pause"]["until"])
        con.print(f"[yellow]paused[/] until {_when(until)} ({_ago(until, now)}): {data['pause']['reason']}")
    if d.get("held"):
        con.print(f"[red]held[/]: {d['held']}")
    if d.get("known_bad"):
        con.print(f"[red]known-bad commit[/]: {d['known_bad']}")
    if d.get("via_rollback"):
        con.print("this deploy is the result of an automatic rollback")
    for a in data.get("last_actions", []):
        con.print(f"action   {a['at'][:19]} {a['kind']} {a['name']} by {a['who']}: {a['outcome']} {a['detail'][:80]}")


def _compared_text(compared: list[dict[str, str]]) -> str:
    """ "stable-1: api latency pass, errors pass; web memory inconclusive (3 reference values,
    need 5)": a cycle's comparisons with the release before, per check (a failure's evidence is
    in the summary and `healer history`)."""
    by_check: dict[str, list[str]] = {}
    for c in compared:
        why = f" ({c['why']})" if c["conclusion"] == Conclusion.INCONCLUSIVE else ""
        by_check.setdefault(c["check"], []).append(f"{c['metric']} {c['conclusion']}{why}")
    against = ", ".join(dict.fromkeys(c["against"] for c in compared))
    return f"{against}: " + "; ".join(f"{name} {', '.join(parts)}" for name, parts in by_check.items())


# ---- baseline ------------------------------------------------------------------------------------


@cli.command()
@click.option("--reset", is_flag=True, help="Forget the baseline; the next healthy cycle sets a new one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def baseline(ctx: click.Context, reset: bool, as_json: bool) -> None:
    """Show, or forget, the baseline of the current deploy (and the release before it, which
    the deploy is judged against too)."""
    from healer.store import Store

    config = _config(ctx)
    if not config.state_db.exists():
        raise UsageError(f"{config.state_db}: no state yet; `healer run` takes the baseline at the first healthy cycle")
    with Store(config.state_db) as store:
        d = store.current_deploy()
        if d is None:
            raise UsageError("no deploy seen yet; `healer run` takes the baseline at the first healthy cycle")
        if reset:
            store.reset_baseline(d.id, Who.PERSON, SystemClock().now())
            click.echo(f"baseline of {d.commit[:12]} forgotten; the next healthy cycle sets a new one")
            return
        ref = reference_data(config, store, d)
    if as_json:
        click.echo(json.dumps({
            "commit": d.commit,
            "taken_at": None if d.baseline is None else d.baseline.taken_at.isoformat(),
            "metrics": {} if d.baseline is None else {k: dict(v) for k, v in d.baseline.metrics.items()},
            "reference": ref,
        }, indent=2))  # fmt: skip
        return
    con = _console()
    if d.baseline is None:
        click.echo(f"{d.commit[:12]}: no baseline yet (taken at the first fully healthy cycle)")
    else:
        table = Table(title=f"baseline of {d.commit[:12]}, taken {_when(d.baseline.taken_at)}", title_justify="left")
        table.add_column("check")
        table.add_column("measured")
        for name, vals in d.baseline.metrics.items():
            table.add_row(name, ", ".join(f"{k}={_num(v)}" for k, v in vals.items()))
        con.print(table)
    if ref is None:
        click.echo("release before: none with healthy cycles yet (this deploy is judged against its own baseline only)")
        return
    title = f"release before: {ref['release']}, {ref['cycles']} healthy cycles pooled"
    if ref["checks"]:
        table = Table(title=title, title_justify="left")
        for col in ("check", "samples", "median", "p90", "failed requests"):
            table.add_column(col)
        for name, c in ref["checks"].items():
            median, p90 = c["median_ms"], c["p90_ms"]
            table.add_row(
                name, str(c["samples"]), "" if median is None else f"{_num(median)} ms",
                "" if p90 is None else f"{_num(p90)} ms", f"{c['failed']} of {c['requests']}",
            )  # fmt: skip
        con.print(table)
    if ref["values"]:
        # one number per cycle (a Prometheus query): the release before's cycles and their median,
        # which the deploy's values are judged against, beside the deploy's own first healthy one
        table = Table(title=None if ref["checks"] else title, title_justify="left")
        for col in ("check", "measures", "cycles", "median", f"baseline of {d.commit[:12]}"):
            table.add_column(col)
        for name, c in ref["values"].items():
            base = c["baseline"]
            table.add_row(name, c["label"], str(c["cycles"]), _num(c["median"]), "" if base is None else _num(base))
        con.print(table)
    for name, m in ref["memory"].items():
        click.echo(f"{name}: median RSS {_num(m['median_mb'])} MB over {m['cycles']} cycles")
    for line in ref["inconclusive"]:
        click.echo(line)


# ---- history -------------------------------------------------------------------------------------


@cli.command()
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 24h, 7d ...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def history(ctx: click.Context, since: str, as_json: bool) -> None:
    """Checks, incidents, repairs, rollbacks and alerts."""
    span = _duration(since, "--since")
    config = _config(ctx)
    rows = history_rows(config, span)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"nothing recorded in the last {since}")
        return
    table = Table(title=f"{config.app.name}: the last {since}", title_justify="left")
    for col in ("when", "what", "who", "outcome", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        outcome = r.get("outcome") or ("ok" if r.get("ok") else ("FAIL" if r.get("ok") is False else ""))
        if r["type"] == "check":
            cause = f" — likely cause: {r['cause']}" if r.get("cause") and not r.get("ok") else ""
            seen = f" ({r['detail']})" if r.get("detail") else ""
            then = f"; then: {r['next']}" if r.get("next") and not r.get("ok") else ""
            woken = f"woken: {r['woken']}; " if r.get("woken") else ""
            detail = woken + r.get("what", "") + seen + cause + then
        else:
            detail = " ".join(x for x in (r.get("what", ""), r.get("why", ""), r.get("detail", "")) if x)
        table.add_row(r["at"][:19].replace("T", " "), r["type"], r.get("who", ""), outcome, detail)
    _console().print(table)


# ---- repair --------------------------------------------------------------------------------------


@cli.command()
@click.argument("kind")
@click.option("--dry-run", is_flag=True, help="Print exactly what would be done; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", default="run by hand", show_default=True, help="Recorded with the action.")
@click.pass_context
@handles_errors
def repair(ctx: click.Context, kind: str, dry_run: bool, yes: bool, reason: str) -> None:
    """Run one playbook by hand: process-restart, redis-flush, connection-reset, rate-limit-clear
    or one of yours. Exit 0 fixed, 1 not, 2 unknown kind."""
    from healer import repair as rp

    config = _config(ctx)
    playbooks = rp.known_playbooks(config)
    if kind not in playbooks:
        raise UsageError(f"unknown repair kind {kind!r}; expected one of: {', '.join(playbooks)}")
    plan = rp.describe(playbooks[kind], config)
    if dry_run:
        click.echo(plan)
        click.echo("dry run: nothing was changed")
        return
    if not yes:
        click.echo(plan)
    _confirm(f"run {kind}", yes)
    sys.exit(_run(_repair(config, kind, reason)))


async def _repair(config: Config, kind: str, reason: str) -> int:
    from healer import operations

    result = await operations.repair(config, _actor(), kind, reason)
    click.echo(f"{kind}: {'fixed' if result.ok else 'NOT fixed'}: {result.detail}")
    return 0 if result.ok else 1


# ---- rollback ------------------------------------------------------------------------------------


@cli.command()
@click.option("--reason", help="Why (required to roll back): recorded and announced.")
@click.option("--to", "to", metavar="REF", help="A tag or commit (default: the newest stable tag).")
@click.option("--list", "list_", is_flag=True, help="List the stable tags it may go to, and why others are hidden.")
@click.option("--dry-run", is_flag=True, help="Print exactly what would be done; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force", is_flag=True, help="Roll back a dirty work tree (changes are stashed) or to a known-bad commit."
)
@click.option("--mark-bad", is_flag=True, help="Remember the commit checked out as bad: never a rollback target again.")
@click.pass_context
@handles_errors
def rollback(
    ctx: click.Context,
    reason: str | None,
    to: str | None,
    list_: bool,
    dry_run: bool,
    yes: bool,
    force: bool,
    mark_bad: bool,
) -> None:
    """Roll back by hand to the last stable tag (or REF). Exit 0 done and healthy, 1 not."""
    from healer import rollback as rb
    from healer.store import Store

    config = _config(ctx)
    if config.app.repo is None:
        raise UsageError(f"{config.path}: app.repo: expected the git work tree of the app to roll back")
    # --list and --dry-run change nothing, not even by creating the state database
    read_only = (list_ or dry_run) and not config.state_db.exists()
    with Store(Path(":memory:")) if read_only else Store(config.state_db) as store:
        if list_:
            tags, hidden = rb.listing(config, store)
            pattern = config.app.stable_tags
            if tags:
                click.echo(f"stable tags matching {pattern!r} a rollback may go to, newest first:")
                click.echo("tag\tcommit\ttagged (UTC)")
            else:
                click.echo(f"no stable tag matching {pattern!r} a rollback may go to")
            for t in tags:
                click.echo(f"{t.name}\t{t.commit[:12]}\t{t.date:%Y-%m-%d %H:%M}")
            for line in hidden:
                click.echo(f"hidden: {line}")
            return
        if not reason or not reason.strip():
            if not dry_run:
                raise UsageError("--reason: expected a few words saying why (it is recorded and announced)")
            reason = "dry run"
        exit_code = _run(_rollback(config, store, reason, to, dry_run=dry_run, yes=yes, force=force, mark_bad=mark_bad))
    sys.exit(exit_code)


async def _rollback(
    config: Config, store: Any, reason: str, to: str | None, *, dry_run: bool, yes: bool, force: bool, mark_bad: bool
) -> int:
    from healer import operations
    from healer import rollback as rb
    from healer.checks import probe_context

    clock = SystemClock()
    async with probe_context(config) as pctx:
        kw: dict[str, Any] = dict(
            config=config, ctx=pctx, store=store, clock=clock, who=Who.PERSON, reason=reason, to=to, force=force,
            mark_bad=mark_bad,
        )  # fmt: skip
        if dry_run or not yes:
            # the plan is shown for --dry-run and for the confirmation; with --yes the rollback
            # plans (and refuses) under its own lock, so a second plan here is only lost time
            plan = await rb.run_rollback(**kw, dry_run=True)
            click.echo(plan.detail)
            fleet = config.fleet is not None and not plan.refused
            if fleet:
                click.echo(
                    f"fleet: every host on {plan.from_commit[:12]} follows to the same commit (the fleet's rollback)"
                )
            if dry_run or plan.refused:
                return 0 if plan.ok else 1
            what = f"the fleet from {plan.from_commit[:12]}" if fleet else plan.from_commit[:12]
            await asyncio.to_thread(_confirm, f"roll back {what} -> {plan.to_ref}", yes)

        result = await operations.rollback(config, store, pctx, _actor(), reason, to, force=force, mark_bad=mark_bad)
    click.echo(result.detail)
    return 0 if result.ok else 1


# ---- alert test ----------------------------------------------------------------------------------


@cli.group()
def alert() -> None:
    """Alert channels."""


@alert.command("test")
@click.option("--channel", metavar="NAME", help="Only this channel: log, slack or telegram.")
@click.pass_context
@handles_errors
def alert_test(ctx: click.Context, channel: str | None) -> None:
    """Send a test alert through each configured channel. Exit 0 when all were delivered."""
    from healer.alerts.shell import send_test
    from healer.logging import known_secrets, setup_logging

    config = _config(ctx)
    setup_logging("warning", known_secrets(config))
    results = _run(send_test(config, channel))
    for name, (ok, why) in results.items():
        click.echo(f"{name}: {'delivered' if ok else 'FAILED'}" + ("" if ok else f" ({why})"))
    sys.exit(0 if all(ok for ok, _ in results.values()) else 1)


# ---- pause / resume -----------------------------------------------------------------------------


@cli.command()
@click.option("--reason", required=True, help="Why: shown in status and announced in chat.")
@click.option("--for", "for_", default="1h", show_default=True, help="Expires by itself after this long.")
@click.pass_context
@handles_errors
def pause(ctx: click.Context, reason: str, for_: str) -> None:
    """A person is working on the app: keep checking, repair and roll back nothing."""
    from healer import operations

    span = _duration(for_, "--for")
    if not reason.strip():
        raise UsageError("--reason: expected a few words saying why")
    config = _config(ctx)
    until = operations.pause(config, _actor(), span, reason)
    click.echo(f"paused until {_when(until)}: checks go on, repairs and rollbacks wait (`healer resume` ends it)")


@cli.command()
@click.pass_context
@handles_errors
def resume(ctx: click.Context) -> None:
    """End a pause now."""
    from healer import operations

    ended = operations.resume(_config(ctx), _actor())
    click.echo("resumed: repairs and rollbacks are armed again" if ended else "not paused")


@cli.command()
@click.option("--note", default="", help="What you are doing about it: recorded and announced.")
@click.option("--incident", type=int, default=None, help="The incident (default: the open one).")
@click.pass_context
@handles_errors
def ack(ctx: click.Context, note: str, incident: int | None) -> None:
    """Acknowledge the open incident: its reminders stop until it resolves, worsens (a rollback,
    a hold) or [chatops] ack_expires passes. Exit 0 acknowledged, 1 not (none open, or already)."""
    from healer import operations

    result = operations.ack(_config(ctx), _actor(), note, incident)
    click.echo(result.reply)
    sys.exit(0 if result.done else 1)


@cli.group()
def deploy() -> None:
    """Tell healer when a deploy script runs: `healer deploy begin` ... `healer deploy end`."""


@deploy.command("begin")
@click.option("--for", "for_", default="30m", show_default=True, help="At most this long, if `end` never comes.")
@click.option("--reason", default="deploy script", show_default=True, help="Shown in status and history.")
@click.pass_context
@handles_errors
def deploy_begin(ctx: click.Context, for_: str, reason: str) -> None:
    """A deploy is starting: keep checking and recording, repair and roll back nothing until
    `healer deploy end` (or the --for expiry): the app may be stopped or migrating on purpose."""
    from healer.loop import DEPLOY_BEGUN_KEY
    from healer.store import Store

    span = _duration(for_, "--for")
    config = _config(ctx)
    now = SystemClock().now()
    until = now + span
    with Store(config.state_db) as store:
        store.set_meta(**{DEPLOY_BEGUN_KEY: until.isoformat()})
        d = store.current_deploy()
        store.start_action(
            kind="deploy.begin", name=format_duration(span), who=Who.PERSON, reason=reason, now=now,
            deploy_id=None if d is None else d.id, outcome=Outcome.OK, detail=f"until {until.isoformat()}",
        )  # fmt: skip
    click.echo(f"deploy in progress until {_when(until)}: healer records but acts on nothing (`healer deploy end`)")


@deploy.command("end")
@click.pass_context
@handles_errors
def deploy_end(ctx: click.Context) -> None:
    """The deploy is done: judge the release at HEAD from its next cycle on, with no grace."""
    from healer import gitrepo
    from healer.loop import DEPLOY_BEGUN_KEY, DEPLOY_ENDED_KEY
    from healer.store import Store

    config = _config(ctx)
    commit = gitrepo.head_commit(config.app.repo) if config.app.repo else None
    now = SystemClock().now()
    with Store(config.state_db) as store:
        store.set_meta(**{DEPLOY_BEGUN_KEY: None, DEPLOY_ENDED_KEY: commit})
        d = store.current_deploy()
        store.start_action(
            kind="deploy.end", name=(commit or "unversioned")[:12], who=Who.PERSON, reason="healer deploy end",
            now=now, deploy_id=None if d is None else d.id, outcome=Outcome.OK,
        )  # fmt: skip
    at = f" {commit[:12]}" if commit else ""
    click.echo(f"deploy done: healer judges{at} from its next cycle on")


def _actor() -> Actor:
    """The person at the terminal: recorded as `person`, announced by login name."""
    name = os.environ.get("SUDO_USER") or os.environ.get("USER") or os.environ.get("LOGNAME") or "a person"
    return Actor(Who.PERSON, name)


# ---- demo ----------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--keep", is_flag=True, help="Keep the demo's directory: healer.toml, the app's repo, the state, the logs."
)
def demo(keep: bool) -> None:
    """The whole story on this machine, no setup: a sample app is deployed, broken, repaired, rolled back."""
    from healer.demo.story import run_demo

    sys.exit(run_demo(keep=keep))


# ---- report --------------------------------------------------------------------------------------


@cli.command()
@click.option("--since", default="24h", show_default=True, help="How far back: 24h, 7d, 30d ...")
@click.option("--sla", type=float, default=None, help="SLA target in percent (default: [report] sla_target, 99.9).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the picture of the period to this file: one self-contained HTML page (the timeline `/` shows).",
)
@click.pass_context
@handles_errors
def report(ctx: click.Context, since: str, sla: float | None, as_json: bool, html_file: Path | None) -> None:
    """Uptime, incidents, repairs, rollbacks, SLA and mean time to repair."""
    from healer import report as reports
    from healer.store import Store

    span = _duration(since, "--since")
    config = _config(ctx)
    target = config.report.sla_target if sla is None else sla
    if not 0 < target <= 100:
        raise UsageError(f"--sla: expected a percentage above 0 and at most 100, got {sla}")
    now = SystemClock().now()
    if config.state_db.exists():
        with Store(config.state_db) as store:
            rep = reports.load_report(store, start=now - span, now=now, sla_target=target)
    else:  # nothing recorded yet: an empty report ("no data"), and no file created
        rep = reports.build_report([], [], [], start=now - span, now=now, sla_target=target)
    title = f"{config.app.name}: the last {since}"
    if html_file is not None:
        _write_page(config, html_file, title, now - span, now)
    if as_json:
        click.echo(json.dumps(reports.to_json(rep), indent=2))
        return
    _console().print(reports.render(rep, title))


def _write_page(config: Config, path: Path, title: str, start: datetime, now: datetime) -> None:
    """`report --html`: the page for [start, now], written whole, said on stderr (stdout keeps the report)."""
    from healer.page import render_page
    from healer.views import timeline_data

    page = render_page(timeline_data(config, start, now), title, now=now)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--html: cannot write {path}: {e.strerror or e}") from None
    click.echo(f"healer: wrote the picture of {title} to {path}", err=True)


def main() -> None:
    """The console script: a usage error is one line on stderr and exit 2, like a config error."""
    try:
        code = cli.main(prog_name="healer", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        e.show()  # `healer` or `healer alert` alone: the help is the answer
        sys.exit(2)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "healer"
        click.echo(f"{where}: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except (click.Abort, KeyboardInterrupt):
        click.echo("healer: interrupted; nothing more was done", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
