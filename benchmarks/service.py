"""Benchmark 2: service overhead, the same run through the HTTP service vs the training function called directly.

Direct: `python -m trainer_tinygrad train` with the config the service would resolve, spawn to exit. Service: POST
the run to a reference server, follow its event stream, stop the clock at the `end` event. Both share one kernel
cache, warmed first; runs interleave, medians of the repeats; ratio = service / direct.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from trainer_conformance.sse import SSEDecoder

from benchmarks.measurements import median, ratio
from benchmarks.results import Report
from benchmarks.server import ReferenceServer, start_run
from benchmarks.training import run_tinygrad, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("path", "path"),
    ("wall_s", "run wall (s)"),
    ("samples_per_s", "train samples/s (trainer's own)"),
    ("vs_direct", "vs direct"),
    ("runs", "runs"),
]


def follow_to_end(client: httpx.Client, run_id: str, timeout: float = 600) -> tuple[float, list[dict[str, Any]]]:
    """Read the run's event stream until `end`; (perf_counter at `end`, every event's data object)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    decoder = SSEDecoder()
    with client.stream("GET", "/api/events/training", params={"run_id": run_id}, timeout=timeout) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            for sse in decoder.feed(chunk):
                event = json.loads(sse.data)
                events.append(event)
                if event.get("type") == "end":
                    return time.perf_counter(), events
            if time.monotonic() > deadline:
                break
    raise TimeoutError(f"no end event for {run_id}")


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 2; returns its report."""
    opts = ws.options
    report = Report("service", "Service overhead: a run through the HTTP service vs the training function", COLUMNS)
    steps = 100 if opts.quick else 1500
    repeats = 1 if opts.quick else opts.repeats
    request = {"dataset": "fashion-mnist", "model": "mlp", "steps": steps}
    config = spec_for("mlp", steps=steps)
    cache = str(ws.scratch("service-cache") / "cache.db")
    run_tinygrad(ws, config, 0.85, env={"CACHEDB": cache})  # warm the kernel cache for both paths
    direct_wall: list[float] = []
    direct_sps: list[float] = []
    service_wall: list[float] = []
    service_sps: list[float] = []
    with ReferenceServer(ws, env={"CACHEDB": cache}) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(repeats):
            d = run_tinygrad(ws, config, 0.85, env={"CACHEDB": cache})
            direct_wall.append(d.wall_s)
            direct_sps.append(d.reported_samples_per_s or 0)
            t0 = time.perf_counter()
            run = start_run(client, **request)
            t_end, events = follow_to_end(client, run["run_id"])
            service_wall.append(t_end - t0)
            rates = [e["data"]["samples_per_second"] for e in events if e["type"] == "metric"]
            service_sps.append(median(rates[1:]) or 0)
        final = client.get(f"/api/training/runs/{run['run_id']}").json()
    report.rows = [
        {"path": "training function, direct", "wall_s": median(direct_wall), "samples_per_s": median(direct_sps),
         "runs": repeats},
        {"path": "through the HTTP service", "wall_s": median(service_wall), "samples_per_s": median(service_sps),
         "vs_direct": ratio(median(service_wall), median(direct_wall)), "runs": repeats},
    ]  # fmt: skip
    report.notes += [
        f"mlp, {steps} steps of 128 on Fashion-MNIST (the service's defaults otherwise), warm kernel cache; "
        f"medians of {repeats} interleaved runs. Target: overhead <= 5% (vs direct <= 1.05).",
        "Direct wall: spawn to exit of `python -m trainer_tinygrad train`. Service wall: POST to the `end` event on "
        "the run's SSE stream (includes spawning the same process, evidence writing and checkpoint moves).",
        "Samples/s: the trainer's own samples_per_second in its metric events, both paths (median, first window "
        "left out).",
        f"last service run ended {final.get('status')}",
    ]
    report.details = {
        "direct_wall_s": direct_wall, "service_wall_s": service_wall,
        "direct_samples_per_s": direct_sps, "service_samples_per_s": service_sps, "request": request,
    }  # fmt: skip
    return report
