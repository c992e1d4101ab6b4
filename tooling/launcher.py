"""Start the reference server as a child process on a free port and wait until it is ready.

One launcher for everything that runs the server from the outside: `make verify`, the tests, the benchmarks and the
load script. The server picks its own port (`--port 0`) and names it in its log line `listening on http://HOST:PORT`,
so no port is chosen first and then lost to a race. Standard library only.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_LISTENING = re.compile(r"listening on (http://\S+)")


class LaunchError(RuntimeError):
    """The server exited, or did not listen or become ready in time; the message ends with its log."""


@dataclass
class LaunchedServer:
    """A running `python -m reference_server` child: its process, base URL and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    log_offset: int = 0

    def log(self) -> str:
        """What this server wrote to its log (earlier servers' lines in an appended log are left out)."""
        return self.log_path.read_bytes()[self.log_offset :].decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until it answers 200; raise LaunchError if the server dies or time runs out."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LaunchError(f"the server exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=10) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"{err.code} {err.read().decode(errors='replace')[:300]}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise LaunchError(f"the server was not ready within {timeout:.0f} s ({last}):\n{self.log()[-3000:]}")

    def rss_kib(self) -> int:
        """The server's resident set size, KiB."""
        return rss_kib(self.proc.pid)

    def open_fds(self) -> int:
        """The server's open file descriptors."""
        return open_fds(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server, wait for it (SIGKILL after `timeout`), and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def rss_kib(pid: int) -> int:
    """A process's resident set size in KiB (/proc/PID/status, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """A process's open file descriptors (/proc/PID/fd)."""
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def launch(
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    python: str = sys.executable,
    timeout: float = 60.0,
    wait_ready: bool = True,
    module: str = "reference_server",
) -> LaunchedServer:
    """Run `python -m reference_server --host 127.0.0.1 --port 0 ARGS...`, appending its output to `log_path`.

    Returns once it listens and, with `wait_ready`, once /readyz answers 200 (within `timeout` in all). `module`
    replaces `reference_server` with a wrapper that takes the same arguments (benchmarks/profiled_server.py).
    """
    argv = [python, "-m", module, "--host", "127.0.0.1", "--port", "0", *args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd)
    server = LaunchedServer(proc, "", log_path, offset)
    deadline = time.monotonic() + timeout
    while not server.url:
        match = _LISTENING.search(server.log())
        if match:
            server.url = match.group(1)
        elif proc.poll() is not None:
            raise LaunchError(f"the server exited with {proc.returncode}:\n{server.log()}")
        elif time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise LaunchError(f"the server did not listen within {timeout:.0f} s:\n{server.log()}")
        else:
            time.sleep(0.05)
    if wait_ready:
        try:
            server.wait_ready(max(1.0, deadline - time.monotonic()))
        except LaunchError:
            server.stop(signal.SIGKILL)
            raise
    return server
