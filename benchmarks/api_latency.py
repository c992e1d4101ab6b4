"""Benchmark 4: API latency at a fixed request rate, on an idle server and while a run trains.

Open loop: requests are scheduled at fixed times (`rate` per second per endpoint) whatever the answers do, and the
latency of each runs from its scheduled time to its full response, so a slow answer cannot hide the queue behind
it. Endpoints: a run's status (`GET /api/training/runs/{id}`) and its metrics (`GET .../metrics`). Each request
carries an X-Request-ID that the server's access log repeats with the time it spent on the request (from its headers
read to its answer written), so the server's own share of each percentile is read back from its log. Each repeat has
a fresh server; with `--before REV` the server as it was at REV (with its own training function, benchmarks/server.py)
runs in turn with this checkout's, repeat by repeat, and the percentiles are over all repeats' requests.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx

from benchmarks.measurements import percentile, ratio
from benchmarks.results import Report
from benchmarks.server import ReferenceServer, start_run, wait_terminal
from benchmarks.training import run_tinygrad, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("server", "server"),
    ("phase", "phase"),
    ("endpoint", "endpoint"),
    ("requests", "requests"),
    ("errors", "non-200"),
    ("p50_ms", "p50 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("max_ms", "max (ms)"),
    ("server_p50_ms", "in the server: p50 (ms)"),
    ("server_p99_ms", "in the server: p99 (ms)"),
    ("bytes", "response bytes"),
]
THIS = "this checkout"
COMPARED = ("p50_ms", "p99_ms", "max_ms", "server_p50_ms", "server_p99_ms")
ENDPOINTS = {"GET run status": "/api/training/runs/{}", "GET run metrics": "/api/training/runs/{}/metrics"}
#: The access log line of one of our requests: `200 GET /api/... 1.2ms rid=load-<phase>-<k>-<i>`.
_ACCESS = re.compile(r" (\d{3}) GET \S+ ([0-9.]+)ms rid=load-(\w+)-(\d+)-\d+")


async def load(
    url: str, paths: dict[str, str], rate: float, seconds: float, phase: str = "load"
) -> dict[str, dict[str, Any]]:
    """Fire GET `paths` at `rate`/s each for `seconds`; per endpoint latencies (ms), error count, last body size.
    Request i of endpoint k carries X-Request-ID `load-<phase>-<k>-<i>`."""
    results: dict[str, dict[str, Any]] = {name: {"latencies": [], "errors": 0, "bytes": 0} for name in paths}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(name: str, path: str, scheduled: float, rid: str) -> None:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.get(path, headers={"X-Request-ID": rid})
                body = await response.aread()
                ok = response.status_code == 200
                results[name]["bytes"] = len(body)
            except httpx.HTTPError:
                ok = False
            results[name]["latencies"].append((time.perf_counter() - scheduled) * 1000)
            if not ok:
                results[name]["errors"] += 1

        start = time.perf_counter() + 0.2
        n = int(rate * seconds)
        tasks = [
            asyncio.create_task(
                one(name, path, start + i / rate + k / (rate * len(paths)), f"load-{phase}-{k}-{i:05d}")
            )
            for i in range(n)
            for k, (name, path) in enumerate(paths.items())
        ]
        await asyncio.gather(*tasks)
    return results


def one_server(
    ws: Workspace, rate: float, seconds: float, steps: int, env: dict[str, str], **server: Any
) -> dict[str, Any]:
    """A fresh server: load on a finished run (idle), then on a long run while it trains (then cancelled)."""
    with ReferenceServer(ws, env=env, **server) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        done = start_run(client, dataset="fashion-mnist", model="mlp", steps=30)
        wait_terminal(client, done["run_id"])
        idle = asyncio.run(
            load(srv.url, {k: p.format(done["run_id"]) for k, p in ENDPOINTS.items()}, rate, seconds, "idle")
        )
        live = start_run(client, dataset="fashion-mnist", model="mlp", steps=steps)
        # Past the trainer's start-up: the load begins once the run has reported steps (a fixed 3-s wait before
        # 2026-12-02 cost the quick test's trainer 2 CPU-s of training that no request saw).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = client.get(f"/api/training/runs/{live['run_id']}").json()
            if run["progress"]["step"] > 0 or run["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        busy = asyncio.run(
            load(srv.url, {k: p.format(live["run_id"]) for k, p in ENDPOINTS.items()}, rate, seconds, "training")
        )
        status = client.get(f"/api/training/runs/{live['run_id']}").json()
        client.post(f"/api/training/runs/{live['run_id']}/cancel")
        wait_terminal(client, live["run_id"])
        in_server = server_times(srv.log())
    for phase, results in (("idle", idle), ("training", busy)):
        for k, name in enumerate(ENDPOINTS):
            results[name]["in_server_ms"] = in_server.get((phase, k), [])
    return {"idle": idle, "training": busy, "status_after_load": status["status"], "step": status["progress"]["step"]}


def server_times(log: str) -> dict[tuple[str, int], list[float]]:
    """The server's own time (ms) on each of our requests, by (phase, endpoint index), from its access log."""
    found: dict[tuple[str, int], list[float]] = {}
    for match in _ACCESS.finditer(log):
        found.setdefault((match.group(3), int(match.group(4))), []).append(float(match.group(2)))
    return found


