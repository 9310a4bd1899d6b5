"""End-to-end: the page a real `healer run` serves at `/`, drawn by a real headless Chromium,
after the window went through a release that crashed at start, its rollback, and a crash of
the release rolled back to."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from browser import by_class, by_id, decode_png, dump_dom, elements, red_pixels, screenshot
from helpers import git
from services import free_port, wait_for_port
from test_e2e_ladder import Story, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def story(tmp_path: Path) -> Iterator[tuple[Story, str]]:
    """The ladder's story (the sample app under the command manager, one-second cadence) with
    `[server] listen` on a free loopback port; yields it and the page's URL."""
    s = Story(tmp_path)
    try:
        s.start_app()
        assert wait_for_port(s.port), "the sample app did not start"
        listen = f"127.0.0.1:{free_port()}"
        config = s.write_config('deploy_grace = "3s"')
        # the shipped restart, verified within 5 s instead of 60: the restart of a release that
        # crashes at start fails sooner, and the rollback comes a minute earlier
        playbooks = tmp_path / "playbooks"
        playbooks.mkdir()
        shipped = (resources.files("healer.playbooks") / "process-restart.toml").read_text()
        assert 'verify_within = "60s"' in shipped
        (playbooks / "process-restart.toml").write_text(
            shipped.replace('verify_within = "60s"', 'verify_within = "5s"')
        )
        config.write_text(config.read_text() + f'\n[server]\nlisten = "{listen}"\n[playbooks]\ndir = "{playbooks}"\n')
        s.run_healer()
        yield s, f"http://{listen}/"
    finally:
        s.stop()


def test_the_served_page_shows_the_rollback_and_the_crash_in_chromium(story: tuple[Story, str], tmp_path: Path) -> None:
    """A release that crashes at start is rolled back to stable-1; then the app crashes and is
    restarted. Chromium, pointed at `/`, shows the phase, the rolled-back release watched, red
    bands where the incidents were, the rollback inside the first band, and the restart."""
    s, url = story
    bad = s.release("2.0", crash=True)
    s.stop_app()
    s.start_app()  # crashes at once
    wait_until(lambda: [r for r in s.rows("rollback") if r["outcome"] == "ok"], 90, "the rollback")
    wait_until(lambda: s.serving() == "1.0", 30, "the stable release serving")
    wait_until(lambda: s.current().open_incident is None, 30, "the deploy's incident closed")
    s.stop_app()  # the release rolled back to crashes
    wait_until(lambda: s.serving() == "1.0" and [r for r in s.repairs("ok")], 30, "the crash restarted")

    dom = elements(dump_dom(url, tmp_path))
    assert by_id(dom, "phase").text == "phase 1/1 (0–3d, every 1s)"
    stable = git(s.repo, "rev-parse", "stable-1^{commit}")
    assert by_id(dom, "commit").text == stable[:12] and "(by a rollback)" in by_id(dom, "deploy").text
    bands = by_class(dom, "incident-band")
    assert len(bands) >= 2, [b.attrs for b in bands]
    assert by_class(dom, "cycle", "failed") and by_class(dom, "cycle", "ok")
    (rollback,) = by_class(dom, "marker", "rollback")
    assert rollback.attrs["aria-label"].startswith("rollback stable-1 by loop at ")
    assert ": ok; " in rollback.attrs["aria-label"]
    # the rollback lies inside the first band: it happened while that incident was open
    x = float(next(e for e in rollback.children if e.tag == "line").attrs["x1"])
    band = next(e for e in bands[0].children if e.tag == "rect")
    assert float(band.attrs["x"]) <= x <= float(band.attrs["x"]) + float(band.attrs["width"]) + 0.2
    restarts = [m for m in by_class(dom, "marker", "repair") if ": ok; " in m.attrs["aria-label"]]
    assert restarts and all(m.attrs["aria-label"].startswith("repair process-restart") for m in restarts)
    deploys = [m.attrs["aria-label"] for m in by_class(dom, "marker", "deploy")]
    assert deploys[0].startswith(f"deploy {bad[:12]}") and deploys[-1].endswith("(by a rollback)")
    assert by_class(dom, "latency") and by_id(dom, "last-actions")

    png = tmp_path / "launch-window.png"
    width, height, rows = decode_png(screenshot(url, png))
    assert (width, height) == (1200, 900) and red_pixels(rows) > 500
