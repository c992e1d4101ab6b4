"""One bash session that runs a document's runnable blocks in order, as a reader pastes them into one terminal.

Each block is written to a file and sourced (`set -euo pipefail` holds, variables a block sets carry on to the next,
stdin is /dev/null so no command reads the session's own input), then a unique line says it finished. A block fails
when the shell exits (a command failed) or its time limit passes; the whole process group is killed at the end, so
nothing a block started in the background outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path


class BlockFailed(AssertionError):
    """A block exited non-zero or ran past its time limit; the message carries the block and what it printed."""


class BashSession:
    """A `bash --noprofile --norc` child with `set -euo pipefail`, fed one sourced block at a time."""

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._blocks = 0
        self._send("set -euo pipefail\n")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with self._changed:
                self._output += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the shell has exited: run() reports it with its output

    def run(self, code: str, timeout_s: float, where: str) -> str:
        """Run one block; what it printed. BlockFailed when it fails or runs past `timeout_s`."""
        self._blocks += 1
        script = self.scratch / f"block-{self._blocks:02d}.sh"
        script.write_text(code)
        done = f"__docs_block_{self._blocks}_done_{secrets.token_hex(8)}__"
        start = len(self._output)
        self._send(f"source {shlex.quote(str(script))} </dev/null\nprintf '\\n%s\\n' {done}\n")
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while done.encode() not in self._output[start:]:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    break
                self._changed.wait(min(left, 0.2))
        status = self.proc.poll()
        if status is not None:
            self._reader.join(1)  # the last of its output (a background child may hold the pipe open: not for long)
        printed = bytes(self._output[start:]).decode(errors="replace")
        if done in printed:
            return printed[: printed.index(done)].removesuffix("\n")
        self.close(wait_s=0 if status is None else 5)
        if status is None:
            raise BlockFailed(f"{where}: still running after {timeout_s:g} s\n{_show(code, printed)}")
        raise BlockFailed(f"{where}: failed (the shell exited with {status})\n{_show(code, printed)}")

    def close(self, wait_s: float = 5) -> None:
        """End the shell (given `wait_s` to exit by itself) and everything it started."""
        self._send("exit 0\n")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(5)


def _show(code: str, printed: str, tail: int = 4000) -> str:
    shown = printed if len(printed) <= tail else "[...]\n" + printed[-tail:]
    return f"--- the block ---\n{code.rstrip()}\n--- what it printed ---\n{shown.rstrip()}"