def _rows(side: str, repeats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for phase in ("idle", "training"):
        for name in ENDPOINTS:
            latencies = [x for r in repeats for x in r[phase][name]["latencies"]]
            in_server = [x for r in repeats for x in r[phase][name]["in_server_ms"]]
            rows.append({
                "server": side, "phase": phase, "endpoint": name, "requests": len(latencies),
                "errors": sum(r[phase][name]["errors"] for r in repeats),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies, default=None), "bytes": repeats[-1][phase][name]["bytes"],
                "server_p50_ms": percentile(in_server, 50), "server_p99_ms": percentile(in_server, 99),
                "server_logged": len(in_server),
                "p99_each_ms": [percentile(r[phase][name]["latencies"], 99) for r in repeats],
            })  # fmt: skip
    return rows


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 4; returns its report."""
    opts = ws.options
    report = Report("api_latency", "API latency at a fixed request rate, idle and while training", COLUMNS)
    rate, seconds = (10.0, 2.0) if opts.quick else (20.0, 10.0)
    repeats = 1 if opts.quick else opts.repeats
    # Long enough to train through the load at this checkout's pace (~500 steps/s here), cancelled after it.
    steps = 5000 if opts.quick else 30_000
    cache = ws.kernel_cache("api-cache")
    if not opts.quick:  # fill the caches: no timed run compiles
        run_tinygrad(ws, spec_for("mlp", steps=300), 0.85, env={"CACHEDB": cache})
    sides: list[tuple[str, dict[str, Any]]] = [(THIS, {"env": {"CACHEDB": cache}})]
    before_root = ws.before_root()
    if before_root is not None:
        before_cache = str(ws.scratch("api-cache-before") / "cache.db")
        run_tinygrad(ws, spec_for("mlp", steps=300), 0.85, env={"CACHEDB": before_cache}, before=True)
        sides.append((f"before ({opts.before})", {"env": {"CACHEDB": before_cache}, "code": before_root}))
    measured: dict[str, list[dict[str, Any]]] = {side: [] for side, _ in sides}
    for _ in range(repeats):
        for side, server in sides:  # in turn, repeat by repeat: the machine's load falls on both alike
            measured[side].append(one_server(ws, rate, seconds, steps, **server))
    for side, _ in sides:
        report.rows += _rows(side, measured[side])
        left = [r["status_after_load"] for r in measured[side] if r["status_after_load"] != "running"]
        if left:
            report.status = "partial"
            report.notes.append(f"{side}: the run was no longer training when the load ended ({', '.join(left)})")
    if len(sides) == 2:
        this, before = (report.rows[: len(report.rows) // 2], report.rows[len(report.rows) // 2 :])
        for a, b in zip(this, before, strict=True):
            report.rows.append({"server": "ratio this / before", "phase": a["phase"], "endpoint": a["endpoint"],
                                **{k: ratio(a[k], b[k]) for k in COMPARED}})  # fmt: skip
    report.notes += [
        f"{rate:.0f} requests/s per endpoint for {seconds:.0f} s, open loop, keep-alive connections, one client "
        f"process; latency from each request's scheduled time to its full response; {repeats} repeat(s) per server, "
        "each on a fresh server, percentiles over all their requests. Target: p99 < 15 ms while training.",
        f"'training': an mlp run of {steps} steps, measured once it has reported its first steps (then cancelled); "
        "'idle': a finished 30-step run.",
    ]
    if before_root is not None:
        report.notes.append(
            f"before ({opts.before}): that revision's server and training function (it ran trainers at the "
            "server's own priority; this checkout runs them at nice 10)."
        )
    report.details = {side: runs for side, runs in measured.items()}
    return report
