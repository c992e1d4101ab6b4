"""The dashboard in a real Chromium against a real server training real runs: pages load clean, a run started from
the form is watched live and ends with exactly its metrics.jsonl plotted, the runs table follows the all-runs feed,
compare overlays runs, and after a run's end the browser stops asking for its stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser_harness import Browser, expected_points
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from server_harness import ServerProcess, start_run, verify_partially, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser-live")]

#: A short real run (about 5 s of training here): 60 metric points, 3 checkpoints. For the runs watched while they
#: train.
SHORT = {"steps": 300, "batch_size": 512, "log_every": 5, "checkpoint_every": 100, "eval_samples": 1000}
#: A shorter one (1.0 CPU-s against SHORT's 3.4): 20 points, 2 checkpoints. For runs only looked at once finished.
FINISHED = {"steps": 100, "log_every": 5, "checkpoint_every": 50, "eval_samples": 500}


@pytest.fixture(scope="module")
def api(web: ServerProcess) -> Iterator[httpx.Client]:
    with web.client() as client:
        yield client


@pytest.fixture(scope="module")
def finished(api: httpx.Client) -> list[dict[str, Any]]:
    """Two finished runs, named and tagged."""
    runs = [start_run(api, **FINISHED, name=f"finished {i}", tags=["finished"], seed=i) for i in range(2)]
    return [wait_for(api, r["run_id"], {"succeeded", "failed"}, timeout=300) for r in runs]


@pytest.fixture(scope="module")
def verification(web: ServerProcess) -> str:
    """A real (partial) verification of this server: the conformance suite's health and error checks."""
    return verify_partially(web, "feed123").name


def plotted(browser: Browser) -> dict[str, Any]:
    return dict(browser.js("return window.dashboard.charts.points()"))


def test_every_page_loads_with_no_console_error_and_no_failed_request(
    browser: Browser, web: ServerProcess, finished: list[dict[str, Any]], verification: str
) -> None:
    ids = [r["run_id"] for r in finished]
    browser.get(f"{web.url}/")
    browser.wait(f"return document.querySelector('tr[data-run-id=\"{ids[1]}\"]')", what="the runs table")
    browser.get(f"{web.url}/runs/{ids[0]}")
    browser.wait("return window.dashboard.page && window.dashboard.page.ended", what="the run's stream to end")
    browser.wait("return document.querySelector('#files a.report-link')", what="the evidence list")
    browser.get(f"{web.url}/compare?run={ids[0]}&run={ids[1]}")
    browser.wait("return window.dashboard.charts", what="the compare charts")
    browser.get(f"{web.url}/start")
    browser.wait("return document.querySelectorAll('#dataset option').length > 1", what="the dataset list")
    browser.get(f"{web.url}/verification")
    browser.wait("return document.querySelectorAll('#checks tbody tr').length > 0", what="the verification report")
    assert browser.console_errors() == []
    assert browser.failed_requests() == []
    loaded = {r.url.removeprefix(web.url) for r in browser.requests_to(lambda r: r.url.startswith(web.url))}
    assert "/static/vendor/uplot/uPlot.iife.min.js" in loaded and "/api/events/training" in loaded
    elsewhere = [r.url for r in browser.requests_to(lambda r: not r.url.startswith(web.url))]
    assert elsewhere == []  # nothing from anywhere else: no CDN, no font, no beacon


def test_a_run_started_from_the_form_gains_points_live_and_ends_plotting_its_metrics_jsonl(
    browser: Browser, web: ServerProcess, api: httpx.Client
) -> None:
    browser.get(f"{web.url}/start")
    browser.wait("return document.querySelectorAll('#dataset option').length > 1", what="the dataset list")
    Select(browser.driver.find_element(By.ID, "model")).select_by_value("mlp")
    Select(browser.driver.find_element(By.ID, "dataset")).select_by_value("fashion-mnist")
    for field in ("steps", "batch_size", "log_every", "eval_samples"):
        browser.driver.find_element(By.ID, field).send_keys(str(SHORT[field]))
    browser.driver.find_element(By.ID, "name").send_keys("from the form")
    browser.driver.find_element(By.ID, "tags").send_keys("browser, live")
    browser.driver.find_element(By.ID, "submit").click()
    run_id = browser.wait("return location.pathname.startsWith('/runs/') && location.pathname.split('/')[2]")
    run = api.get(f"/api/training/runs/{run_id}").json()
    assert (run["name"], run["tags"], run["config"]["steps"]) == ("from the form", ["browser", "live"], 300)

    # While it trains, the page gains points (from the live stream, not a reload).
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = browser.js(
            "const p = window.dashboard.page;"
            # p.run is null until the page's first fetch of the run answers
            "return p && p.run && [p.run.status, window.dashboard.history.metrics.length, p.ended]"
        )
        if state and state[0] == "running" and state[1] and (not seen or state[1] > seen[-1]):
            seen.append(state[1])
        if state and state[2]:
            break
        time.sleep(0.1)
    assert len(seen) >= 3, f"the page did not gain points while the run trained: {seen}"
    assert browser.js("return window.dashboard.page.streamOpens") == 1  # one stream, live to the end

    browser.wait("return document.querySelector('#files a.report-link')", what="the evidence list after the end")
    ended = api.get(f"/api/training/runs/{run_id}").json()
    assert ended["status"] == "succeeded"
    assert plotted(browser) == expected_points(web.evidence_dir / "training" / run_id)
    assert browser.js("return window.dashboard.history.problems") == []
    shown = browser.js("return [...document.querySelectorAll('#checkpoints-body td.hash')].map(td => td.textContent)")
    assert shown == [c["sha256"] for c in ended["checkpoints"]] and len(shown) == 5  # steps/5 by default
    assert browser.console_errors() == [] and browser.failed_requests() == []


