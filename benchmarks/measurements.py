"""Timing child processes from the outside, and the statistics every benchmark reports.

A child's peak memory and CPU time come from `os.wait4` (the kernel's rusage for that process), so no benchmark
needs psutil and no measuring code runs inside the measured process. Line arrival times are taken by the parent with
`time.perf_counter` as each flushed line arrives: the same clock for both frameworks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values (a benchmark that measured nothing says so instead of inventing a 0)."""
    return percentile(values, 50)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between the closest ranks; None for no values."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass
class ChildRun:
    """One finished child process: its JSON stdout lines with arrival times, exit code, rusage figures."""

    argv: list[str]
    start: float  # perf_counter at spawn
    end: float  # perf_counter at exit
    returncode: int
    max_rss_mib: float
    cpu_s: float
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stderr_tail: str = ""
    stopped_early: bool = False  # SIGTERM sent by `stop_when` or the time budget

    @property
    def wall_s(self) -> float:
        """Seconds from spawn to exit."""
        return self.end - self.start

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, object) for every line whose `event` is `name`."""
        return [(t, obj) for t, obj in self.lines if obj.get("event") == name]


def run_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
    budget_s: float | None = None,
    stop_when: Callable[[dict[str, Any]], bool] | None = None,
    hard_timeout_s: float = 3600,
) -> ChildRun:
    """Run `argv`, timestamp each JSON line it prints, and collect its rusage.

    `budget_s` or `stop_when(line)` ask the child to stop with SIGTERM (the trainer then finishes its step and exits
    cleanly); `hard_timeout_s` kills it outright. Non-JSON stdout lines are ignored.
    """
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=full_env,
            text=True,
        )
        stopped = threading.Event()

        def terminate() -> None:
            if proc.poll() is None:
                stopped.set()
                proc.send_signal(signal.SIGTERM)

        killer = threading.Timer(hard_timeout_s, proc.kill)
        killer.start()
        budget = threading.Timer(budget_s, terminate) if budget_s is not None else None
        if budget is not None:
            budget.start()
        try:
            if stdin_text is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin_text)
                proc.stdin.close()
            lines: list[tuple[float, dict[str, Any]]] = []
            assert proc.stdout is not None
            for raw in proc.stdout:
                arrived = time.perf_counter()
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    lines.append((arrived, obj))
                    if stop_when is not None and stop_when(obj):
                        terminate()
            _, status, usage = os.wait4(proc.pid, 0)
            end = time.perf_counter()
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            killer.cancel()
            if budget is not None:
                budget.cancel()
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        tail = err.read()[-4000:].decode("utf-8", "replace")
    return ChildRun(
        argv=list(argv),
        start=start,
        end=end,
        returncode=proc.returncode,
        max_rss_mib=usage.ru_maxrss / 1024,  # Linux reports KiB
        cpu_s=usage.ru_utime + usage.ru_stime,
        lines=lines,
        stderr_tail=tail,
        stopped_early=stopped.is_set(),
    )
