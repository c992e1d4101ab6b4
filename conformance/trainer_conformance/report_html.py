"""report.html: the verdict as a page a person opens from disk, beside report.json.

Rendered from report.json's document alone: the verdict, the target, the per-check table (id, title, requirement,
outcome, message) with links to each check's evidence, the training evidence the verdict rests on, and links to the
other files of the folder. One file with its styles inline and no script, so it shows the same from `file://`, from a
CI artifact or when a server serves the folder; every link is relative to the folder.
"""

from __future__ import annotations

import html
from typing import Any

from .folder import VerifyFolder

REPORT_HTML = "report.html"

_STYLE = """
body { font: 14px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; margin: 24px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 24px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
th { color: #6b7280; font-size: 12px; }
code { font: 12px ui-monospace, Menlo, Consolas, monospace; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; } dt { color: #6b7280; } dd { margin: 0; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; border: 1px solid #e5e7eb; }
.passed { color: #047857; background: #ecfdf5; } .failed, .error { color: #b91c1c; background: #fef2f2; }
.skipped { color: #b45309; background: #fffbeb; }
.verdict { font-size: 16px; padding: 4px 14px; }
.muted { color: #6b7280; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _link(path: str) -> str:
    return f'<a href="{_e(path)}"><code>{_e(path)}</code></a>'


def _status(status: str, extra: str = "") -> str:
    return f'<span class="status {_e(status)} {extra}">{_e(status)}</span>'


def render_report_html(report: dict[str, Any]) -> str:
    """The page for one verification report (a report.json document)."""
    summary = report["summary"]
    target = report["target"]
    facts = [
        ("verdict", _status(report["verdict"], "verdict")),
        ("target", f"<code>{_e(target['base_url'])}</code> (service {_e(target.get('version'))})"),
        ("commit", f"<code>{_e(report['commit'])}</code> (from the {_e(report['commit_source'])})"),
        ("suite", f"{_e(report['suite']['name'])} {_e(report['suite']['version'])}"),
        ("started / finished", f"{_e(report['started_at'])} / {_e(report['finished_at'])} ({report['duration_s']} s)"),
        (
            "checks",
            f"{summary['total']} in all: {summary['passed']} passed, {summary['failed']} failed, "
            f"{summary['error']} errors, {summary['skipped']} skipped",
        ),
    ]
    if report.get("selected"):
        facts.append(("selected", _e(", ".join(report["selected"])) + " (a partial run: the gate refuses it)"))
    rows = "".join(
        f'<tr id="check-{_e(c["id"])}" data-status="{_e(c["status"])}">'
        f"<td><code>{_e(c['id'])}</code></td>"
        f"<td>{_e(c['title'])}{'' if c['required'] else ' <span class=muted>(advisory)</span>'}</td>"
        f"<td>{_e(c['requirement'])}</td>"
        f"<td>{_status(c['status'])}</td>"
        f"<td>{_e(': '.join(p for p in (c.get('failure'), c.get('message')) if p))}"
        f"{''.join(f'<br>{_link(e)}' for e in c.get('evidence', []))}</td>"
        "</tr>"
        for c in report["checks"]
    )
    training = "".join(
        f"<tr><td><code>{_e(t['run_id'])}</code></td><td><code>{_e(t['path'])}</code></td>"
        f"<td>{_link(t['copy'])}</td><td><code>{_e(t['manifest_sha256'])}</code></td></tr>"
        for t in report.get("training_evidence", [])
    )
    files = report.get("files", {})
    links = ["report.json", *(files[k] for k in ("junit", "discrepancies", "sums", "probes") if k in files)]
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.get("notes", []))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trainer-conformance {_e(report["verdict"])}: {_e(target["base_url"])} at {_e(report["commit"])}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>trainer-conformance: {_e(report["verdict"])}</h1>
<dl>{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)}</dl>
<p>Files: {" ".join(_link(p) for p in links)}</p>
<h2>Checks</h2>
<table id="checks">
<thead><tr><th>id</th><th>title</th><th>requirement</th><th>outcome</th><th>message and evidence</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<h2>Training evidence</h2>
<p class="muted">Each run's manifest as the target served it; the gate re-hashes both sides.</p>
<table id="training">
<thead><tr><th>run</th><th>on the target</th><th>copy here</th><th>manifest sha256</th></tr></thead>
<tbody>{training or '<tr><td colspan="4" class="muted">none</td></tr>'}</tbody>
</table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body>
</html>
"""


def write_report_html(folder: VerifyFolder, report: dict[str, Any]) -> str:
    """Write report.html beside report.json; its path relative to the folder."""
    return folder.write_text(REPORT_HTML, render_report_html(report))
