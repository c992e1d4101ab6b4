#!/usr/bin/env python3
"""Load: 200 concurrent SSE subscribers and steady API polling on one live run, for 60 s, on loopback.

    .venv/bin/python scripts/load_sse.py [--subscribers 200] [--seconds 60] [--pollers 4] [--data-dir DIR]

Starts its own reference server (127.0.0.1, a free port, a temporary evidence folder), starts one real training run,
opens the subscribers (raw sockets through trainer_conformance.raw_stream, the suite's WHATWG decoder, so the client
costs little CPU), polls the API
from a few clients, then cancels the run: the server sends `end` and closes every stream. Pass means:

- no subscriber and no poll saw an error or a non-200 answer;
- every subscriber received the run's whole log (metrics.jsonl, fetched from the evidence API), every event in order;
- the server's open file count returned to its idle baseline, and its RSS to within --rss-tolerance-mib of it.

Bounded: it stops by itself (the hold, then at most --drain-s for the streams to end); exit 0 on pass, 1 otherwise.
Needs Fashion-MNIST verified in the data cache (`make setup`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from trainer_conformance.raw_stream import RawEventStream
from trainer_conformance.sse import ServerSentEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tooling/ lives at the repository root

from tooling.launcher import LaunchError, launch, open_fds, rss_kib

REPO = Path(__file__).resolve().parents[1]


# ----- the server under load -----
@dataclass
class Server:
    """`python -m reference_server` on 127.0.0.1 and a free port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        """Resident set size, KiB."""
        return rss_kib(self.proc.pid)

    def open_files(self) -> int:
        """Open file descriptors."""
        return open_fds(self.proc.pid)


def start_server(root: Path, data_dir: Path | None, subscribers: int) -> Server:
    args = ["--evidence-dir", str(root / "evidence"), "--work-dir", str(root / "work")]
    args += ["--max-sse-subscribers", str(subscribers + 50)]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    env = {**os.environ, "MOCKS_DISABLED": "1", "DEV": os.environ.get("DEV", "CPU")}
    try:
        launched = launch(args, log_path=root / "server.log", env=env, cwd=REPO)
    except LaunchError as err:
        raise SystemExit(str(err)) from None
    port = urlsplit(launched.url).port
    assert port is not None
    return Server(launched.proc, port, launched.log_path)


# ----- subscribers -----
@dataclass
class Subscriber:
    """One event-stream connection and what it received."""

    index: int
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    error: str | None = None
    status: int | None = None
    closed_by_server: bool = False
    connected_at: float = 0.0
    first_event_after_s: float | None = None


async def subscribe(sub: Subscriber, port: int, run_id: str) -> None:
    """GET the run's stream and decode SSE until the server ends it."""
    headers = {"X-Request-ID": f"load-sse-{sub.index:04d}"}
    sub.connected_at = time.monotonic()
    try:
        stream = await RawEventStream.open("127.0.0.1", port, f"/api/events/training?run_id={run_id}", headers=headers)
    except (OSError, asyncio.IncompleteReadError) as exc:
        sub.error = f"connect: {exc}"
        return
    try:
        sub.status = stream.status
        if sub.status != 200 or "chunked" not in stream.headers.get("transfer-encoding", "").lower():
            sub.error = f"answer {stream.head[:200]!r}"
            return
        async for _, event in stream.events():
            _dispatch(sub, event)
        sub.closed_by_server = True
    except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
        sub.error = f"{type(exc).__name__}: {exc}"
    finally:
        await stream.close()


def _dispatch(sub: Subscriber, event: ServerSentEvent) -> None:
    if sub.first_event_after_s is None:
        sub.first_event_after_s = time.monotonic() - sub.connected_at
    sub.events.append(json.loads(event.data))
    sub.ids.append(event.id)


# ----- pollers -----
@dataclass
class Polls:
    """What the polling clients saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def poll(polls: Polls, url: str, run_id: str, stop: asyncio.Event, interval_s: float) -> None:
    paths = [
        f"/api/training/runs/{run_id}",
        f"/api/training/runs/{run_id}/metrics?limit=1000",
        "/api/training/runs?limit=5",
        f"/api/training/runs/{run_id}/checkpoints",
        "/metrics",
        "/healthz",
    ]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            start = time.monotonic()
            try:
                response = await client.get(path)
                if response.status_code != 200:
                    polls.errors.append(f"{path}: {response.status_code}")
            except httpx.HTTPError as exc:
                polls.errors.append(f"{path}: {type(exc).__name__}: {exc}")
            polls.latencies_ms.append((time.monotonic() - start) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


# ----- the run -----
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def subscriber_gauge(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(r"^trainer_sse_subscribers (\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else -1


async def run_load(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Every round against one server, all measured against the idle baseline taken before the first."""
    # Idle baseline, after a few requests so one-time imports and caches are already in it.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for path in ("/healthz", "/api/training/runs", "/metrics", "/api/datasets", "/openapi.json"):
            (await client.get(path)).raise_for_status()
    await asyncio.sleep(1)
    baseline = {"rss_kib": server.rss_kib(), "open_files": server.open_files()}
    rounds = [await run_round(server, args, baseline) for _ in range(args.rounds)]
    after_mib = [round(r["server"]["after"]["rss_kib"] / 1024, 1) for r in rounds]
    # Growth that a later round does not repeat is allocator high-water, not a leak: judge the last rounds' slope.
    slope = after_mib[-1] - after_mib[1] if len(after_mib) > 2 else 0.0
    return {
        "rounds": rounds,
        "rss_after_mib_by_round": after_mib,
        "rss_baseline_mib": round(baseline["rss_kib"] / 1024, 1),
        "pass": all(r["pass"] for r in rounds) and slope <= args.rss_tolerance_mib / 4,
    }


