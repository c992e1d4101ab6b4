"""Benchmark 5: the conformance suite's wall time against a local reference server, and where the time goes.

`trainer-conformance --base-url URL --out DIR` against one fresh server (warm kernel cache), timed from outside; its
report gives each check's duration and the runs it started, the server gives each run's start and end. With
CONFORMANCE_BASELINE=<git revision> the suite of that revision (its `conformance/`, `schemas/` and dataset manifest,
exported with `git archive`) runs against the same server, alternating with this tree's, so the two are compared
side by side on a shared machine: medians and their ratio. With `--before REV` as well, that suite also runs against
the server (and training function) of REV: everything as it was, against everything as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.measurements import median, ratio
from benchmarks.results import Report
from benchmarks.server import ReferenceServer
from benchmarks.training import run_tinygrad, spec_for
from benchmarks.workspace import Workspace, export_revision

COLUMNS = [("part", "part"), ("seconds", "seconds"), ("share", "share of wall"), ("note", "note")]
#: What the suite of another revision needs to run on its own.
_BASELINE_PATHS = ["conformance", "schemas", "functions/trainer-tinygrad/datasets/checksums.json"]


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
            ).total_seconds()  # fmt: skip


def export_baseline(revision: str, into: Path) -> Path:
    """The suite's package folder of `revision`, exported from git; what PYTHONPATH needs to run it."""
    return export_revision(revision, _BASELINE_PATHS, into) / "conformance"


