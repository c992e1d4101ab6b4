"""A real reference server for benchmarks 2-5: `python -m reference_server` on a free port, in scratch folders.

Its CPU time and memory are read from /proc (no psutil): the server process alone, not the trainers it starts.
`code`: the root of another revision's export (Workspace.before_root) whose server runs instead of this checkout's,
with that revision's training function; only flags every revision understands are passed (--host, --port,
--evidence-dir, --data-dir, --work-dir, --max-sse-subscribers exist since before 423a724).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from benchmarks.workspace import REPO_ROOT, Workspace
from tooling.launcher import LaunchedServer, launch

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


class ReferenceServer:
    """Start with `with ReferenceServer(ws, env) as server:`; `server.url` is its base URL."""

    def __init__(
        self,
        ws: Workspace,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        *,
        code: Path | None = None,
        profile: Path | None = None,
        root: Path | None = None,
    ) -> None:
        self.ws = ws
        self.root = root or ws.scratch("server")  # a given root: a server after another on the same evidence
        self.env = env or {}
        self.args = args or []
        self.code = code
        self.profile = profile  # run under cProfile (benchmarks/profiled_server.py), stats to this file
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.root / "server.log"
        self._launched: LaunchedServer

    def __enter__(self) -> ReferenceServer:
        args = ["--evidence-dir", str(self.root / "evidence"), "--data-dir", str(self.ws.data_dir)]
        args += ["--work-dir", str(self.root / "work"), *self.args]
        env = self.ws.env(MOCKS_DISABLED="1", **self.env)
        cwd, module = REPO_ROOT, "reference_server"
        if self.code is not None:
            # `python -m` puts the working directory first on sys.path: run from the export so its server is found.
            cwd = self.code
            env["PYTHONPATH"] = os.pathsep.join([str(self.code), str(self.code / "functions" / "trainer-tinygrad")])
        elif self.profile is not None:
            module = "benchmarks.profiled_server"
            env["SERVER_PROFILE"] = str(self.profile)
        launched = launch(
            args, log_path=self.log_path, env=env, cwd=cwd, python=self.ws.python, timeout=120, module=module
        )
        self.proc, self.url = launched.proc, launched.url
        self._launched = launched
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._launched.stop(timeout=60)

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def usage(self) -> dict[str, float]:
        """The server process's own CPU seconds, current and peak resident memory (MiB), from /proc."""
        assert self.proc is not None
        pid = self.proc.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        return {
            "cpu_s": cpu,
            "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
            "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024,
        }


def start_run(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """POST a run; its JSON (raises on anything but 200/201/202)."""
    response = client.post("/api/training/runs", json=body)
    if response.status_code not in (200, 201, 202):
        raise RuntimeError(f"POST /api/training/runs: {response.status_code} {response.text[:500]}")
    return dict(response.json())


def wait_terminal(client: httpx.Client, run_id: str, timeout: float = 600, poll_s: float = 0.05) -> dict[str, Any]:
    """Poll a run until it is in a terminal status; its JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = dict(client.get(f"/api/training/runs/{run_id}").json())
        if run["status"] in TERMINAL:
            return run
        time.sleep(poll_s)
    raise TimeoutError(f"run {run_id} did not end within {timeout} s")