async def run_round(server: Server, args: argparse.Namespace, baseline: dict[str, int]) -> dict[str, Any]:
    """One live run, the subscribers and pollers for the hold, the cancel, and the checks."""
    url = server.url

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"steps": 1_000_000, "log_every": args.log_every, "checkpoint_every": 5000, "eval_samples": 500}
        created = await client.post("/api/training/runs", json=body)
        created.raise_for_status()
        run_id = created.json()["run_id"]

    subs = [Subscriber(i) for i in range(args.subscribers)]
    tasks = []
    for start in range(0, len(subs), 50):  # in batches, so the listen backlog never overflows
        tasks += [asyncio.create_task(subscribe(s, server.port, run_id)) for s in subs[start : start + 50]]
        await asyncio.sleep(0.2)
    stop = asyncio.Event()
    polls = Polls()
    pollers = [asyncio.create_task(poll(polls, url, run_id, stop, args.poll_interval_s)) for _ in range(args.pollers)]
    hold_start = time.monotonic()
    peak = dict(baseline)
    gauge_peak = 0
    while time.monotonic() - hold_start < args.seconds:
        await asyncio.sleep(1)
        peak["rss_kib"] = max(peak["rss_kib"], server.rss_kib())
        peak["open_files"] = max(peak["open_files"], server.open_files())
        if int(time.monotonic() - hold_start) % 10 == 0:
            gauge_peak = max(gauge_peak, await asyncio.to_thread(subscriber_gauge, url))
    stop.set()
    await asyncio.gather(*pollers)
    hold_s = time.monotonic() - hold_start

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        (await client.post(f"/api/training/runs/{run_id}/cancel")).raise_for_status()
        _done, pending = await asyncio.wait(tasks, timeout=args.drain_s)
        for task in pending:
            task.cancel()
        log_text = (await client.get(f"/api/training/runs/{run_id}/evidence/metrics.jsonl")).text
        final = (await client.get(f"/api/training/runs/{run_id}")).json()
    logged = [json.loads(line) for line in log_text.splitlines()]

    # Back to idle: no subscribers, no trainer; then measure.
    deadline = time.monotonic() + 30
    while subscriber_gauge(url) != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    after = {"rss_kib": server.rss_kib(), "open_files": server.open_files()}

    complete = [s for s in subs if s.events == logged and s.ids == [str(e["id"]) for e in logged]]
    failed = [s for s in subs if s.error or not s.closed_by_server]
    first_event = [s.first_event_after_s * 1000 for s in subs if s.first_event_after_s is not None]
    rss_delta_mib = (after["rss_kib"] - baseline["rss_kib"]) / 1024
    result = {
        "subscribers": args.subscribers,
        "hold_s": round(hold_s, 1),
        "run": {"status": final["status"], "steps": final["progress"]["step"], "events": len(logged)},
        "frames_delivered": sum(len(s.events) for s in subs),
        "subscribers_with_every_event_in_order": len(complete),
        "subscriber_errors": [f"#{s.index}: {s.error or 'not closed by the server'}" for s in failed][:10],
        "subscriber_gauge_peak": gauge_peak,
        "first_event_ms": {"p50": round(percentile(first_event, 0.5), 1), "max": round(max(first_event or [0]), 1)},
        "polls": {
            "requests": len(polls.latencies_ms),
            "errors": polls.errors[:10],
            "error_count": len(polls.errors),
            "latency_ms": {
                "p50": round(percentile(polls.latencies_ms, 0.5), 1),
                "p99": round(percentile(polls.latencies_ms, 0.99), 1),
                "mean": round(statistics.fmean(polls.latencies_ms), 1) if polls.latencies_ms else None,
            },
        },
        "server": {"baseline": baseline, "peak": peak, "after": after, "rss_delta_mib": round(rss_delta_mib, 1)},
    }
    result["pass"] = (
        len(complete) == args.subscribers
        and not failed
        and not polls.errors
        and final["status"] == "cancelled"
        and after["open_files"] <= baseline["open_files"]
        and rss_delta_mib <= args.rss_tolerance_mib
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the subscribers and pollers hold")
    parser.add_argument("--pollers", type=int, default=4, help="polling clients")
    parser.add_argument("--poll-interval-s", type=float, default=0.25, help="pause between one poller's requests")
    parser.add_argument("--log-every", type=int, default=20, help="the run's log_every (events per step)")
    parser.add_argument("--drain-s", type=float, default=60.0, help="longest wait for the streams to end")
    parser.add_argument("--rss-tolerance-mib", type=float, default=16.0, help="RSS growth still counted as baseline")
    parser.add_argument("--data-dir", type=Path, help="dataset cache (default: the server's default)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole cycle on the same server")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (evidence, server log)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="load-sse-"))
    server = start_server(root, args.data_dir, args.subscribers)
    try:
        result = asyncio.run(run_load(server, args))
    finally:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.keep:
        print(f"kept: {root}", file=sys.stderr)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
