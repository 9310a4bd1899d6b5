"""End-to-end fleet judgement: two or three real `healer run` processes, each watching its own copy of the
sample app (its own clone of the repository, its own port, `[process]` manager "command"),
sharing one real PostgreSQL (I/O). A bad deploy on every host is rolled back once, by the leader, and followed;
one sick host has its own app restarted by its own healer, and the fleet is not rolled back; a person's
rollback on one host is the fleet's. Alerts go to one loopback Telegram: each event once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from chatfakes import ChatFake
from helpers import HEALER, clone, commit, git, healer, make_repo, stop_healer
from prometheus_client.parser import text_string_to_metric_families
from services import PostgresServer, free_port, wait_for_port, wait_until

from healer.demo import sampleapp

pytestmark = pytest.mark.e2e

LEASE = "4s"
WAIT = 120.0  # generous: never a wall-clock assertion, only "eventually"


class Host:
    """One server: its clone of the app's repository, the sample app on its own port, and its healer."""

    def __init__(
        self, root: Path, name: str, origin: Path, telegram: str, every: str, extra: str = "", *, server: bool = False
    ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.repo = clone(origin, self.dir / "app")
        self.port = free_port()
        self.argv = sampleapp.serve_argv(self.repo, self.port)
        self.match = sampleapp.match_text(self.repo)
        self.apps: list[subprocess.Popen[bytes]] = []
        self.healer: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "healer.toml"
        self.config.write_text(f"""\
state_dir = "state"
[state]
dsn_env = "HEALER_STATE_DSN"
[fleet]
host = "{name}"
lease = "{LEASE}"
[app]
name = "shop"
repo = "{self.repo}"
stable_tags = "stable-*"
[schedule]
phases = [{{ until = "72h", every = "{every}" }}]
incident_every = "1s"
[escalation]
repair_grace = "2s"
[[checks]]
name = "api"
type = "http"
url = "http://127.0.0.1:{self.port}/health"
timeout = "2s"
[process]
manager = "command"
start = {json.dumps(self.argv)}
match = {json.dumps(self.match)}
cwd = {json.dumps(str(self.repo))}
[alerts]
timeout = "2s"
[alerts.telegram]
api_url = "{telegram}"
{extra}""")
        self.metrics_url: str | None = None
        if server:  # [server]: /metrics on a loopback port of its own
            port = free_port()
            self.metrics_url = f"http://127.0.0.1:{port}/metrics"
            with self.config.open("a") as f:
                f.write(f'\n[server]\nlisten = "127.0.0.1:{port}"\n')

    def start_app(self) -> None:
        with open(self.dir / "app.log", "ab") as log:
            self.apps.append(subprocess.Popen(self.argv, cwd=self.repo, start_new_session=True,
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=log))  # fmt: skip
        assert wait_for_port(self.port), f"{self.name}: the sample app did not start"

    def app_pids(self) -> set[int]:
        return {p.pid for p in psutil.process_iter(["cmdline"]) if self.match in " ".join(p.info["cmdline"] or [])}

    def stop_app(self, sig: signal.Signals = signal.SIGKILL) -> None:
        for pid in self.app_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def deploy(self) -> None:
        """The deploy script: pull the new release and restart the app on it."""
        git(self.repo, "pull", "-q", "--ff-only")
        self.stop_app()
        self.start_app()

    def serving(self) -> str | None:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
        except httpx.HTTPError:
            return None
        return str(r.json().get("version")) if r.status_code == 200 else None

    def run_healer(self) -> None:
        with open(self.dir / "healer.log", "ab") as log:
            self.healer = subprocess.Popen([*HEALER, "--config", str(self.config), "run"],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # fmt: skip

    def rows(self, type_: str) -> list[dict[str, Any]]:
        """`healer history --json` of this host, as a person reads it."""
        out = healer("--config", str(self.config), "history", "--since", "1h", "--json")
        assert out.returncode == 0, out.stderr
        return [r for r in json.loads(out.stdout) if r["type"] == type_]

    def done(self, type_: str, outcome: str | None = None) -> list[dict[str, Any]]:
        rows = [r for r in self.rows(type_) if r["outcome"] not in ("started", "skipped")]
        return [r for r in rows if outcome is None or r["outcome"] == outcome]

    def log(self) -> str:
        return (self.dir / "healer.log").read_text()[-4000:]

    def stop(self) -> None:
        stop_healer(self.healer)
        for pid in self.app_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.stop_app()
        for app in self.apps:
            with contextlib.suppress(ProcessLookupError):
                app.kill()
            app.wait(10)


class Fleet:
    def __init__(self, root: Path, dsn: str, fake: ChatFake) -> None:
        self.dsn = dsn
        self.fake = fake
        self.origin = make_repo(root / "origin")
        (self.origin / "app.json").write_text(json.dumps({"version": "1.0"}))
        git(self.origin, "add", "app.json")
        commit(self.origin, "release 1.0")
        git(self.origin, "tag", "stable-1")
        self.root = root
        self.hosts: dict[str, Host] = {}

    def start(self, n: int = 2, every: str = "1s", extra: str = "", *, server: bool = False) -> None:
        """n hosts, web-1 ... web-n, each its app and its healer cycling `every` (`extra`: more of
        healer.toml; with `server`, its /metrics); once each reported healthy."""
        self.hosts = {
            f"web-{i}": Host(self.root, f"web-{i}", self.origin, self.fake.url, every, extra, server=server)
            for i in range(1, n + 1)
        }
        for h in self.hosts.values():
            h.start_app()
            h.run_healer()
        self.eventually(lambda: self.leader() is not None, "a leader")
        for h in self.hosts.values():  # every host has reported a healthy cycle
            self.eventually(lambda h=h: self.healthy(h.name), f"{h.name}'s first healthy cycle")  # type: ignore[misc]

    def release(self, version: str, **settings: object) -> str:
        (self.origin / "app.json").write_text(json.dumps({"version": version, **settings}))
        git(self.origin, "add", "app.json")
        return commit(self.origin, f"release {version}")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of the fleet's tables; none before the first healer made them."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            try:
                return conn.execute(sql).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def leader(self) -> str | None:
        rows = self.query("SELECT host FROM fleet_lease WHERE app = 'shop' AND expires_at > now()")
        return str(rows[0][0]) if rows else None

    def healthy(self, host: str) -> bool:
        rows = self.query(f"SELECT healthy FROM fleet_hosts WHERE app = 'shop' AND host = '{host}'")
        return bool(rows and rows[0][0])

    def said(self, words: str) -> list[str]:
        """The Telegram messages healer sent that contain `words`."""
        texts = [re.sub(r"<[^>]+>", "", str(m.get("text"))) for m in self.fake.telegram_messages()]
        return [t for t in texts if words in t]

    def output(self) -> str:
        chat = "\n".join(str(m.get("text")).split("\n")[0] for m in self.fake.telegram_messages())
        return "\n".join(f"--- {h.name}:\n{h.log()}" for h in self.hosts.values()) + f"\n--- telegram:\n{chat}"

    def eventually(self, pred: Callable[[], Any], what: str) -> None:
        assert wait_until(lambda: bool(pred()), WAIT), f"timed out waiting for {what}\n{self.output()}"


@pytest.fixture
def fleet(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Fleet]:
    dsn = postgres_server.create_database()
    fake = ChatFake().start()
    os.environ.update({"HEALER_STATE_DSN": dsn, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": "4242"})
    f = Fleet(tmp_path, dsn, fake)
    try:
        yield f
    finally:
        for h in f.hosts.values():
            h.stop()
        fake.stop()
        postgres_server.drop_database(dsn)


def test_one_sick_host_has_only_its_own_app_restarted(fleet: Fleet) -> None:
    """The app on one host dies: that host's healer restarts it (a host-local remedy); the other
    host's app is never touched, and nobody rolls the fleet back."""
    fleet.start()
    sick, well = fleet.hosts["web-2"], fleet.hosts["web-1"]
    untouched = well.app_pids()
    sick.stop_app()
    fleet.eventually(lambda: sick.serving() == "1.0" and sick.done("repair", "ok"), "web-2's app restarted")
    assert sick.done("repair", "ok")[0]["what"] == "process-restart"
    fleet.eventually(lambda: fleet.healthy("web-2"), "web-2 healthy again in the registry")
    assert well.app_pids() == untouched and well.done("repair") == []
    assert [h.done("rollback") for h in fleet.hosts.values()] == [[], []]


def test_a_bad_release_on_a_follower_alone_is_rolled_back_by_the_leaders_order(fleet: Fleet) -> None:
    """A canary: 2.0 goes to the follower only and answers 500. Its healer restarts its app (no
    help), asks the leader, which runs 1.0 and judges 2.0 over the hosts on it (1 of 1 fails),
    orders the fleet's rollback of 2.0; the follower follows. The leader's own app is never touched."""
    fleet.start(2)
    leader = fleet.leader()
    canary = next(h for n, h in fleet.hosts.items() if n != leader)
    other = fleet.hosts[str(leader)]
    untouched = other.app_pids()
    bad = fleet.release("2.0", broken=True)
    canary.deploy()
    fleet.eventually(lambda: fleet.query("SELECT outcome FROM fleet_rollbacks WHERE outcome IS NOT NULL"),
                     "the fleet rollback's outcome")  # fmt: skip
    assert canary.serving() == "1.0" and other.serving() == "1.0"
    [(from_release, to_ref, outcome)] = fleet.query("SELECT from_release, to_ref, outcome FROM fleet_rollbacks")
    assert (from_release, to_ref) == (bad, "stable-1")
    assert outcome == f"{canary.name} rolled back from {bad[:12]} to stable-1", outcome
    assert canary.done("repair", "ok") == [] and canary.done("repair")  # the restart came first, and failed
    assert other.app_pids() == untouched and other.done("repair") == [] and other.done("rollback") == []


@pytest.mark.parametrize("n", [2, 3], ids=["two", "three"])
def test_a_bad_deploy_on_every_host_is_one_rollback_decided_by_the_leader_and_followed(fleet: Fleet, n: int) -> None:
    """Release 2.0 answers 500 on every host: the ladder's restart does not help; the leader, seeing
    most hosts fail on it, decides one rollback for the fleet and rolls its own host back; the
    followers, whose own ladders leave rollbacks to the leader, follow its order to the same
    commit; the leader announces one outcome naming every host."""
    fleet.start(n)
    bad = fleet.release("2.0", broken=True)
    for h in fleet.hosts.values():
        h.deploy()
    fleet.eventually(lambda: all(h.serving() == "1.0" for h in fleet.hosts.values()), "every host on 1.0")
    stable = git(fleet.origin, "rev-parse", "stable-1^{commit}")
    assert [git(h.repo, "rev-parse", "HEAD") for h in fleet.hosts.values()] == [stable] * n
    orders = fleet.query("SELECT epoch, from_release, target, to_ref FROM fleet_rollbacks")
    assert len(orders) == 1 and orders[0][1:] == (bad, stable, "stable-1"), orders
    fleet.eventually(lambda: fleet.query("SELECT outcome FROM fleet_rollbacks WHERE outcome IS NOT NULL"),
                     "the fleet rollback's outcome")  # fmt: skip
    [(outcome,)] = fleet.query("SELECT outcome FROM fleet_rollbacks")
    assert outcome == f"{', '.join(fleet.hosts)} rolled back from {bad[:12]} to stable-1", outcome
    reasons = {n: [r["why"] for r in h.done("rollback", "ok")] for n, h in fleet.hosts.items()}
    assert all(len(r) == 1 for r in reasons.values()), reasons
    assert sum("the fleet rolls back" in r[0] for r in reasons.values()) == n - 1, reasons  # the followers'

    def announced() -> list[dict[str, Any]]:
        return [r for r in fleet.hosts["web-1"].rows("alert") if r["what"] == "the fleet's rollback"]

    fleet.eventually(announced, "the outcome announced")
    assert len(announced()) == 1, announced()  # one outcome, in the shared outbox
    # in chat: the fleet's rollback said once as it starts and once as it ends, for the fleet;
    # each host's own incident names its host
    fleet.eventually(lambda: fleet.said("Rolled back"), "the outcome in chat")
    assert [t.split("\n")[0] for t in fleet.said("Rolling back")] == ["🔴 shop (fleet): Rolling back"], fleet.output()
    [done] = fleet.said("Rolled back")
    assert done.startswith("✅ shop (fleet): Rolled back") and outcome in done, fleet.output()
    for name in fleet.hosts:
        assert fleet.said(f"shop on {name}: Incident opened"), fleet.output()


def test_a_follower_killed_in_the_middle_of_the_fleets_rollback_finishes_it_and_reports(fleet: Fleet) -> None:
    """kill -9 of a follower's healer while it verifies its part of the fleet's rollback: started
    again, it finishes the rollback it journaled and reports it, so the leader's one outcome names
    every host as having followed (none "no report"), and nothing is said twice."""
    fleet.start(2, extra='[rollback]\nverify_grace = "10s"\n')
    follower = next(h for n, h in fleet.hosts.items() if n != fleet.leader())
    bad = fleet.release("2.0", broken=True)
    for h in fleet.hosts.values():
        h.deploy()
    fleet.eventually(lambda: [r for r in follower.rows("rollback") if r["outcome"] == "started"],
                     f"{follower.name}'s part of the fleet's rollback under way")  # fmt: skip
    assert follower.healer is not None
    follower.healer.kill()
    follower.healer.wait(10)
    follower.run_healer()
    fleet.eventually(lambda: fleet.query("SELECT outcome FROM fleet_rollbacks WHERE outcome IS NOT NULL"),
                     "the fleet rollback's outcome")  # fmt: skip
    [(outcome,)] = fleet.query("SELECT outcome FROM fleet_rollbacks")
    assert outcome == f"web-1, web-2 rolled back from {bad[:12]} to stable-1", outcome
    assert all(h.serving() == "1.0" for h in fleet.hosts.values())
    fleet.eventually(lambda: fleet.said("Rolled back"), "the outcome in chat")
    assert len(fleet.said("Rolled back")) == 1 and len(fleet.said("Rolling back")) == 1, fleet.output()


def test_a_persons_rollback_on_one_host_is_the_fleets(fleet: Fleet) -> None:
    """Release 2.0 is healthy but a person wants it gone: `healer rollback` on a follower rolls its
    own host back and orders the fleet's rollback, which the other host follows at once (its next
    cycle is an hour away: the order wakes it), and the leader announces one outcome."""
    fleet.start(2, every="1h")
    new = fleet.release("2.0")
    for h in fleet.hosts.values():
        h.deploy()
    fleet.eventually(lambda: all(h.serving() == "2.0" for h in fleet.hosts.values()), "every host on 2.0")
    both = f"SELECT count(*) FROM fleet_hosts WHERE release = '{new}' AND healthy HAVING count(*) = 2"
    fleet.eventually(lambda: fleet.query(both), "both hosts healthy on 2.0 in the registry")
    leader = fleet.leader()
    person = next(h for n, h in fleet.hosts.items() if n != leader)
    out = healer("--config", str(person.config), "rollback", "--reason", "pricing is wrong", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    fleet.eventually(lambda: all(h.serving() == "1.0" for h in fleet.hosts.values()), "every host on 1.0")
    orders = fleet.query("SELECT epoch, from_release, to_ref, reason FROM fleet_rollbacks")
    assert len(orders) == 1 and orders[0][:3] == (0, new, "stable-1"), orders  # a person's: no lease
    assert "pricing is wrong" in orders[0][3]
    fleet.eventually(lambda: fleet.said("Rolled back"), "the outcome in chat")
    [done] = fleet.said("Rolled back")
    assert done.startswith("✅ shop (fleet): Rolled back") and "web-1, web-2 rolled back from" in done, done
    [started] = fleet.said("Rolling back")
    assert started.startswith("🔴 shop (fleet): Rolling back") and "(by " in started, started


def _scrape(url: str) -> dict[str, list[dict[str, str]]] | None:
    """/metrics as family name -> the label sets of its samples; None while it does not answer."""
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    out: dict[str, list[dict[str, str]]] = {}
    for fam in text_string_to_metric_families(r.text):
        out[fam.name] = [{**s.labels, "value": str(s.value)} for s in fam.samples]
    return out


def test_metrics_of_each_host_carry_its_name_and_say_who_leads(fleet: Fleet) -> None:
    """Each healer's /metrics labels every sample host="<its [fleet] host>" (store figures too),
    healer_fleet_leader is 1 on the leader only, and the leader exports the epoch it leads at."""
    fleet.start(2, server=True)
    scraped: dict[str, dict[str, list[dict[str, str]]]] = {}

    def one_leader_with_cycles() -> bool:
        for name, h in fleet.hosts.items():
            assert h.metrics_url is not None
            got = _scrape(h.metrics_url)
            if got is None or "healer_cycles" not in got:
                return False
            scraped[name] = got
        leaders = [n for n, got in scraped.items() if got["healer_fleet_leader"][0]["value"] == "1.0"]
        return len(leaders) == 1 and leaders[0] == fleet.leader()

    fleet.eventually(one_leader_with_cycles, "one leader in /metrics, and recorded cycles")
    for name, got in scraped.items():
        samples = [s for fam in got.values() for s in fam]
        assert samples and all(s["host"] == name for s in samples), (name, got)
        assert got["healer_store_ok"] == [{"host": name, "value": "1.0"}]
    leader = fleet.leader()
    follower = next(n for n in fleet.hosts if n != leader)
    assert [s["value"] for s in scraped[follower]["healer_fleet_leader"]] == ["0.0"]
    [(epoch,)] = fleet.query("SELECT epoch FROM fleet_lease WHERE app = 'shop'")
    assert scraped[str(leader)]["healer_fleet_epoch"] == [{"host": str(leader), "value": f"{float(epoch)}"}]

    def own_alerts(h: Host) -> list[str]:  # its one "Watching", not the fleet's two
        got = _scrape(str(h.metrics_url)) or {}
        return [s["value"] for s in got.get("healer_alerts", []) if s["channel"] == "telegram"]

    for h in fleet.hosts.values():
        fleet.eventually(lambda h=h: own_alerts(h) == ["1.0", "0.0"], f"{h.name}'s own alert counted")  # type: ignore[misc]
