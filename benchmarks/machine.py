"""What the benchmarks ran on: CPU, cores, memory, load, and the versions of everything measured."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _first_line(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def torch_available() -> bool:
    """Whether PyTorch is installed (benchmarks only; checked without importing it)."""
    return _package("torch") is not None


def describe() -> dict[str, Any]:
    """The machine and software versions, recorded in every result file."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tinygrad": _package("tinygrad"),
        "torch": _package("torch"),
        "numpy": _package("numpy"),
        "tornado": _package("tornado"),
        "httpx": _package("httpx"),
        "clang": _first_line(["clang", "--version"]),
        "dev": os.environ.get("DEV", "(tinygrad default)"),
        "commit": _first_line(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"]),
    }
    info["summary"] = (
        f"{info['cpu']}, {cores} cores, {info['memory_gib']} GiB; Python {info['python']}, "
        f"tinygrad {info['tinygrad']}, torch {info['torch'] or 'not installed'}, DEV={info['dev']}"
    )
    return info
