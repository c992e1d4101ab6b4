"""The Ray actor that hosts one trainer on a cluster node: `python -m trainer_tinygrad train` (or the server's
`--trainer-command`, which must exist at that path on every node) as a child process, its protocol messages numbered
and kept, its checkpoints handed out as bytes (through Ray's object store), its log tail.

The actor is detached and named after its run, so it (and its trainer) go on while the server is away; a server
that comes back finds it by name and asks for the messages after the last one its log recorded. Nothing here is
lost when nobody is listening: every message stays in the actor until the server kills it once the run has ended.

This module is shipped to the cluster by value (Ray's cloudpickle), so a worker node needs only the training function
(`trainer-tinygrad`) and Ray, not the server; it imports nothing but the standard library and is given what it needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

_CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9._-]+\.safetensors$")
_LOG_LINES = 2000


def _command(command: list[str] | None) -> list[str]:
    """The trainer command on this node: the one given, or this node's interpreter's `-m trainer_tinygrad`."""
    return list(command) if command else [sys.executable, "-m", "trainer_tinygrad"]


class TrainerHost:
    """One trainer process on the node this actor was placed on."""

    def __init__(
        self,
        run_id: str,
        config: dict[str, Any],
        env: dict[str, str],
        data_dir: str | None,
        *,
        resume_name: str | None = None,
        resume_bytes: bytes | None = None,
        command: list[str] | None = None,
    ) -> None:
        import ray  # the actor runs inside Ray

        self.run_id = run_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self.hostname = socket.gethostname()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"trainer-{run_id}-"))
        config_path = self.workdir / "config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        argv = [*_command(command), "train", "--config", str(config_path)]
        argv += ["--out", str(self.workdir), "--run-id", run_id]
        child_env = dict(os.environ) | env | {"MOCKS_DISABLED": "1", "PYTHONUNBUFFERED": "1"}
        if data_dir and Path(data_dir).is_dir():  # the server's data dir, when this node has it too
            argv += ["--data-dir", data_dir]
            child_env["TRAINER_DATA_DIR"] = data_dir
        if resume_name is not None and resume_bytes is not None:
            if not _CHECKPOINT_NAME.match(resume_name) or resume_name.startswith("."):
                raise ValueError(f"not a checkpoint name: {resume_name!r}")
            resume = self.workdir / "resume" / resume_name
            resume.parent.mkdir()
            resume.write_bytes(resume_bytes)
            argv += ["--resume", str(resume)]
        self._lock = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._log: deque[str] = deque(["$ " + " ".join(argv)], maxlen=_LOG_LINES)
        self._stdout_done = False
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            with self._lock:
                if isinstance(message, dict) and isinstance(message.get("event"), str):
                    self._messages.append(message | {"seq": len(self._messages) + 1})
                else:
                    self._log.append("[stdout] " + raw.decode("utf-8", errors="replace").rstrip("\n"))
                self._lock.notify_all()
        self.proc.wait()
        with self._lock:
            self._stdout_done = True
            self._lock.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._lock:
                self._log.append(line)

    def placement(self) -> dict[str, Any]:
        """Where the trainer runs."""
        return {"executor": "ray", "node_id": self.node_id, "hostname": self.hostname, "pid": self.proc.pid}

    def poll(self, after: int, timeout: float) -> dict[str, Any]:
        """The messages after number `after` (waiting up to `timeout` s for one), and the exit status once the
        trainer has ended and every message of it has been handed out."""
        with self._lock:
            self._lock.wait_for(lambda: len(self._messages) > after or self._stdout_done, timeout)
            messages = self._messages[after:]
            done = self._stdout_done
        return {"messages": messages, "returncode": self.proc.returncode if done else None, "done": done}

    def checkpoint(self, name: str) -> bytes:
        """A checkpoint the trainer wrote, by the name its message gave (only inside this actor's scratch folder)."""
        if not _CHECKPOINT_NAME.match(name) or name.startswith("."):
            raise ValueError(f"not a checkpoint name: {name!r}")
        return (self.workdir / name).read_bytes()

    def terminate(self) -> None:
        """SIGTERM: the trainer stops after its current step and reports `cancelled`."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the trainer."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def log_text(self) -> str:
        """The kept tail of the trainer's stderr (and any stray stdout line)."""
        with self._lock:
            return "\n".join(self._log) + "\n"

    def close(self) -> None:
        """Stop the trainer if it still runs and remove the scratch folder (before the server kills the actor)."""
        if self.proc.returncode is None:
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def probe_device(env: dict[str, str], command: list[str] | None = None) -> dict[str, Any]:
    """`python -m trainer_tinygrad device` (or `<command> device`) on whichever node runs this task."""
    argv = [*_command(command), "device"]
    try:
        done = subprocess.run(
            argv,
            env=dict(os.environ) | env | {"MOCKS_DISABLED": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "reason": f"`{' '.join(argv)}` on {socket.gethostname()}: {exc}"}
    for line in reversed(done.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            report = json.loads(line)
            if isinstance(report, dict):
                return report | {"hostname": socket.gethostname()}
    return {"ok": False, "reason": f"exit {done.returncode}: {done.stderr.strip()[-300:] or 'no output'}"}
