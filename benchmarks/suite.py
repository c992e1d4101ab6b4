"""The benchmarks in suite order, and running them: print each table, save JSON + Markdown, refresh the summary."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import (
    api_latency,
    conformance_time,
    fanout,
    growth,
    levers,
    run_memory,
    scale,
    service,
    starts,
    step_profile,
    training,
    verification,
)
from benchmarks.machine import describe
from benchmarks.results import Report, markdown, save, utc_now, write_summary
from benchmarks.workspace import Options, Workspace


@dataclass(frozen=True)
class Benchmark:
    """One entry of the suite; `cheap` ones are what the test suite runs in `--quick` mode."""

    name: str
    summary: str
    run: Callable[[Workspace], Report]
    cheap: bool = False


BENCHMARKS = [
    Benchmark("training", "1. training throughput and time to accuracy, tinygrad vs PyTorch", training.benchmark,
              cheap=True),
    Benchmark("service", "2. the same run through the HTTP service vs the training function directly",
              service.benchmark),
    Benchmark("fanout", "3. SSE fan-out to 1-2,000 subscribers: delivery latency, memory per subscriber",
              fanout.benchmark),
    Benchmark("api_latency", "4. status and metrics request latency while a run trains", api_latency.benchmark),
    Benchmark("conformance", "5. conformance suite wall time against the local reference server",
              conformance_time.benchmark),
    Benchmark("verification", "6. dataset verification MB/s vs sha256sum", verification.benchmark, cheap=True),
    Benchmark("starts", "1b. spawn to steady training, first run and second run", starts.benchmark),
    Benchmark("growth", "8. training samples/s against batch size, tinygrad vs PyTorch", growth.benchmark),
    Benchmark("profile", "where one mlp step and one convnet step spend their time", step_profile.benchmark,
              cheap=True),
    Benchmark("levers", "the speed push: each tinygrad lever measured on the training function", levers.benchmark),
    Benchmark("scale", "1, 2 and 4 concurrent runs on the local executor and on Ray", scale.benchmark),
    Benchmark("memory", "9. server memory with 0, 100, 500 and 1,000 finished runs in its evidence folder",
              run_memory.benchmark),
]  # fmt: skip
ORDER = [b.name for b in BENCHMARKS]


def select(names: list[str]) -> list[Benchmark]:
    """The benchmarks named (all of them for none); ValueError names an unknown one."""
    if not names:
        return list(BENCHMARKS)
    by_name = {b.name: b for b in BENCHMARKS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    return [by_name[n] for n in names]


def run(selected: list[Benchmark], options: Options, out_dir: Path) -> int:
    """Run `selected` in order; each prints its table and is saved. Returns 0 when none failed outright."""
    machine = describe()
    print(f"# machine: {machine['summary']}\n# results: {out_dir}", flush=True)
    failures = 0
    ws = Workspace(options)
    try:
        for bench in selected:
            started, t = utc_now(), time.perf_counter()
            print(f"\n## {bench.name}: {bench.summary}", flush=True)
            try:
                report = bench.run(ws)
            except Exception as e:
                failures += 1
                traceback.print_exc(file=sys.stderr)
                report = Report(bench.name, bench.summary, [], status="failed")
                report.notes.append(f"failed: {type(e).__name__}: {e}")
            report.details["benchmark_wall_s"] = time.perf_counter() - t
            doc = report.to_json(machine=machine, options=options.to_json(), started_at=started)
            save(doc, out_dir)
            print(markdown(doc), flush=True)
        write_summary(out_dir, ORDER, machine)
    finally:
        ws.close()
    return 1 if failures else 0
