"""A run's page survives the connection: opened mid-run it shows the whole history; cut off mid-run (a relay drops
every connection) the browser's EventSource reconnects with Last-Event-ID and the page ends with every point once;
across a server restart mid-run the page shows the run interrupted, its Resume button continues it on the new
server, and the plot ends with each step once."""

from __future__ import annotations

import re

import pytest
from browser_harness import SERVER_ARGS, Browser, CuttingProxy, expected_points, free_port
from server_harness import ServerFactory, start_run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser-resilience")]

#: Long enough to cut it off in the middle (about 7 s), short enough for a test. The page's behaviour is the subject,
#: not training: the trainers are scripted (tests/scripted_trainer.py), paced like a real run of this size.
RUN = {"steps": 400, "batch_size": 512, "log_every": 5, "checkpoint_every": 50, "eval_samples": 500}
PACED = {"SCRIPTED_STEPS_PER_S": "60"}
STEPS = list(range(RUN["log_every"], RUN["steps"] + 1, RUN["log_every"]))
#: How Chromium reports a fetch whose connection was closed under it.
CUT_FETCH = re.compile(r"net::ERR_(EMPTY_RESPONSE|CONNECTION_RESET|CONNECTION_CLOSED)")


def test_opened_mid_run_then_cut_off_the_page_ends_with_every_point_once(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(extra_args=SERVER_ARGS, scripted=True, env=PACED)
    port = int(server.url.rsplit(":", 1)[1])
    with server.client() as api, CuttingProxy(port) as proxy:
        run = start_run(api, **RUN)
        run_id = run["run_id"]
        wait_for(api, run_id, {"running"}, timeout=120)
        while api.get(f"/api/training/runs/{run_id}").json()["progress"]["step"] < 60:
            pass
        logged = len((server.evidence_dir / "training" / run_id / "metrics.jsonl").read_text().splitlines())
        browser.get(f"{proxy.url}/runs/{run_id}")
        # Opened mid-run: the replay brings everything logged before the page existed.
        browser.wait(f"return window.dashboard.history.lastId >= {logged}", what="the replay of the history so far")
        assert browser.js("return window.dashboard.history.metrics.length") >= 12
        assert api.get(f"/api/training/runs/{run_id}").json()["status"] == "running", "the run ended before the cut"
        before = browser.js("return window.dashboard.history.lastId")
        assert proxy.cut() >= 1  # the event stream among them
        browser.wait("return window.dashboard.page.streamOpens >= 2", what="the EventSource to reconnect")
        browser.wait("return window.dashboard.page.ended", timeout=300, what="the run's end")
        assert wait_for(api, run_id, {"succeeded", "failed"})["status"] == "succeeded"
    points = browser.js("return window.dashboard.charts.points()")
    assert points == expected_points(server.evidence_dir / "training" / run_id)
    assert [p[0] for p in points["loss"][0]] == STEPS  # every step once
    assert browser.js("return window.dashboard.history.problems") == []  # no id repeated or skipped
    streams = browser.requests_to(lambda r: "/api/events/training" in r.url)
    assert len(streams) == 2 and before < browser.js("return window.dashboard.history.lastId")
    assert server.log().count(" 200 GET /api/events/training ") == 2
    # The console errors are Chromium reporting what the cut broke: the stream, and any fetch that was in flight on a
    # cut connection (once under `make test`: the run's own GET, net::ERR_EMPTY_RESPONSE); nothing else.
    errors = browser.console_errors()
    streams_cut = [e for e in errors if "/api/events/training" in e]
    assert len(streams_cut) == 1 and "ERR_INCOMPLETE_CHUNKED_ENCODING" in streams_cut[0], errors
    in_flight = [e for e in errors if e not in streams_cut]
    assert all(e.startswith(f"{proxy.url}/api/") and CUT_FETCH.search(e) for e in in_flight), errors


def test_a_server_restart_mid_run_then_resume_plots_each_step_once(
    browser: Browser, server_factory: ServerFactory
) -> None:
    port = free_port()
    args = [*SERVER_ARGS, "--port", str(port)]
    first = server_factory(extra_args=args, scripted=True, env=PACED)
    with first.client() as api:
        run_id = start_run(api, **RUN)["run_id"]
        browser.get(f"{first.url}/runs/{run_id}")
        browser.wait(
            "return document.querySelectorAll('#checkpoints-body td.hash').length >= 1",
            timeout=120,
            what="a first checkpoint on the page",
        )
        assert api.get(f"/api/training/runs/{run_id}").json()["status"] == "running", "the run ended too soon"
    assert first.stop() == 0
    # The server said goodbye on the stream: the page shows the run interrupted and stops listening.
    browser.wait("return window.dashboard.page.ended", what="the interrupted end on the page")
    assert browser.js("return window.dashboard.page.run.status") == "interrupted"
    second = server_factory(evidence_dir=first.evidence_dir, extra_args=args, scripted=True, env=PACED)
    assert second.url == first.url
    browser.wait("return document.getElementById('resume')", what="the Resume button").click()
    browser.wait("return !window.dashboard.page.ended", what="the stream to reopen")
    browser.wait("return window.dashboard.page.ended", timeout=300, what="the resumed run's end")
    with second.client() as api:
        assert wait_for(api, run_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert browser.js("return window.dashboard.page.run.status") == "succeeded"
    points = browser.js("return window.dashboard.charts.points()")
    assert points == expected_points(second.evidence_dir / "training" / run_id)
    assert [p[0] for p in points["loss"][0]] == STEPS  # the steps the interrupted attempt logged twice: once
    assert browser.js("return window.dashboard.history.problems") == []
    # The only console errors: the run, its manifest and provenance asked for right after the end, while no server
    # listened (those Chromium sent on a fresh connection rather than on one the stopping server still served).
    errors = browser.console_errors()
    assert all(f"/api/training/runs/{run_id}" in e and "ERR_CONNECTION_REFUSED" in e for e in errors), errors
    assert len(errors) <= 3
