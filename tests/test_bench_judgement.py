"""The judgement replay's bookkeeping (bench/judgement.py), on a tiny seeded run: a few windows per class."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not an installed package; `pytest` alone does not put the root on the path
    sys.path.insert(0, str(ROOT))

from bench import judgement  # noqa: E402 (after the path above)
from bench.judgement import Action, App, Replay, draw_window  # noqa: E402

WINDOWS = 12
CLASSES = {s.name: s for s in judgement.SCENARIOS}
ALL = tuple(p.name for p in judgement.POLICIES)


def tiny(*classes: str, policies: tuple[str, ...] = ALL, workers: int = 1) -> Replay:
    scenarios = [CLASSES[c] for c in classes]
    return judgement.replay(WINDOWS, seed=7, scenarios=scenarios, policies=policies, workers=workers)


def figures(r: Replay) -> dict[str, dict[str, dict[str, object]]]:
    return {p: {c: t.figures(r.cycles) for c, t in per.items()} for p, per in r.tallies.items()}


@pytest.fixture(scope="module")
def replay() -> Replay:
    return tiny("noise-10%", "crash", "dependency", "bad-deploy")


def test_restarting_on_one_failed_check_restarts_healthy_apps_with_10_percent_errors(replay: Replay) -> None:
    """httpok (restart on any failed check) has false restarts on the 10 % noise class."""
    t = replay.tallies["httpok"]["noise-10%"]
    assert t.windows == WINDOWS
    assert t.false_restarts > 0 and t.false_restarts == t.restarts


@pytest.mark.parametrize("policy", [p.name for p in judgement.POLICIES])
def test_every_policy_cures_a_crash(replay: Replay, policy: str) -> None:
    """A crashed process is brought back in every window where it crashed, whoever watches it."""
    t = replay.tallies[policy]["crash"]
    assert t.faulted > 0 and t.missed == 0
    assert len(t.delays) + t.wrong_remedies == t.faulted


def test_healer_never_rolls_back_for_a_dependency(replay: Replay) -> None:
    """Redis down is never a reason for healer to roll the deploy back."""
    t = replay.tallies["healer"]["dependency"]
    assert t.windows == WINDOWS and t.rollbacks == 0 and t.false_rollbacks == 0


def test_a_bad_deploy_rolled_back_is_not_missed_and_its_restart_is_useless(replay: Replay) -> None:
    """healer's ladder restarts a bad deploy once (useless), then rolls it back (right): nothing missed."""
    t = replay.tallies["healer"]["bad-deploy"]
    assert t.missed == 0 and t.rollbacks == WINDOWS and t.false_rollbacks == 0
    assert t.useless_restarts == WINDOWS


def test_the_replay_is_deterministic_for_a_seed_whatever_the_processes() -> None:
    """The same seed gives the same figures, in one process or spread over two."""
    one = tiny("noise-5%", "flapping", policies=("monit", "argo"))
    assert figures(one) == figures(tiny("noise-5%", "flapping", policies=("monit", "argo")))
    assert figures(one) == figures(tiny("noise-5%", "flapping", policies=("monit", "argo"), workers=2))


def test_every_policy_sees_the_same_draws_whatever_it_did() -> None:
    """Two apps of one window show the same samples after one of them was restarted."""
    a, b = App(draw_window(CLASSES["noise-10%"], 7, 3)), App(draw_window(CLASSES["noise-10%"], 7, 3))
    for cycle in range(5):
        a.observe(cycle), b.observe(cycle)
    a.act(Action.RESTART)
    assert a.observe(5).samples == b.observe(5).samples


@pytest.mark.parametrize(
    ("scenario", "at", "action", "verdict"),
    [
        pytest.param("crash", "onset", Action.RESTART, "right", id="restart-cures-crash"),
        pytest.param("crash", "onset", Action.ROLLBACK, "wrong", id="rollback-for-crash"),
        pytest.param("crash", 0, Action.RESTART, "false", id="restart-before-crash"),
        pytest.param("bad-deploy", 0, Action.RESTART, "useless", id="restart-of-bad-deploy"),
        pytest.param("slow-x2", 0, Action.ROLLBACK, "right", id="rollback-of-slow-deploy"),
        pytest.param("dependency", "outage", Action.RESTART, "false", id="restart-for-redis"),
        pytest.param("noise-1%", 0, Action.ROLLBACK, "false", id="rollback-of-healthy"),
    ],
)
def test_each_action_is_classified_by_what_it_cures(scenario: str, at: int | str, action: Action, verdict: str) -> None:
    """A restart or rollback is right, useless, wrong or false by what was wrong when it ran."""
    app = App(draw_window(CLASSES[scenario], 7, 0))
    until = app.onset if at == "onset" else app.outage[0] if at == "outage" else int(at)
    for cycle in range(until + 1):
        app.observe(cycle)
    app.act(action)
    assert app.done[-1].verdict == verdict


@pytest.mark.parametrize(
    ("canary", "baseline", "high"),
    [
        pytest.param([1.0, 1.0, 1.0], [0.0] * 60, True, id="every-request-fails"),
        pytest.param([1.0, 0.0, 0.0], [0.0] * 59 + [1.0], False, id="sparse-errors-pass"),
        pytest.param([60.0, 62.0, 65.0], [float(x) for x in range(25, 35)] * 6, True, id="twice-as-slow"),
        pytest.param([30.0, 29.0, 31.0], [float(x) for x in range(25, 35)] * 6, False, id="same-latency"),
    ],
)
def test_the_kayenta_classifier_flags_an_increase_and_passes_sparse_errors(
    canary: list[float], baseline: list[float], high: bool
) -> None:
    """Mann-Whitney's interval: a shift above its bound is High; mostly-zero differences are not."""
    assert judgement.is_high(canary, baseline) is high


def test_healers_probe_in_the_replay_samples_a_partly_failed_cycle_more() -> None:
    """As the real probe does (healer.sampling): a cycle whose first requests partly failed takes
    six more from the cycle's spare requests (the same app, the same distribution) and is judged
    on the nine; the frozen rules' probe (no extra sampling) stays at three and fails."""
    ok, err = judgement.Sample(200, 30.0), judgement.Sample(500, 30.0)
    obs = judgement.Observation(0, (err, ok, err), True, 200.0, True, spare=(ok,) * judgement.SPARE)
    api = judgement.check_results(obs, sample_more=True)[0]
    assert api.ok and api.values["samples"] == 9 and api.sample_errors == 2
    api = judgement.check_results(obs)[0]
    assert not api.ok and api.values["samples"] == 3


def test_every_cycle_has_its_spare_requests_drawn_apart_from_the_first() -> None:
    """Each cycle of a window carries SPARE further draws besides its SAMPLES first ones (all a
    peer sees); they come from a stream of their own (draw_window)."""
    w = draw_window(CLASSES["noise-10%"], 7, 3)
    assert len(w.spare) == w.cycles and all(len(c) == judgement.SPARE for c in w.spare)
    assert all(len(c) == judgement.SAMPLES for c in w.noise) and w.spare != w.noise
