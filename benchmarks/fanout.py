"""Benchmark 3: SSE fan-out to 1, 100 and 1,000 subscribers of one live run.

All subscribers live in ONE client process: raw asyncio streams (no HTTP library per event), HTTP/1.1 with chunked
decoding and the suite's WHATWG decoder (trainer_conformance.raw_stream, shared with scripts/load_sse.py). They
subscribe to the live feed (`GET /api/events/training`, every run, live only) before the run is POSTed, so every
event they see is live. Latency = arrival at the client (time.time()) minus the
event's `time` (the moment the server recorded it), same host clock. The client shares the 2 cores with the server
and the trainer: at 1,000 subscribers its own CPU is part of what the latency shows (its CPU time is reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from trainer_conformance.raw_stream import RawEventStream
from trainer_conformance.sse import ServerSentEvent

from benchmarks.measurements import percentile
from benchmarks.results import Report
from benchmarks.server import ReferenceServer, wait_terminal
from benchmarks.training import run_tinygrad, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("subscribers", "subscribers"),
    ("events", "events per subscriber"),
    ("complete", "all got every event"),
    ("p50_ms", "latency p50 (ms)"),
    ("p99_ms", "latency p99 (ms)"),
    ("max_ms", "max (ms)"),
    ("deliveries_per_s", "deliveries/s"),
    ("server_cpu", "server CPU s / s"),
    ("server_rss_mib", "server RSS (MiB)"),
    ("client_cpu", "client CPU s / s"),
]

_times: dict[str, float] = {}


def event_time(stamp: str) -> float:
    """Epoch seconds of an RFC 3339 UTC stamp (`...Z`), cached: every subscriber sees the same stamps."""
    value = _times.get(stamp)
    if value is None:
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in stamp else "%Y-%m-%dT%H:%M:%SZ"
        value = _times[stamp] = datetime.strptime(stamp, fmt).replace(tzinfo=UTC).timestamp()
    return value


class Subscriber:
    """One SSE connection to the live feed: every event's latency, done at the first `end`."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.runs: set[str] = set()
        self.latencies: list[float] = []
        self.arrivals: list[float] = []
        self.ids: set[int] = set()
        self.ended = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.error: str | None = None

    async def run(self) -> None:
        """Connect, read the response head, then take events until `end` of our run or the connection closes."""
        try:
            stream = await RawEventStream.open(self.host, self.port, self.path)
        except (OSError, asyncio.IncompleteReadError) as e:
            self.error = f"connect: {e}"
            self.subscribed.set()
            return
        try:
            if stream.status != 200:
                self.error = stream.status_line
                return
            self.subscribed.set()
            async for arrived, event in stream.events():
                self._event(event, arrived)
                if self.ended.is_set():
                    return
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            self.error = self.error or f"{type(e).__name__}: {e}"
        finally:
            self.subscribed.set()
            await stream.close()

    def _event(self, sse: ServerSentEvent, arrived: float) -> None:
        # Every event counts: the live feed carries only the one run POSTed while we listen, and its first events
        # can arrive before the POST's answer tells us its id (checked afterwards).
        event = json.loads(sse.data)
        self.runs.add(str(event.get("run_id")))
        self.latencies.append(arrived - event_time(event["time"]))
        self.arrivals.append(arrived)
        self.ids.add(int(event["id"]))
        if event.get("type") == "end":
            self.ended.set()


async def fan_out(url: str, n: int, request: dict[str, Any], server: ReferenceServer) -> dict[str, Any]:
    """Subscribe `n` clients to the live feed, POST one run, collect every subscriber's latencies."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    subs = [Subscriber(host, port, "/api/events/training") for _ in range(n)]
    tasks = [asyncio.create_task(s.run()) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.subscribed.wait() for s in subs)), 120)
    refused = [s.error for s in subs if s.error]
    usage0, cpu0, t0 = server.usage(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        response = await client.post("/api/training/runs", json=request)
        response.raise_for_status()
        run_id = response.json()["run_id"]
    live = [s for s in subs if not s.error]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.ended.wait() for s in live)), 600)
    wall = time.perf_counter() - t0
    usage1, cpu1 = server.usage(), resource.getrusage(resource.RUSAGE_SELF)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [x for s in live for x in s.latencies]
    arrivals = [x for s in live for x in s.arrivals]
    expected = max((max(s.ids) for s in live if s.ids), default=0)
    span = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else None
    return {
        "subscribers": n,
        "refused": len(refused),
        "refusals": refused[:3],
        "events": expected,
        "complete": all(len(s.ids) == expected and s.runs == {run_id} for s in live) and not refused,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "deliveries": len(latencies),
        "deliveries_per_s": len(latencies) / span if span else None,
        "server_cpu": (usage1["cpu_s"] - usage0["cpu_s"]) / wall,
        "server_rss_mib": usage1["rss_mib"],
        "server_peak_rss_mib": usage1["peak_rss_mib"],
        "client_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall,
        "wall_s": wall,
        "run_id": run_id,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 3; returns its report."""
    opts = ws.options
    report = Report("fanout", "SSE fan-out: delivery latency with 1, 100 and 1,000 subscribers", COLUMNS)
    counts = (1, 10) if opts.quick else opts.sse_subscribers
    steps = 100 if opts.quick else 1500
    request = {"dataset": "fashion-mnist", "model": "mlp", "steps": steps}
    cache = str(ws.scratch("fanout-cache") / "cache.db")
    run_tinygrad(ws, spec_for("mlp", steps=steps), 0.85, env={"CACHEDB": cache})
    limit = str(max(counts) + 10)
    server = ReferenceServer(ws, env={"CACHEDB": cache}, args=["--max-sse-subscribers", limit])
    with server, httpx.Client(base_url=server.url, timeout=60) as client:
        for n in counts:
            row = asyncio.run(fan_out(server.url, n, request, server))
            wait_terminal(client, row["run_id"])
            report.rows.append(row)
            if row["refused"]:
                report.status = "partial"
                report.notes.append(f"{n} subscribers: {row['refused']} refused, e.g. {row['refusals'][:1]}")
    report.notes += [
        f"One live run (mlp, {steps} steps, metric every 10 steps) per line; subscribers joined the live feed "
        f"before the POST. The server ran with --max-sse-subscribers {limit} (its default is 500).",
        "Latency: client arrival minus the event's `time` (when the server recorded it), over every (subscriber, "
        "event) pair. Target: p99 < 50 ms with 1,000 subscribers.",
        "CPU s / s: CPU seconds per wall second over the run (1.0 = one core busy); the trainer uses most of one "
        "core, so at 1,000 subscribers server and client compete for what is left of the 2 cores.",
    ]
    return report
