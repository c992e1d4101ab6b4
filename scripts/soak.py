"""Soak: many short runs in sequence while hundreds of subscribers connect, read every event, and leave. Does the
server's memory and file-descriptor count come back, run after run?

    .venv/bin/python scripts/soak.py [--runs 100] [--subscribers 200] [--tolerance-mib 4] [--out build/soak]

Its own server on 127.0.0.1 (event-log cache of 8 ended runs, so most of the logs leave memory during the soak).
Each run: 20 steps; `--subscribers` raw connections to its event stream from the start, each reading to the server's
`end`; then the server's RSS and open file descriptors are sampled (after a short settle). Pass means: every
subscriber got every event of its run (ids 1..N, `end` last, closed by the server); open file descriptors are back
to the baseline after every run; and over the last half of the runs the RSS trend (least-squares slope times the
number of runs) stays within `--tolerance-mib`. Bounded: it stops after `--runs` runs (about 7 minutes for 100 here).
Writes results.json into `--out`; exit 0 on pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from trainer_conformance.raw_stream import RawEventStream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tooling/ lives at the repository root

from tooling.launcher import LaunchedServer, LaunchError, launch

REPO = Path(__file__).resolve().parents[1]
RUN = {"steps": 20, "log_every": 5, "checkpoint_every": 10, "eval_samples": 100}


async def read_all(port: int, run_id: str) -> tuple[list[int], bool]:
    """The ids of every event of a run's stream, and whether the server ended it."""
    stream = await RawEventStream.open("127.0.0.1", port, f"/api/events/training?run_id={run_id}")
    ids: list[int] = []
    try:
        if stream.status != 200:
            return ids, False
        async for _, event in stream.events():
            ids.append(int(event.id or 0))
        return ids, stream.closed_by_server
    finally:
        await stream.close()


async def one_run(server: LaunchedServer, port: int, subscribers: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        run = (await client.post("/api/training/runs", json=RUN)).json()
        readers = [asyncio.create_task(read_all(port, run["run_id"])) for _ in range(subscribers)]
        results = await asyncio.gather(*readers, return_exceptions=True)
        final = (await client.get(f"/api/training/runs/{run['run_id']}")).json()
    expected = list(range(1, len(next((r[0] for r in results if isinstance(r, tuple)), [])) + 1))
    complete = sum(isinstance(r, tuple) and r[0] == expected and r[1] for r in results)
    return {"run_id": run["run_id"], "status": final["status"], "events": len(expected), "complete": complete}


def trend_kib(values: list[int]) -> float:
    """Least-squares slope of `values` against their index, times their count: the growth a line fit says."""
    xs = range(len(values))
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return slope * len(values)


async def soak(server: LaunchedServer, args: argparse.Namespace) -> dict[str, Any]:
    port = urlsplit(server.url).port
    assert port is not None
    baseline = {"rss_kib": server.rss_kib(), "open_fds": server.open_fds()}
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    for index in range(args.runs):
        result = await one_run(server, port, args.subscribers)
        await asyncio.sleep(0.5)  # let the last connections close
        result |= {"index": index, "rss_kib": server.rss_kib(), "open_fds": server.open_fds()}
        samples.append(result)
        print(
            f"soak: run {index + 1}/{args.runs} {result['status']}, {result['complete']}/{args.subscribers} "
            f"complete, RSS {result['rss_kib'] / 1024:.1f} MiB, fds {result['open_fds']}",
            flush=True,
        )
    tail = samples[len(samples) // 2 :]
    rss_trend = trend_kib([s["rss_kib"] for s in tail]) / 1024
    verdict = {
        "all_succeeded": all(s["status"] == "succeeded" for s in samples),
        "every_subscriber_complete": all(s["complete"] == args.subscribers for s in samples),
        "fds_back_to_baseline": all(s["open_fds"] <= baseline["open_fds"] + 2 for s in samples),
        "rss_flat": abs(rss_trend) <= args.tolerance_mib,
    }
    return {
        "runs": args.runs,
        "subscribers_per_run": args.subscribers,
        "seconds": round(time.monotonic() - started, 1),
        "baseline": baseline,
        "rss_mib": {
            "first": round(samples[0]["rss_kib"] / 1024, 1),
            "last": round(samples[-1]["rss_kib"] / 1024, 1),
            "max": round(max(s["rss_kib"] for s in samples) / 1024, 1),
            "trend_over_last_half": round(rss_trend, 2),
            "tolerance": args.tolerance_mib,
        },
        "open_fds": {"baseline": baseline["open_fds"], "max_after_a_run": max(s["open_fds"] for s in samples)},
        "verdict": verdict,
        "passed": all(verdict.values()),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--tolerance-mib", type=float, default=4.0)
    parser.add_argument("--data-dir", type=Path, help="dataset cache (default: the server's)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "soak")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    server_args = ["--evidence-dir", str(root / "evidence"), "--work-dir", str(root / "work")]
    server_args += ["--max-sse-subscribers", str(args.subscribers + 50), "--event-cache-runs", "8"]
    if args.data_dir:
        server_args += ["--data-dir", str(args.data_dir)]
    env = {**os.environ, "MOCKS_DISABLED": "1", "DEV": os.environ.get("DEV", "CPU")}
    try:
        server = launch(server_args, log_path=root / "server.log", env=env, cwd=REPO)
    except LaunchError as err:
        print(f"soak: could not start the server: {err}", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(soak(server, args))
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    rss = results["rss_mib"]
    print(
        f"soak: {'PASSED' if results['passed'] else 'FAILED'} {results['runs']} runs x {args.subscribers} subscribers "
        f"in {results['seconds']} s; RSS {rss['first']} -> {rss['last']} MiB (max {rss['max']}), trend over the last "
        f"half {rss['trend_over_last_half']} MiB (tolerance {rss['tolerance']}); open fds baseline "
        f"{results['open_fds']['baseline']}, max after a run {results['open_fds']['max_after_a_run']}; "
        f"{json.dumps(results['verdict'])}; results: {args.out / 'results.json'}"
    )
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
