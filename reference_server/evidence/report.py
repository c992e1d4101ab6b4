"""report.html: one run's evidence as a page a person can open from disk, with no network and no server.

Rendered from the run's own files (config.json, provenance.json, metrics.jsonl) when the run ends, before the
manifest, so the manifest lists it and hashes it like any other file. Everything is inside the one file: the
vendored uPlot and the dashboard's chart code (static/js/charts.js, so both plot the same points from the same
events) and stylesheet are inlined, and the events themselves are embedded as JSON. Tables (checkpoints with their
SHA-256, config, provenance) are plain HTML, readable without JavaScript; links to the other evidence files are
relative, so they work from disk and when the server serves the folder.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from trainer_tinygrad.clock import utc_now

from ..assets import Assets
from ..lifecycle import Run

REPORT = "report.html"
_DATA_ID = "report-data"
_DATA = re.compile(rf'<script type="application/json" id="{_DATA_ID}">(.*?)</script>', re.DOTALL)
#: Runs after charts.js in the same inline module: draws the charts from the embedded events.
_MAIN = f"""
const data = JSON.parse(document.getElementById("{_DATA_ID}").textContent);
const history = newHistory();
for (const event of data.events) applyEvent(history, event);
const charts = new RunCharts(document.getElementById("charts"));
charts.update(history);
window.report = {{ charts, history }};
"""
#: Files linked from the report (beside it in the run folder); manifest.json is written right after it.
_LINKED = ("config.json", "provenance.json", "metrics.jsonl", "trainer.log", "manifest.json")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _e(value)


def _rows(pairs: Iterable[tuple[str, Any]]) -> str:
    return "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs)


def _script_json(document: Any) -> str:
    # `<` escaped as \\u003c: no `</script>` or `<!--` can end the block early, whatever a name or an error says.
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def render(
    config_doc: Mapping[str, Any], provenance: Mapping[str, Any], events: list[dict[str, Any]], assets: Assets
) -> bytes:
    """The report of one run; ValueError when the embedded events would not read back as they went in."""
    run = Run(
        run_id=str(config_doc["run_id"]),
        config=dict(config_doc["config"]),
        created_at=str(config_doc["created_at"]),
        seq=0,
        request=dict(config_doc.get("request") or {}),
        device=config_doc.get("device"),
    )
    for event in events:
        run.apply(event)
    title = run.name or run.run_id
    config = run.config
    facts = [
        ("run", f"<code>{_e(run.run_id)}</code>"),
        ("name", _e(run.name) if run.name else '<span class="muted">none</span>'),
        ("status", f'<span class="status {_e(run.status)}">{_e(run.status)}</span>'),
        ("model / dataset", f"{_e(config.get('model'))} on {_e(config.get('dataset'))}"),
        ("steps", f"{run.step:,} of {run.total_steps:,}"),
        ("created", _e(run.created_at)),
        ("started", _e(run.started_at)),
        ("finished", _e(run.finished_at)),
        ("device", _e(run.device)),
        ("tags", "".join(f'<span class="tag">{_e(t)}</span>' for t in run.tags) or '<span class="muted">none</span>'),
    ]
    if run.error:
        facts.append(("error", f"<code>{_e(run.error.get('code'))}</code>: {_e(run.error.get('message'))}"))
    last = run.metrics[-1] if run.metrics else None
    if last:
        facts.append(("last train loss", _number(last.get("loss"))))
    if run.evals:
        facts.append(("last eval accuracy", _number(run.evals[-1].get("eval_accuracy"))))
    checkpoints = "".join(
        "<tr>"
        f'<td class="num">{c["step"]:,}</td>'
        f'<td class="num">{_number(c.get("eval_loss"))}</td>'
        f'<td class="num">{_number(c.get("eval_accuracy"))}</td>'
        f'<td class="num">{_number(c.get("bytes"))}</td>'
        f'<td class="hash mono">{_e(c.get("sha256"))}</td>'
        f'<td><a href="checkpoints/{_e(c["name"])}">{_e(c["name"])}</a></td>'
        "</tr>"
        for c in run.checkpoints
    )
    datasets = "".join(
        f"<tr><td>{_e(d.get('name'))}</td><td>{_e(f.get('name'))}</td>"
        f'<td class="hash mono">{_e(f.get("sha256"))}</td></tr>'
        for d in provenance.get("datasets", [])
        for f in d.get("files", [])
    )
    versions = dict(config_doc.get("versions") or {})
    payload = {"run_id": run.run_id, "events": events}
    embedded = _script_json(payload)
    styles = assets["vendor/uplot/uPlot.min.css"].text() + "\n" + assets["css/dashboard.css"].text()
    uplot = assets["vendor/uplot/uPlot.iife.min.js"].text()
    script = assets["js/charts.js"].text() + _MAIN
    for name, text, end in (("uPlot", uplot, "</script"), ("charts.js", script, "</script"), ("CSS", styles, "</style")):
        if end in text.lower():
            raise ValueError(f"report.html: the inlined {name} contains {end}>, which would end its element early")
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}: {_e(run.status)} (trainer-tinygrad run report)</title>
<style>
{styles}
</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="muted">The evidence of one training run, rendered from the files beside this one when the run ended.
<a href="manifest.json">manifest.json</a> lists every file of the run with its SHA-256, this report included.</p>
<dl class="facts">{_rows(facts)}</dl>
<h2>Training curves</h2>
<div id="charts" class="charts"></div>
<noscript><p class="notice">The charts need JavaScript; every value is in <a href="metrics.jsonl">metrics.jsonl</a>
and the tables below.</p></noscript>
<h2>Checkpoints</h2>
<table id="checkpoints">
<thead><tr><th class="num">step</th><th class="num">eval loss</th><th class="num">eval accuracy</th>
<th class="num">bytes</th><th>sha256</th><th>file</th></tr></thead>
<tbody>{checkpoints or '<tr><td colspan="6" class="muted">none</td></tr>'}</tbody>
</table>
<div class="columns">
<section>
<h2>Config</h2>
<dl class="facts" id="config">{_rows((k, f"<code>{_e(json.dumps(v))}</code>") for k, v in config.items())}</dl>
<h2>Versions</h2>
<dl class="facts">{_rows((k, f"<code>{_e(v)}</code>") for k, v in versions.items())}</dl>
</section>
<section>
<h2>Provenance</h2>
<dl class="facts" id="provenance">{
        _rows(
            (k, f"<code>{_e(provenance.get(k))}</code>")
            for k in ("commit", "tree_dirty", "diff_sha256", "host", "seed", "mocks_disabled", "created_at")
        )
    }</dl>
<table><thead><tr><th>dataset</th><th>file</th><th>sha256</th></tr></thead>
<tbody>{datasets or '<tr><td colspan="3" class="muted">none recorded</td></tr>'}</tbody></table>
</section>
</div>
<h2>Files</h2>
<ul>{"".join(f'<li><a href="{name}">{name}</a></li>' for name in _LINKED)}</ul>
<p class="muted">Written {_e(utc_now())} by the trainer-tinygrad reference server. Charts drawn with uPlot (MIT
licence), inlined.</p>
</main>
<script type="application/json" id="{_DATA_ID}">{embedded}</script>
<script>
{uplot}
</script>
<script type="module">
{script}
</script>
</body>
</html>
"""
    match = _DATA.search(document)
    if match is None or json.loads(match.group(1)) != payload:
        raise ValueError(f"report.html of {run.run_id}: the embedded events do not read back as they went in")
    return document.encode("utf-8")
