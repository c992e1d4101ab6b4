"""Benchmark 9: the server's memory against the number of finished runs in its evidence folder (0 to 1,000).

The runs are real runs through the HTTP API, each with its own folder, log, checkpoint and manifest, trained by the
scripted trainer (tests/scripted_trainer.py through --trainer-command: it speaks the training function's protocol
and writes real checkpoints, without learning) at the default run's shape: 1,500 steps, a metric every 10 (151 log
lines, about what a default run logs), one checkpoint. At each count two servers are measured: the one that ran
them (what a long-lived server holds), and a fresh one started on their folders (what recovery leaves after
reading every run's log at start-up, on a folder holding exactly those runs). Both keep the logs of the
`--event-cache-runs` (32) most recently read ended runs in memory and only a compact view of the others.

Memory per run: (resident memory with N runs - with none) / N, and since the count before. The server's RSS is read
from /proc. With `--before REV` the server as it was at REV (benchmarks/server.py) is also started on each folder
(a copy of its own: a server may write to the folder it recovers) and measured the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results import Report
from benchmarks.server import ReferenceServer
from benchmarks.workspace import REPO_ROOT, Workspace

COLUMNS = [
    ("runs", "finished runs"),
    ("server", "server"),
    ("rss_mib", "server RSS (MiB)"),
    ("kib_per_run", "RSS per run (KiB)"),
    ("kib_per_added_run", "RSS per run since the last count (KiB)"),
    ("logs_in_memory", "logs in memory"),
    ("start_s", "start to ready (s)"),
    ("evidence_mib", "evidence on disk (MiB)"),
]
#: A default run's log (1,500 steps, a metric every 10) with one checkpoint instead of five (disk: 1.2 MB a run).
RUN = {"dataset": "fashion-mnist", "model": "mlp", "steps": 1500, "log_every": 10, "checkpoint_every": 1500,
       "eval_samples": 100}  # fmt: skip
SCRIPTED = {"SCRIPTED_LOAD_S": "0", "SCRIPTED_STEPS_PER_S": "100000"}
_RUNS_METRIC = re.compile(r'^trainer_runs\{status="(\w+)"\} ([0-9.e+]+)$', re.M)
_LOGS_METRIC = re.compile(r"^trainer_event_logs_in_memory ([0-9.e+]+)$", re.M)


def counts(client: httpx.Client) -> tuple[dict[str, int], int]:
    """Runs by status and the logs in memory, from the server's /metrics."""
    text = client.get("/metrics").text
    logs = _LOGS_METRIC.search(text)
    return {k: int(float(v)) for k, v in _RUNS_METRIC.findall(text)}, int(float(logs.group(1))) if logs else -1