def time_suite(
    ws: Workspace, url: str, out: Path, extra: list[str], *, pythonpath: Path | None, client: httpx.Client | None = None
) -> dict[str, Any]:
    """One run of a suite against `url`: wall seconds measured outside, its verdict line, its report, and (with a
    client) the span the server spent on the suite's runs, from the first one's created_at to the last finished_at,
    and what is left of the wall: the suite's own part, which the machine's load disturbs far less."""
    env = ws.env()
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    argv = [sys.executable, "-m", "trainer_conformance", "--base-url", url, "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=1200)
    wall = time.perf_counter() - t0
    reports = sorted(out.glob("*/report.json"))
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    doc = json.loads(reports[0].read_text()) if reports else {}
    span = None
    if client is not None and doc.get("runs"):
        bodies = [client.get(f"/api/training/runs/{r['run_id']}").json() for r in doc["runs"] if r.get("run_id")]
        first = min(b["created_at"] for b in bodies)
        last = max((b.get("finished_at") or b["created_at"]) for b in bodies)
        span = _seconds_between(first, last)
    return {
        "wall_s": wall,
        "runs_span_s": span,
        "suite_own_s": wall - span if span is not None else None,
        "returncode": proc.returncode,
        "verdict": lines[-1] if lines else f"exit {proc.returncode}",
        "report": doc,
        "report_path": str(reports[0]) if reports else None,
        "stderr_tail": proc.stderr[-800:],
    }


#: Main-run lengths measured beside the target's default (1,500 mlp steps), through the suite's --run-config.
SHORTER_MAIN_RUNS = (300, 600)


def _median_row(part: str, runs: list[dict[str, Any]], note: str = "", share: float | None = 1.0) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    return {"part": f"{part} (wall, median of {len(walls)})", "seconds": median(walls), "share": share,
            "note": note or runs[-1]["verdict"][:100], "walls_s": walls}  # fmt: skip


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 5; returns its report."""
    report = Report("conformance", "Conformance suite wall time against the local reference server", COLUMNS)
    quick = ws.options.quick
    cache = ws.kernel_cache("conformance-cache")
    if not quick:  # fill the caches: no timed run compiles
        run_tinygrad(ws, spec_for("mlp", steps=30), 0.85, env={"CACHEDB": cache})
    repeats = 1 if quick else ws.options.repeats
    # The main run's length: the target's default (no --run-config: what a real verification runs), and shorter ones.
    lengths: list[int | None] = [100] if quick else [*SHORTER_MAIN_RUNS, None]
    revision = os.environ.get("CONFORMANCE_BASELINE")
    baseline = export_baseline(revision, ws.scratch("conformance-baseline")) if revision else None
    suites: list[tuple[str, Path | None]] = [("this tree", None)] + ([(revision, baseline)] if revision else [])
    measured: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    with ReferenceServer(ws, env={"CACHEDB": cache}) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(repeats):  # interleaved, so load from elsewhere falls on every variant alike
            for steps in lengths:
                extra = ["--run-config", json.dumps({"steps": steps})] if steps is not None else []
                for name, path in suites:
                    out = ws.scratch("conformance-out")
                    run = time_suite(ws, server.url, out, extra, pythonpath=path, client=client)
                    measured.setdefault((name, steps), []).append(run)
        current = measured[("this tree", lengths[-1])]
        last = current[-1]
        doc: dict[str, Any] = last["report"]
        runs = {r["role"]: client.get(f"/api/training/runs/{r['run_id']}").json() for r in doc.get("runs", [])}
    concurrent: list[dict[str, Any]] = []
    if not quick:
        # The same suite against a server that trains two runs at once: the suite submits both control runs
        # together, so they train side by side instead of one after the other (the default is one at a time).
        env = {"CACHEDB": cache}
        with (
            ReferenceServer(ws, env=env, args=["--max-concurrent-runs", "2"]) as server2,
            httpx.Client(base_url=server2.url, timeout=60) as client2,
        ):
            for _ in range(repeats):
                concurrent.append(time_suite(ws, server2.url, ws.scratch("conformance-out"), [], pythonpath=None,
                                             client=client2))  # fmt: skip
    whole_before: list[dict[str, Any]] = []
    before_root = ws.before_root()
    if before_root is not None and baseline is not None and not quick:
        # Everything as it was: the suite of CONFORMANCE_BASELINE against the server (and trainer) of --before.
        env = {"CACHEDB": str(ws.scratch("conformance-cache-before") / "cache.db")}
        with (
            ReferenceServer(ws, env=env, code=before_root) as server3,
            httpx.Client(base_url=server3.url, timeout=60) as client3,
        ):
            for _ in range(repeats):
                whole_before.append(time_suite(ws, server3.url, ws.scratch("conformance-out"), [],
                                               pythonpath=baseline, client=client3))  # fmt: skip
    default = median([r["wall_s"] for r in current])
    for steps in lengths:
        label = f"main run {steps} steps" if steps is not None else "main run: the target's default (1,500 steps)"
        this = measured[("this tree", steps)]
        report.rows.append(_median_row(f"whole suite, this tree, {label}", this, share=ratio(median(
            [r["wall_s"] for r in this]), default)))  # fmt: skip
        if revision:
            old = measured[(revision, steps)]
            change = ratio(median([r["wall_s"] for r in this]), median([r["wall_s"] for r in old]))
            report.rows.append(_median_row(f"whole suite, {revision}, {label}", old,
                                           note=f"this tree / {revision}: {change:.2f}; " + old[-1]["verdict"][:60],
                                           share=ratio(median([r["wall_s"] for r in old]), default)))  # fmt: skip
    if concurrent:
        change = ratio(median([r["wall_s"] for r in concurrent]), default)
        report.rows.append(_median_row("whole suite, this tree, server with --max-concurrent-runs 2", concurrent,
                                       note=f"vs one run at a time: {change:.2f}; " + concurrent[-1]["verdict"][:60],
                                       share=change))  # fmt: skip
    if whole_before:
        change = ratio(default, median([r["wall_s"] for r in whole_before]))
        report.rows.append(_median_row(f"whole suite of {revision} against the server of {ws.options.before}",
                                       whole_before, share=ratio(median([r["wall_s"] for r in whole_before]), default),
                                       note=f"this tree (suite and server) / all before: {change:.2f}; "
                                       + whole_before[-1]["verdict"][:50]))  # fmt: skip
    own = [r["suite_own_s"] for r in current if r["suite_own_s"] is not None]
    report.rows.append({"part": "  of which the suite's own (wall minus the server's span of its runs)",
                        "seconds": median(own), "share": ratio(median(own), default)})  # fmt: skip
    wall = last["wall_s"]
    if not doc:
        report.status = "failed"
        report.notes.append(f"no report.json: exit {last['returncode']}: {last['stderr_tail']}")
        return report
    for role, run in runs.items():
        created_to_start = _seconds_between(run.get("created_at"), run.get("started_at"))
        training = _seconds_between(run.get("started_at"), run.get("finished_at"))
        report.rows.append({
            "part": f"{role} run: queued + training", "seconds": (created_to_start or 0) + (training or 0),
            "share": ((created_to_start or 0) + (training or 0)) / wall,
            "note": f"{run['config']['steps']} steps; queued {created_to_start or 0:.1f} s (the trainer's start "
                    f"included), training {training or 0:.1f} s, status {run['status']}",
        })  # fmt: skip
    by_section: dict[str, float] = defaultdict(float)
    for check in doc.get("checks", []):
        by_section[check["section"]] += check["duration_s"]
    checks_total = sum(by_section.values())
    report.rows.append({"part": "all checks (some while the control runs train)", "seconds": checks_total,
                        "share": checks_total / wall, "note": f"{len(doc.get('checks', []))} checks"})  # fmt: skip
    for section, seconds in sorted(by_section.items(), key=lambda kv: -kv[1])[:5]:
        report.rows.append({"part": f"  section {section}", "seconds": seconds, "share": seconds / wall})
    slowest = sorted(doc.get("checks", []), key=lambda c: -c["duration_s"])[:3]
    report.notes += [
        f"verdict: {last['verdict']}",
        f"suite duration by its own report: {doc.get('duration_s')} s; target: the whole run under 30 s.",
        "slowest checks: " + ", ".join(f"{c['id']} {c['duration_s']:.2f} s" for c in slowest),
        "share: each suite's wall over this tree's with the default main run; the runs' rows (the last default "
        "run of this tree) over that run's wall.",
        "The control runs are submitted together once the main run's SSE rate window has closed (or it has ended); "
        "the reference server runs one run at a time by default, so they queue and start when the main run ends. "
        "The checks that need only the main run run while they train. The runs' rows come from the server's own "
        "created/started/finished times; a run is queued until its trainer says `started` (its start-up included).",
        "Shorter main runs go through --run-config, which makes the verification partial (its folder is "
        "partial-<commit>); the checks are the same.",
    ]
    if revision:
        report.notes.append(f"baseline: the suite of {revision} against the same server, runs interleaved")
    every = [r for runs_ in measured.values() for r in runs_] + concurrent + whole_before
    if any(r["returncode"] != 0 for r in every):
        report.status = "partial"
        report.notes += [f"exit {r['returncode']}: {r['verdict'][:200]}" for r in every if r["returncode"] != 0][:5]
    report.details = {
        "baseline": revision,
        "walls_s": {f"{name}, steps {steps or 'default'}": [r["wall_s"] for r in v] for (name, steps), v in
                    measured.items()},
        "suite_own_s": {f"{name}, steps {steps or 'default'}": [r["suite_own_s"] for r in v] for (name, steps), v in
                        measured.items()},
        "concurrent_walls_s": [r["wall_s"] for r in concurrent],
        "all_before_walls_s": [r["wall_s"] for r in whole_before],
        "returncodes": [r["returncode"] for r in every], "report_path": last["report_path"],
        "summary": doc.get("summary"), "runs": runs,
    }  # fmt: skip
    return report
