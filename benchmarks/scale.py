"""Benchmark: 1, 2 and 4 concurrent runs on the local executor and on Ray, on this machine.

For each executor and each N: one server (local: `--max-concurrent-runs N`; Ray: a local cluster of a head with no
CPUs and two worker nodes, N runs allowed at once), N mlp runs POSTed together, and the wall time until all have
ended. Reported: runs per hour, each run's median training samples/s (from its metric events), and what Ray adds per
run: start latency (POST to the `running` event) and event latency (an event's arrival at an SSE subscriber minus
its recorded `time`). The Ray half runs only in a loopback-only network namespace (`scripts/loopback-only python -m
benchmarks scale`; see docs/scale-out.md); elsewhere it is reported as skipped.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from trainer_conformance.raw_stream import RawEventStream

from benchmarks.measurements import percentile
from benchmarks.results import Report
from benchmarks.server import ReferenceServer
from benchmarks.workspace import Workspace
from tooling.ray_local import LocalRayCluster, on_loopback_only

COLUMNS = [
    ("executor", "executor"),
    ("concurrent", "runs at once"),
    ("wall_s", "wall (s)"),
    ("runs_per_hour", "runs/hour"),
    ("samples_per_s", "per-run samples/s (median)"),
    ("start_s", "POST to running (s, median)"),
    ("event_p50_ms", "event latency p50 (ms)"),
    ("event_p99_ms", "event latency p99 (ms)"),
]


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def _follow(url: str, run_id: str) -> list[float]:
    """Latencies (s) of the live events of one run, read from its stream to its end."""
    parts = urlsplit(url)
    stream = await RawEventStream.open(parts.hostname or "127.0.0.1", parts.port or 80,
                                       f"/api/events/training?run_id={run_id}")  # fmt: skip
    latencies: list[float] = []
    try:
        async for arrived, event in stream.events():
            data = json.loads(event.data)
            if data["type"] == "metric":
                latencies.append(arrived - _epoch(data["time"]))
    finally:
        await stream.close()
    return latencies


async def _batch(url: str, n: int, request: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        began = time.monotonic()
        posted = [(await client.post("/api/training/runs", json=request)).json() for _ in range(n)]
        latencies = await asyncio.gather(*(_follow(url, r["run_id"]) for r in posted))
        wall = time.monotonic() - began
        runs = [(await client.get(f"/api/training/runs/{r['run_id']}")).json() for r in posted]
    rates, starts = [], []
    for run in runs:
        page = httpx.get(f"{url}/api/training/runs/{run['run_id']}/metrics", params={"limit": "1000"}).json()
        speeds = [m["samples_per_second"] for m in page["metrics"] if m.get("samples_per_second")]
        rates.append(statistics.median(speeds) if speeds else None)
        if run["started_at"]:
            starts.append(_epoch(run["started_at"]) - _epoch(run["created_at"]))
    flat = sorted(x for each in latencies for x in each)
    return {
        "concurrent": n,
        "statuses": [r["status"] for r in runs],
        "wall_s": wall,
        "runs_per_hour": n / wall * 3600,
        "samples_per_s": statistics.median(r for r in rates if r is not None) if any(rates) else None,
        "start_s": statistics.median(starts) if starts else None,
        "event_p50_ms": _ms(percentile(flat, 50)),
        "event_p99_ms": _ms(percentile(flat, 99)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def benchmark(ws: Workspace) -> Report:
    """Run the scale benchmark; returns its report."""
    report = Report("scale", "1, 2 and 4 concurrent runs, local executor and Ray", COLUMNS)
    counts = (1, 2) if ws.options.quick else (1, 2, 4)
    steps = 100 if ws.options.quick else 600
    request = {"dataset": "fashion-mnist", "model": "mlp", "steps": steps, "log_every": 10, "eval_samples": 1000}
    executors = ["local", "ray"] if on_loopback_only() else ["local"]
    if "ray" not in executors:
        report.status = "partial"
        report.notes.append("Ray skipped: run it in a loopback-only namespace (scripts/loopback-only).")
    for executor in executors:
        cluster = LocalRayCluster.start([0, 1, 1]) if executor == "ray" else None
        try:
            for n in counts:
                args = ["--max-concurrent-runs", str(n)]
                if cluster is not None:
                    args += ["--executor", "ray", "--ray-address", cluster.address]
                with ReferenceServer(ws, args=args) as server:
                    row = asyncio.run(_batch(server.url, n, request))
                row["executor"] = executor
                report.rows.append(row)
                print(f"scale: {executor} x{n}: {row}", flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
    report.notes += [
        f"Each run: mlp, {steps} steps of 128, a metric every 10 steps, evaluation on 1000 test images. The Ray "
        "cluster: a head with no CPUs and two worker nodes of one CPU each, all on this host (2 cores), so 4 runs "
        "on Ray queue two at a time on the cluster while the local executor runs all four at once on 2 cores.",
        "Event latency: arrival at a subscriber of the run's stream minus the event's recorded time (same clock).",
    ]
    return report
