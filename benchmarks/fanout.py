"""Benchmark 3: SSE fan-out to 1, 10, 100, 1,000 and 2,000 subscribers of one live run.

All subscribers live in ONE client process: bare sockets read by the event loop's reader callbacks, no HTTP library
and no coroutine per event (trainer_conformance.raw_stream.EventReceiver), HTTP/1.1 with chunked decoding and the
suite's WHATWG decoder, whose work the subscribers share (`SharedDecoding`: a decoder fed the bytes another was fed
in the same state takes its result). A client of a coroutine per subscription, decoding every copy (`RawEventStream`,
as scripts/load_sse.py holds them), measured mostly itself at 1,000 subscribers on these two cores (BENCHMARKS.md,
section 3: the same server, the two clients alternated). They
subscribe to the live feed (`GET /api/events/training`, every run, live only) before the run is POSTed, so every
event they see is live. Latency = arrival at the client (time.time()) minus the event's `time` (the moment the server
recorded it), same host clock. The client shares the 2 cores with the server and the trainer: at 1,000 subscribers
its own CPU is part of what the latency shows (its CPU time is reported).

Each row has a fresh server, so its memory per subscriber is its own: resident memory with every subscriber
connected, less resident memory just before they connected, divided by their number. With `--before REV` the server
as it was at REV (with its own training function, see benchmarks/server.py) runs beside this checkout's at each
count, interleaved, and a ratio row follows. With FANOUT_PROFILE=FILE one more row (1,000 subscribers, this
checkout) runs under cProfile (benchmarks/profiled_server.py): the stats go to FILE and the top of them into the
results; that row is not in the table (cProfile slows what it measures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pstats
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from trainer_conformance.raw_stream import EventReceiver
from trainer_conformance.sse import ServerSentEvent, SharedDecoding

from benchmarks.measurements import percentile, ratio
from benchmarks.results import Report
from benchmarks.server import ReferenceServer, wait_terminal
from benchmarks.training import run_tinygrad, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("server", "server"),
    ("subscribers", "subscribers"),
    ("events", "events per subscriber"),
    ("events_per_s", "events/s (run)"),
    ("complete", "all got every event"),
    ("p50_ms", "latency p50 (ms)"),
    ("p99_ms", "latency p99 (ms)"),
    ("max_ms", "max (ms)"),
    ("deliveries_per_s", "deliveries/s"),
    ("server_cpu", "server CPU s / s"),
    ("server_us_per_delivery", "server CPU per delivery (us)"),
    ("client_us_per_delivery", "client CPU per delivery (us)"),
    ("kib_per_subscriber", "server RSS per subscriber (KiB)"),
    ("server_rss_mib", "server RSS (MiB)"),
    ("client_cpu", "client CPU s / s"),
]
#: Ratio rows compare these (this checkout / before).
COMPARED = (
    "p50_ms",
    "p99_ms",
    "max_ms",
    "server_cpu",
    "server_us_per_delivery",
    "kib_per_subscriber",
    "server_rss_mib",
)
#: Connections opened at once: a burst of 2,000 would overflow the listen backlog and wait out SYN retries.
CONNECTING = 100
THIS = "this checkout"

_times: dict[str, float] = {}
#: Each event's data parsed once: every subscriber receives the same data, and json.loads per delivery was a good part
#: of the client's CPU at 1,000 subscribers.
_parsed: dict[str, tuple[str, int, str, float]] = {}


def event_time(stamp: str) -> float:
    """Epoch seconds of an RFC 3339 UTC stamp (`...Z`), cached: every subscriber sees the same stamps."""
    value = _times.get(stamp)
    if value is None:
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in stamp else "%Y-%m-%dT%H:%M:%SZ"
        value = _times[stamp] = datetime.strptime(stamp, fmt).replace(tzinfo=UTC).timestamp()
    return value


class Subscriber:
    """One SSE connection to the live feed: every event's latency, done at the first `end`."""

    def __init__(self, host: str, port: int, path: str, shared: SharedDecoding) -> None:
        self.host, self.port, self.path = host, port, path
        self.shared = shared
        self.runs: set[str] = set()
        self.latencies: list[float] = []
        self.arrivals: list[float] = []
        self.ids: set[int] = set()
        self.ended = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.error: str | None = None

    async def run(self, connecting: asyncio.Semaphore) -> None:
        """Connect, read the response head, then take events until `end` of our run or the connection closes."""
        try:
            async with connecting:
                receiver = await EventReceiver.open(self.host, self.port, self.path, self._event, shared=self.shared)
        except OSError as e:
            self.error = f"connect: {e}"
            self.subscribed.set()
            return
        try:
            if receiver.status != 200:
                self.error = receiver.status_line
                return
            self.subscribed.set()
            # Until `end` of our run, or the body ends or breaks (then its error is raised here).
            ended: asyncio.Future[Any] = asyncio.ensure_future(self.ended.wait())
            try:
                await asyncio.wait({receiver.done, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
            if receiver.done.done():
                receiver.done.result()
        except (OSError, ValueError) as e:
            self.error = self.error or f"{type(e).__name__}: {e}"
        finally:
            self.subscribed.set()
            receiver.close()

    def _event(self, arrived: float, sse: ServerSentEvent) -> None:
        # Every event counts: the live feed carries only the one run POSTed while we listen, and its first events
        # can arrive before the POST's answer tells us its id (checked afterwards).
        parsed = _parsed.get(sse.data)
        if parsed is None:
            event = json.loads(sse.data)
            parsed = _parsed[sse.data] = (
                str(event.get("run_id")),
                int(event["id"]),
                event["type"],
                event_time(event["time"]),
            )
        run_id, event_id, kind, stamped = parsed
        self.runs.add(run_id)
        self.latencies.append(arrived - stamped)
        self.arrivals.append(arrived)
        self.ids.add(event_id)
        if kind == "end":
            self.ended.set()


async def fan_out(url: str, n: int, request: dict[str, Any], server: ReferenceServer) -> dict[str, Any]:
    """Subscribe `n` clients to the live feed, POST one run, collect every subscriber's latencies."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle = server.usage()
    shared = SharedDecoding()  # every subscriber reads the same stream: each piece of it is decoded once
    subs = [Subscriber(host, port, "/api/events/training", shared) for _ in range(n)]
    connecting = asyncio.Semaphore(CONNECTING)
    tasks = [asyncio.create_task(s.run(connecting)) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.subscribed.wait() for s in subs)), 180)
    refused = [s.error for s in subs if s.error]
    await asyncio.sleep(0.5)  # let the server settle what it set up for the last ones
    subscribed = server.usage()
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
    server_cpu_s = usage1["cpu_s"] - usage0["cpu_s"]
    client_cpu_s = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [x for s in live for x in s.latencies]
    arrivals = [x for s in live for x in s.arrivals]
    expected = max((max(s.ids) for s in live if s.ids), default=0)
    span = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else None
    # The run's own pace: its events' server times (arrival less latency), first to last, as one subscriber saw them.
    stamps = [a - lat for a, lat in zip(live[0].arrivals, live[0].latencies, strict=True)] if live else []
    run_span = max(stamps) - min(stamps) if len(stamps) > 1 else None
    return {
        "subscribers": n,
        "refused": len(refused),
        "refusals": refused[:3],
        "events": expected,
        "events_per_s": (len(stamps) - 1) / run_span if run_span else None,
        "complete": all(len(s.ids) == expected and s.runs == {run_id} for s in live) and not refused,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "deliveries": len(latencies),
        "deliveries_per_s": len(latencies) / span if span else None,
        "server_cpu": server_cpu_s / wall,
        # Per delivery (one event to one subscriber): what a run's event rate does not change.
        "server_us_per_delivery": server_cpu_s / len(latencies) * 1e6 if latencies else None,
        "client_us_per_delivery": client_cpu_s / len(latencies) * 1e6 if latencies else None,
        "server_rss_idle_mib": idle["rss_mib"],
        "server_rss_subscribed_mib": subscribed["rss_mib"],
        "kib_per_subscriber": (subscribed["rss_mib"] - idle["rss_mib"]) * 1024 / n,
        "server_rss_mib": usage1["rss_mib"],
        "server_peak_rss_mib": usage1["peak_rss_mib"],
        "client_cpu": client_cpu_s / wall,
        "wall_s": wall,
        "run_id": run_id,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def one_row(
    ws: Workspace, side: str, n: int, request: dict[str, Any], env: dict[str, str], **server: Any
) -> dict[str, Any]:
    """A fresh server (this checkout's, or `code`'s), `n` subscribers, one run; the row."""
    with ReferenceServer(ws, env=env, args=["--max-sse-subscribers", str(n + 10)], **server) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            row = asyncio.run(fan_out(srv.url, n, request, srv))
            wait_terminal(client, row["run_id"])
        row["server_log_head"] = next((line for line in srv.log().splitlines() if "listening on" in line), "")
    return {"server": side, **row}


def ratio_row(n: int, this: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """this / before for the compared columns."""
    return {"server": "ratio this / before", "subscribers": n, **{k: ratio(this[k], before[k]) for k in COMPARED}}


def profile_summary(path: Path, top: int = 20) -> dict[str, Any]:
    """The `top` functions by own time from a cProfile stats file, and the total."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({name})", "calls": calls, "own_s": own,
                     "cumulative_s": cumulative})  # fmt: skip
    rows.sort(key=lambda r: -r["own_s"])
    return {"total_s": total, "top_by_own_time": rows[:top]}


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 3; returns its report."""
    opts = ws.options
    title = "SSE fan-out: delivery latency and memory with 1 to 2,000 subscribers"
    report = Report("fanout", title, COLUMNS)
    counts = (1, 10) if opts.quick else opts.sse_subscribers
    steps = 100 if opts.quick else 1500
    request = {"dataset": "fashion-mnist", "model": "mlp", "steps": steps}
    sides: list[tuple[str, dict[str, Any], dict[str, str]]] = []
    cache = ws.kernel_cache("fanout-cache")
    if not opts.quick:  # fill the caches: no timed run compiles
        run_tinygrad(ws, spec_for("mlp", steps=steps), 0.85, env={"CACHEDB": cache})
    sides.append((THIS, {}, {"CACHEDB": cache}))
    before_root = ws.before_root()
    if before_root is not None:
        before_cache = str(ws.scratch("fanout-cache-before") / "cache.db")
        run_tinygrad(ws, spec_for("mlp", steps=steps), 0.85, env={"CACHEDB": before_cache}, before=True)
        sides.append((f"before ({opts.before})", {"code": before_root}, {"CACHEDB": before_cache}))
    for n in counts:
        by_side = {}
        for side, server, env in sides:  # interleaved at each count: the machine's load falls on both alike
            row = one_row(ws, side, n, request, env, **server)
            by_side[side] = row
            report.rows.append(row)
            if row["refused"]:
                report.status = "partial"
                report.notes.append(f"{side}, {n} subscribers: {row['refused']} refused, e.g. {row['refusals'][:1]}")
        if len(by_side) == 2:
            report.rows.append(ratio_row(n, *by_side.values()))
    profile_to = os.environ.get("FANOUT_PROFILE")
    if profile_to:
        n = 1000 if not opts.quick else max(counts)
        row = one_row(ws, f"{THIS}, under cProfile", n, request, {"CACHEDB": cache}, profile=Path(profile_to))
        report.details["profile"] = {"subscribers": n, "row": row, **profile_summary(Path(profile_to))}
        report.notes.append(f"profile: {n} subscribers under cProfile (not in the table): p99 {row['p99_ms']:.0f} ms; "
                            f"stats in {profile_to}, the top 20 by own time in the JSON")  # fmt: skip
    report.notes += [
        f"One live run (mlp, {steps} steps, metric every 10 steps) per line, a fresh server for each; subscribers "
        "joined the live feed before the POST. Each server ran with --max-sse-subscribers N+10 (the default is 500).",
        "Latency: client arrival minus the event's `time` (when the server recorded it), over every (subscriber, "
        "event) pair. Target: p99 < 100 ms with 1,000 subscribers, every subscriber gets every event.",
        "RSS per subscriber: the server's resident memory with every subscriber connected (0.5 s after the last "
        "one's response head) less just before they connected, over their number.",
        "CPU s / s: CPU seconds per wall second over the run (1.0 = one core busy); the trainer uses most of one "
        "core, so at 1,000 subscribers server and client compete for what is left of the 2 cores.",
    ]
    if before_root is not None:
        report.notes.append(
            f"before ({opts.before}): that revision's server (reference_server/ and schemas/ exported with git "
            "archive), which starts that revision's training function: its runs emit the same events at its own "
            "pace (events/s column)."
        )
    return report
