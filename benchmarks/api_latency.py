"""Benchmark 4: API latency at a fixed request rate, on an idle server and while a run trains.

Open loop: requests are scheduled at fixed times (`rate` per second per endpoint) whatever the answers do, and the
latency of each runs from its scheduled time to its full response, so a slow answer cannot hide the queue behind
it. Endpoints: a run's status (`GET /api/training/runs/{id}`) and its metrics (`GET .../metrics`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from benchmarks.measurements import percentile
from benchmarks.results import Report
from benchmarks.server import ReferenceServer, start_run, wait_terminal
from benchmarks.training import run_tinygrad, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("phase", "server"),
    ("endpoint", "endpoint"),
    ("requests", "requests"),
    ("errors", "non-200"),
    ("p50_ms", "p50 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("max_ms", "max (ms)"),
]


async def load(url: str, paths: dict[str, str], rate: float, seconds: float) -> dict[str, dict[str, Any]]:
    """Fire GET `paths` at `rate`/s each for `seconds`; per endpoint latencies (ms) and error count."""
    results: dict[str, dict[str, Any]] = {name: {"latencies": [], "errors": 0} for name in paths}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(name: str, path: str, scheduled: float) -> None:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.get(path)
                await response.aread()
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            results[name]["latencies"].append((time.perf_counter() - scheduled) * 1000)
            if not ok:
                results[name]["errors"] += 1

        start = time.perf_counter() + 0.2
        n = int(rate * seconds)
        tasks = [
            asyncio.create_task(one(name, path, start + i / rate + k / (rate * len(paths))))
            for i in range(n)
            for k, (name, path) in enumerate(paths.items())
        ]
        await asyncio.gather(*tasks)
    return results


def _rows(phase: str, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "phase": phase,
            "endpoint": name,
            "requests": len(r["latencies"]),
            "errors": r["errors"],
            "p50_ms": percentile(r["latencies"], 50),
            "p99_ms": percentile(r["latencies"], 99),
            "max_ms": max(r["latencies"], default=None),
        }
        for name, r in results.items()
    ]


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 4; returns its report."""
    opts = ws.options
    report = Report("api_latency", "API latency at a fixed request rate, idle and while training", COLUMNS)
    rate, seconds = (10.0, 2.0) if opts.quick else (20.0, 10.0)
    steps = 300 if opts.quick else 4000
    cache = str(ws.scratch("api-cache") / "cache.db")
    run_tinygrad(ws, spec_for("mlp", steps=steps), 0.85, env={"CACHEDB": cache})
    details: dict[str, Any] = {}
    with ReferenceServer(ws, env={"CACHEDB": cache}) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        # A finished run to query while idle, then a long run to query while it trains.
        done = start_run(client, dataset="fashion-mnist", model="mlp", steps=30)
        wait_terminal(client, done["run_id"])
        paths = {
            "GET run status": f"/api/training/runs/{done['run_id']}",
            "GET run metrics": f"/api/training/runs/{done['run_id']}/metrics",
        }
        idle = asyncio.run(load(server.url, paths, rate, seconds))
        report.rows += _rows("idle", idle)
        live = start_run(client, dataset="fashion-mnist", model="mlp", steps=steps)
        while client.get(f"/api/training/runs/{live['run_id']}").json()["status"] == "queued":
            time.sleep(0.05)
        time.sleep(3)  # past the trainer's start-up: measure while it is training
        paths = {
            "GET run status": f"/api/training/runs/{live['run_id']}",
            "GET run metrics": f"/api/training/runs/{live['run_id']}/metrics",
        }
        busy = asyncio.run(load(server.url, paths, rate, seconds))
        status = client.get(f"/api/training/runs/{live['run_id']}").json()
        still_training = status["status"] == "running"
        report.rows += _rows("training", busy)
        client.post(f"/api/training/runs/{live['run_id']}/cancel")
        wait_terminal(client, live["run_id"])
        details = {"idle": idle, "training": busy, "run_status_after_load": status["status"]}
    if not still_training:
        report.status = "partial"
        report.notes.append(f"the run was no longer training when the load ended ({status['status']})")
    report.notes += [
        f"{rate:.0f} requests/s per endpoint for {seconds:.0f} s, open loop, keep-alive connections, one client "
        "process; latency from each request's scheduled time to its full response. Target: p99 < 10 ms while "
        "training.",
        f"'training': an mlp run of {steps} steps, measured from 3 s after it started running (then cancelled).",
    ]
    report.details = details
    return report