def listed(client: httpx.Client) -> int:
    """The runs a server lists, page by page (what every revision's API answers)."""
    total, cursor = 0, None
    while True:
        page = client.get("/api/training/runs", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
        page.raise_for_status()
        body = page.json()
        total += len(body["runs"])
        cursor = body.get("next_cursor")
        if not cursor:
            return total


def fresh_server(ws: Workspace, folder: Path, **server: Any) -> dict[str, Any]:
    """A new server on `folder`: spawn to ready (s), its RSS once settled, the runs it lists."""
    started = time.perf_counter()
    with ReferenceServer(ws, root=folder, **server) as fresh, httpx.Client(base_url=fresh.url, timeout=60) as client:
        start_s = time.perf_counter() - started  # spawn to /readyz 200 (the launcher waits for it)
        rss = settled_rss(fresh)
        return {"start_s": start_s, "rss_mib": rss, "runs": listed(client)}


def create(client: httpx.Client, n: int, deadline: float) -> list[str]:
    """POST `n` runs and wait until every run the server has is terminal (or the deadline); their ids."""
    ids = []
    for _ in range(n):
        response = client.post("/api/training/runs", json=RUN)
        response.raise_for_status()
        ids.append(response.json()["run_id"])
    while time.monotonic() < deadline:
        by_status, _ = counts(client)
        if not by_status.get("queued") and not by_status.get("running"):
            break
        time.sleep(0.5)
    return ids


def settled_rss(server: ReferenceServer) -> float:
    """The server's RSS (MiB) once its last writes are done (a short pause: nothing is running any more)."""
    time.sleep(1.0)
    return server.usage()["rss_mib"]


def subset(evidence: Path, run_ids: list[str], into: Path) -> Path:
    """An evidence folder holding these runs' folders, hard-linked from `evidence` (the same bytes, no copy)."""
    training = into / "evidence" / "training"
    training.mkdir(parents=True)
    for run_id in run_ids:
        shutil.copytree(evidence / "training" / run_id, training / run_id, copy_function=os.link)
    return into


def disk_mib(root: Path) -> float:
    """Bytes under `root` in MiB."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / (1 << 20)


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 9; returns its report."""
    opts = ws.options
    report = Report("memory", "Server memory against the finished runs in its evidence folder", COLUMNS)
    milestones = (0, 5, 10) if opts.quick else (0, 100, 500, 1000)
    budget_s = 120 if opts.quick else 1500
    began = time.monotonic()
    deadline = began + budget_s
    command = f"{ws.python} {REPO_ROOT / 'tests' / 'scripted_trainer.py'}"
    args = ["--trainer-command", command, "--max-concurrent-runs", "4", "--max-queued-runs", "1000"]
    live: list[dict[str, Any]] = []
    run_ids: list[str] = []
    with (
        ReferenceServer(ws, env=SCRIPTED, args=args) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for target in milestones:  # one server runs them all: what a long-lived server holds at each count
            run_ids += create(client, target - len(run_ids), deadline)
            by_status, logs = counts(client)
            finished = sum(v for k, v in by_status.items() if k not in ("queued", "running"))
            live.append({"runs": finished, "rss_mib": settled_rss(server), "logs_in_memory": logs,
                         "succeeded": by_status.get("succeeded", 0), "at_s": time.monotonic() - began})  # fmt: skip
            if finished < target:
                report.status = "partial"
                report.notes.append(f"only {finished} of {target} runs finished within the {budget_s} s budget")
                break
        evidence = server.root / "evidence"
    sides: list[tuple[str, dict[str, Any]]] = [("fresh, started on the folder", {})]
    if ws.before_root() is not None:
        sides.append((f"fresh, before ({opts.before})", {"code": ws.before_root()}))
    rows: list[dict[str, Any]] = []
    first: dict[str, float] = {}
    previous: dict[str, tuple[int, float]] = {}

    def row(n: int, side: str, rss: float, **more: Any) -> dict[str, Any]:
        first.setdefault(side, rss)
        prev_n, prev_rss = previous.get(side, (0, rss))
        previous[side] = (n, rss)
        return {"runs": n, "server": side, "rss_mib": rss, **more,
                "kib_per_run": (rss - first[side]) * 1024 / n if n else None,
                "kib_per_added_run": (rss - prev_rss) * 1024 / (n - prev_n) if n > prev_n else None}  # fmt: skip

    for point in live:  # then fresh servers on a folder with exactly those runs: what recovery leaves
        n = point["runs"]
        disk = None
        rows.append(row(n, "the one that ran them", point["rss_mib"], logs_in_memory=point["logs_in_memory"]))
        for side, code in sides:  # this checkout's, then the before one, each on its own copy
            folder = subset(evidence, run_ids[:n], ws.scratch("memory-subset"))
            disk = disk_mib(folder / "evidence")
            measured = fresh_server(ws, folder, **code)
            if measured["runs"] != n:
                report.status = "partial"
                report.notes.append(f"{side}: listed {measured['runs']} of the folder's {n} runs")
            rows.append(row(n, side, measured["rss_mib"], start_s=measured["start_s"], listed=measured["runs"]))
            shutil.rmtree(folder)
        for r in rows[-1 - len(sides) :]:
            r["evidence_mib"] = disk
    report.rows = rows
    report.notes += [
        f"Runs: {RUN['steps']} steps, a metric every {RUN['log_every']}, one checkpoint (1.2 MB), trained by the "
        "scripted trainer (tests/scripted_trainer.py) through --trainer-command, 4 at a time; every run went "
        "through the real API and evidence writer.",
        "RSS per run: (RSS with N runs - RSS with none) / N, for the same kind of server. 'the one that ran them': "
        "one server that created the runs one count after another; 'fresh': a new server started on a folder "
        "holding exactly those N run folders (hard links of the same files), measured once it was ready.",
        "start to ready: spawn to /readyz 200, recovery of every run folder included.",
    ]
    report.details = {"live": live, "run_ids": len(run_ids), "budget_s": budget_s}
    return report
