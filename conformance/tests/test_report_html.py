"""report.html beside report.json: the verdict, every check with its requirement and outcome, links into the folder,
and nothing a target's text can inject."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

from trainer_conformance import checks as _checks  # noqa: F401  (registers the checks)
from trainer_conformance.registry import select
from trainer_conformance.report import CheckResult, build_report
from trainer_conformance.report_html import render_report_html

HOSTILE = "<script>alert(1)</script>"


class _Table(HTMLParser):
    """The rows of the checks table: (id attribute, data-status, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and (found.get("id") or "").startswith("check-"):
            self.rows.append((str(found["id"]).removeprefix("check-"), str(found.get("data-status"))))
        self.scripts += tag == "script"


def report(failing: str) -> dict[str, Any]:
    results = []
    for check in select():
        if check.id == failing:
            results.append(CheckResult(check, "failed", 0.5, "Too few events", HOSTILE, {}, ["sse/main.raw"]))
        else:
            results.append(CheckResult(check, "passed", 0.01))
    return build_report(
        results,
        suite={"name": "trainer-conformance", "version": "0.1.0"},
        target={"base_url": "http://127.0.0.1:1", "version": HOSTILE, "commit_header": None},
        commit="abc1234",
        commit_source="argument",
        started_at="2025-01-01T00:00:00Z",
        finished_at="2025-01-01T00:01:00Z",
        duration_s=60.0,
        selected=[],
        runs=[],
        training_evidence=[
            {
                "run_id": "run-0123456789ab",
                "path": "training/run-0123456789ab",
                "manifest_sha256": "0" * 64,
                "manifest": {},
                "copy": "training/main-run-0123456789ab/manifest.json",
            }
        ],
        notes=[],
    )


def test_every_check_is_a_row_with_its_outcome_and_the_verdict_is_on_top() -> None:
    failing = select()[0].id
    document = report(failing)
    page = render_report_html(document)
    table = _Table()
    table.feed(page)
    assert table.rows == [(c["id"], c["status"]) for c in document["checks"]]
    assert dict(table.rows)[failing] == "failed"
    assert "<h1>trainer-conformance: failed</h1>" in page
    for check in document["checks"]:
        assert html.escape(check["requirement"]) in page


def test_links_stay_inside_the_folder_and_nothing_is_fetched_or_run() -> None:
    page = render_report_html(report(select()[0].id))
    links = re.findall(r'href="([^"]+)"', page)
    assert {"report.json", "junit.xml", "discrepancies.md", "SHA256SUMS", "sse/main.raw"} <= set(links)
    assert "training/main-run-0123456789ab/manifest.json" in links
    assert all(":" not in link and not link.startswith("/") for link in links), links
    table = _Table()
    table.feed(page)
    assert table.scripts == 0 and "src=" not in page
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