def test_the_form_shows_the_servers_errors_next_to_the_fields_it_names(browser: Browser, web: ServerProcess) -> None:
    browser.get(f"{web.url}/start")
    browser.wait("return document.querySelectorAll('#dataset option').length > 1", what="the dataset list")
    browser.driver.find_element(By.ID, "steps").send_keys("0")
    browser.driver.find_element(By.ID, "tags").send_keys("fine, not fine")
    browser.driver.find_element(By.ID, "submit").click()
    errors = browser.wait(
        "const e = [...document.querySelectorAll('[data-error-for]')].filter(x => x.textContent);"
        "return e.length && Object.fromEntries(e.map(x => [x.dataset.errorFor, x.textContent]))",
        what="errors next to the fields",
    )
    assert set(errors) == {"steps", "tags"}, errors
    assert "minimum of 1" in errors["steps"] and "does not match" in errors["tags"]
    assert browser.js("return location.pathname") == "/start"  # nothing started


def test_the_runs_table_follows_the_all_runs_feed_without_polling(
    browser: Browser, web: ServerProcess, api: httpx.Client, finished: list[dict[str, Any]]
) -> None:
    browser.get(f"{web.url}/?tag=feed")
    browser.wait("return window.dashboard.state.loaded", what="the table and its feed")
    assert browser.js("return document.querySelectorAll('#runs-body tr[data-run-id]').length") == 0
    tagged = start_run(api, **SHORT, tags=["feed"])
    other = start_run(api, **SHORT | {"steps": 20}, tags=["not-feed"])
    row = f"document.querySelector('tr[data-run-id=\"{tagged['run_id']}\"]')"
    browser.wait(f"return {row}", what="the new run's row")
    browser.wait(f"return {row}.dataset.status === 'running'", timeout=300, what="the row to show it running")
    browser.wait(f"return {row}.dataset.status === 'succeeded'", timeout=300, what="the row to show it succeeded")
    wait_for(api, other["run_id"], {"succeeded", "failed"}, timeout=300)
    time.sleep(1)
    entry = browser.js(f"return window.dashboard.rows.get('{tagged['run_id']}').run")
    assert entry["progress"]["step"] == 300 and entry["latest_eval"]["eval_accuracy"] > 0.5
    assert browser.js(f"return window.dashboard.rows.has('{other['run_id']}')") is False  # filtered out
    lists = browser.requests_to(lambda r: "/api/training/runs?" in r.url)
    assert len(lists) == 1, [r.url for r in lists]  # listed once; everything after came from the feed
    assert browser.js("return window.dashboard.state.feedEvents") > 300 // 5  # every metric event came by the feed
    assert browser.console_errors() == [] and browser.failed_requests() == []


def test_after_a_runs_end_the_browser_asks_for_no_more_stream_for_10_s(
    browser: Browser, web: ServerProcess, finished: list[dict[str, Any]]
) -> None:
    run = finished[0]
    events = run["links"]["events"]
    browser.get(f"{web.url}/runs/{run['run_id']}")
    browser.wait("return window.dashboard.page.ended", what="the replay to reach the end")
    # Beside the page's own stream (closed on `end`), an EventSource that never closes itself: the server's 204
    # on its reconnect is what stops it.
    browser.js(
        "window.raw = {events: 0, errors: 0, source: new EventSource(arguments[0])};"
        "window.raw.source.addEventListener('end', () => window.raw.events++);"
        "window.raw.source.addEventListener('error', () => window.raw.errors++);",
        f"{events}&last_event_id=0",
    )
    time.sleep(10.5)
    streams = browser.requests_to(lambda r: "/api/events/training" in r.url)
    page = [r for r in streams if "last_event_id" not in r.url]
    raw = [r for r in streams if "last_event_id=0" in r.url]
    assert [r.status for r in page] == [200]
    assert [r.status for r in raw] == [200, 204], [(r.url, r.status) for r in raw]  # 300 ms retry: ~30 without it
    assert browser.js("return [window.raw.events, window.raw.source.readyState]") == [1, 2]  # one end; CLOSED
    assert browser.console_errors() == []


def test_compare_overlays_the_runs_picked_in_the_table(
    browser: Browser, web: ServerProcess, api: httpx.Client, finished: list[dict[str, Any]]
) -> None:
    browser.get(f"{web.url}/?tag=finished")
    for run in finished:
        browser.wait(f"return document.querySelector('tr[data-run-id=\"{run['run_id']}\"] input')").click()
    browser.driver.find_element(By.ID, "compare").click()
    browser.wait("return window.dashboard.charts && window.dashboard.runs", what="the compare page")
    points = browser.js("return window.dashboard.charts['train-loss'].points()")
    expected = [expected_points(web.evidence_dir / "training" / r["run_id"])["loss"][0] for r in finished]
    assert points == expected and len(points) == 2 and points[0] != points[1]  # two seeds, two curves
    assert browser.console_errors() == [] and browser.failed_requests() == []
