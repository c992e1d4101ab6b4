"""The evidence pages open from disk, as a person finds them in an evidence folder or a CI artifact: a finished
run's report.html draws its charts (exactly its metrics.jsonl) and tables from file://, with no network; the
conformance suite's report.html shows every check. Served by the server, report.html runs in its CSP sandbox and
still draws."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser_harness import Browser, expected_points
from server_harness import ServerProcess, start_run, verify_partially, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser-live")]


@pytest.fixture(scope="module")
def api(web: ServerProcess) -> Iterator[httpx.Client]:
    with web.client() as client:
        yield client


@pytest.fixture(scope="module")
def finished(api: httpx.Client) -> dict[str, Any]:
    run = start_run(api, steps=150, log_every=5, checkpoint_every=50, eval_samples=500, name="disk")
    return wait_for(api, run["run_id"], {"succeeded", "failed"}, timeout=300)


def test_a_runs_report_html_draws_its_charts_and_tables_from_file(
    browser: Browser, web: ServerProcess, finished: dict[str, Any]
) -> None:
    folder = web.evidence_dir / "training" / finished["run_id"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "report.html" in [f["path"] for f in manifest["files"]]
    browser.get((folder / "report.html").as_uri())
    browser.wait("return window.report", what="the report's charts")
    assert browser.js("return window.report.charts.points()") == expected_points(folder)
    hashes = browser.js("return [...document.querySelectorAll('#checkpoints td.hash')].map(td => td.textContent)")
    assert hashes == [c["sha256"] for c in finished["checkpoints"]] and len(hashes) == 3
    assert browser.js("return document.querySelectorAll('#charts canvas').length") == 3
    assert browser.console_errors() == [] and browser.failed_requests() == []
    assert {r.url.split(":", 1)[0] for r in browser.requests_to(lambda r: True)} == {"file"}  # no network at all


def test_served_by_the_server_report_html_runs_in_its_sandbox_and_still_draws(
    browser: Browser, web: ServerProcess, finished: dict[str, Any]
) -> None:
    browser.get(f"{web.url}{finished['links']['evidence']}/report.html")
    browser.wait("return window.report", what="the report's charts")
    folder = web.evidence_dir / "training" / finished["run_id"]
    assert browser.js("return window.report.charts.points()") == expected_points(folder)
    assert browser.js("return self.origin") == "null"  # an opaque origin: no cookie, no same-origin API reads
    assert browser.console_errors() == [] and browser.failed_requests() == []


def test_a_verification_report_html_shows_every_check_from_file(browser: Browser, web: ServerProcess) -> None:
    folder = verify_partially(web, "disk1")
    report = json.loads((folder / "report.json").read_text())
    browser.get((folder / "report.html").as_uri())
    rows = browser.js("return [...document.querySelectorAll('#checks tbody tr')].map(tr => [tr.id, tr.dataset.status])")
    assert rows == [[f"check-{c['id']}", c["status"]] for c in report["checks"]]
    assert browser.js("return document.querySelector('h1').textContent") == "trainer-conformance: passed"
    links = browser.js("return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert {"report.json", "junit.xml", "discrepancies.md", "SHA256SUMS"} <= set(links)
    assert all((folder / link).exists() for link in links), links  # every link leads to a file beside it
    assert browser.console_errors() == [] and browser.failed_requests() == []
