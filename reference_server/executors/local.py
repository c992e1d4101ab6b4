"""The local executor: each trainer is a child process, ``python -m trainer_tinygrad train``, on this host.

The command is `--trainer-command` (default: this interpreter's `-m trainer_tinygrad`), so an operator can wrap the
training function (a container, a scheduler's launcher) and the tests can run a scripted trainer that speaks the
same protocol.

The trainer speaks JSON lines on stdout (started, metric, checkpoint, then finished | failed | cancelled) and logs on
stderr; SIGTERM asks it to stop after the current step. Its stderr is drained continuously (a full pipe would stall
it) and the tail is kept for error messages and the run's trainer.log. The child gets its own session (a Ctrl-C at
the server's terminal is the server's to handle), a lower CPU priority than the server (so requests stay quick
while it trains), and, on Linux, SIGTERM when the server dies, so a ``kill -9`` of the server does not leave trainers
burning the CPU. Its checkpoints are read from its scratch folder, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from . import Launch, TrainerStartError

log = logging.getLogger(__name__)

#: The training function, run by this interpreter.
DEFAULT_COMMAND = (sys.executable, "-m", "trainer_tinygrad")
#: A device name as tinygrad's DEV takes it ("CPU", "CUDA", "CPU:LLVM"); a probe's answer of another shape is not
#: passed on.
_DEVICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(:[A-Za-z0-9_]+)*")
_LINE_LIMIT = 4 << 20  # a `started` line carries the dataset provenance: allow a few MiB
_PR_SET_PDEATHSIG = 1


def _child_setup(nice: int) -> Callable[[], None]:
    prctl: Any = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if nice:
            os.nice(nice)

    return preexec


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One stdout line as a protocol object (a dict with a string `event`), or None for anything else."""
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("event"), str):
        return obj
    return None


def trainer_env(base: Mapping[str, str], data_dir: Path | None) -> dict[str, str]:
    """The environment a trainer runs with: the server's, MOCKS_DISABLED=1, unbuffered, the data dir."""
    env = dict(base)
    env["MOCKS_DISABLED"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if data_dir is not None:
        env["TRAINER_DATA_DIR"] = str(data_dir)
    return env


class TrainerProcess:
    """A running `python -m trainer_tinygrad train` for one run."""

    def __init__(
        self,
        run_id: str,
        config: Mapping[str, Any],
        out_dir: Path,
        *,
        data_dir: Path | None,
        command: Sequence[str] = DEFAULT_COMMAND,
        env: Mapping[str, str] | None = None,
        resume: Path | None = None,
        nice: int = 0,
    ) -> None:
        self.run_id = run_id
        self.config = dict(config)
        self.out_dir = out_dir
        self.data_dir = data_dir
        self.command = list(command)
        self.env = trainer_env(env if env is not None else os.environ, data_dir)
        self.resume = resume
        self.nice = nice
        self.stderr_tail: deque[str] = deque(maxlen=2000)
        self.terminated = False
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid once started."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has been waited for (negative: killed by that signal)."""
        return self._proc.returncode if self._proc else None

    @property
    def placement(self) -> dict[str, Any]:
        """This host, and the child's pid."""
        return {"executor": "local", "hostname": socket.gethostname(), "pid": self.pid}

    def argv(self, config_path: Path) -> list[str]:
        """The command line (recorded in the trainer log)."""
        argv = [*self.command, "train", "--config", str(config_path), "--out", str(self.out_dir)]
        argv += ["--run-id", self.run_id]
        if self.data_dir is not None:
            argv += ["--data-dir", str(self.data_dir)]
        if self.resume is not None:
            argv += ["--resume", str(self.resume)]
        return argv

    async def start(self) -> None:
        """Write the config into the work dir and start the child. Raises OSError when it cannot start."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / "config.json"
        config_path.write_text(json.dumps(self.config), encoding="utf-8")
        argv = self.argv(config_path)
        self.stderr_tail.append("$ " + " ".join(argv))
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            preexec_fn=_child_setup(self.nice),
            limit=_LINE_LIMIT,
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        log.info("run %s: trainer started, pid %s", self.run_id, self._proc.pid)

    async def _drain_stderr(self) -> None:
        assert self._proc and self._proc.stderr
        while True:
            try:
                raw = await self._proc.stderr.readline()
            except ValueError:  # a line over the limit: keep reading
                continue
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.stderr_tail.append(line)
            log.debug("run %s trainer: %s", self.run_id, line)

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """The protocol objects from stdout, numbered (`seq`), until it closes; other lines are logged and skipped."""
        assert self._proc and self._proc.stdout
        seq = 0
        while True:
            try:
                raw = await self._proc.stdout.readline()
            except ValueError:
                log.warning("run %s: trainer stdout line over %d bytes skipped", self.run_id, _LINE_LIMIT)
                continue
            if not raw:
                return
            message = parse_line(raw)
            if message is None:
                self.stderr_tail.append("[stdout] " + raw.decode("utf-8", errors="replace").rstrip("\n"))
                log.warning("run %s: trainer printed a non-protocol line: %r", self.run_id, raw[:200])
                continue
            seq += 1
            yield message | {"seq": seq}

    def checkpoint_opener(self, message: Mapping[str, Any]) -> Callable[[], BinaryIO]:
        """The checkpoint file the message names; only a file inside this trainer's own scratch folder."""
        path = Path(str(message.get("path", ""))).resolve()
        if path.parent != self.out_dir.resolve():
            raise ValueError(f"the checkpoint path {path} is outside the trainer's scratch folder")
        return lambda: path.open("rb")

    async def wait(self) -> int:
        """Wait for exit (and for stderr to drain); the exit status."""
        assert self._proc
        code = await self._proc.wait()
        if self._stderr_task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
        return code

    def terminate(self) -> None:
        """SIGTERM: the trainer stops after its current step and reports `cancelled`."""
        self._signal(signal.SIGTERM)
        self.terminated = True

    def kill(self) -> None:
        """SIGKILL, for a trainer that ignored SIGTERM past the grace period."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self._proc and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def log_text(self) -> str:
        """The kept tail of stderr, one line per line."""
        return "\n".join(self.stderr_tail) + "\n"

    def last_log(self, lines: int = 5) -> str:
        """The last few stderr lines, for an error message."""
        tail = [line for line in list(self.stderr_tail)[-lines:] if line.strip()]
        return " | ".join(tail)

    async def cleanup(self) -> None:
        """Remove the scratch folder (its checkpoints were copied into the evidence already)."""
        if self._proc is not None and self._proc.returncode is None:
            return  # still running: its files are still in use
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, self.out_dir, True)


class LocalExecutor:
    """Trainers as child processes of this server: they end with it (an `interrupted` run resumes by hand)."""

    name = "local"
    detaches = False

    def __init__(
        self,
        work_dir: Path,
        data_dir: Path | None,
        *,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = DEFAULT_COMMAND,
        nice: int = 0,
    ) -> None:
        self.work_dir = work_dir
        self.data_dir = data_dir
        self.env = dict(os.environ if env is None else env)
        self.command = list(command)
        self.nice = nice
        #: The device the last good probe found, given to trainers as DEV where the server's environment has none.
        self.probed_device: str | None = None

    def trainer_env(self) -> dict[str, str]:
        """The server's environment, with DEV set to the probed device where it is unset.

        Why: without DEV, tinygrad picks a device in each process by opening every backend it knows (~0.5 s of a
        run's start here), and the CPU device's programs are then compiled instead of read from the step cache
        (trainer_tinygrad.device_programs installs its cache only for DEV=CPU): a warm mlp run's first metric came
        1.58 s after spawn without DEV against 1.01 s with DEV=CPU, 2.5 against 1.5 CPU-s (BENCHMARKS.md, 1b). The
        probe ran the same command in the same environment on this host, so its answer is the device each trainer
        would have chosen. A DEV the operator set is never changed.
        """
        if self.probed_device is None or "DEV" in self.env:
            return self.env
        return {**self.env, "DEV": self.probed_device}

    async def start(self, launch: Launch) -> TrainerProcess:
        """Start `python -m trainer_tinygrad train` for the run in its own scratch folder."""
        proc = TrainerProcess(
            launch.run_id,
            launch.config,
            self.work_dir / launch.run_id,
            data_dir=self.data_dir,
            command=self.command,
            env=self.trainer_env(),
            resume=launch.resume.path.resolve() if launch.resume else None,
            nice=self.nice,
        )
        try:
            await proc.start()
        except OSError as exc:
            raise TrainerStartError(f"cannot start the training process: {exc}") from exc
        return proc

    def unavailable(self) -> str | None:
        """Always available: a child process needs nothing but this host."""
        return None

    async def reattach(self, launch: Launch, after_seq: int) -> None:
        """None: a child process dies with its server (PR_SET_PDEATHSIG), so there is nothing to find again."""
        return None

    def forget(self, run_id: str) -> None:
        """Remove the scratch folder of a run whose trainer died with an earlier server."""
        shutil.rmtree(self.work_dir / run_id, ignore_errors=True)

    async def probe(self) -> dict[str, Any]:
        """Run the trainer command's `device` once; a device it found becomes the trainers' DEV (`trainer_env`)."""
        result = await probe_device(self.command, self.env)
        device = result.get("device")
        if result.get("ok") and isinstance(device, str) and _DEVICE_NAME.fullmatch(device):
            self.probed_device = device
        return result

    async def close(self) -> None:
        """Nothing to release: trainers are stopped by their supervisors."""


async def probe_device(
    command: Sequence[str] = DEFAULT_COMMAND, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> dict[str, Any]:
    """Run ``<trainer command> device`` once: {"ok": bool, "device"?, "tinygrad_version"?, "reason"?}."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            "device",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=trainer_env(env if env is not None else os.environ, None),
            start_new_session=True,
        )
    except OSError as exc:
        return {"ok": False, "reason": f"cannot run `{' '.join(command)} device`: {exc}"}
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return {"ok": False, "reason": f"`trainer_tinygrad device` did not answer within {timeout:.0f} s"}
    result: dict[str, Any] | None = None
    for raw in reversed(out.splitlines()):
        with contextlib.suppress(ValueError):
            obj = json.loads(raw)
            if isinstance(obj, dict):
                result = obj
                break
    if proc.returncode == 0 and result is not None and result.get("ok") is True:
        return result
    reason = (result or {}).get("reason") or err.decode("utf-8", errors="replace").strip()[-500:] or "no output"
    return {"ok": False, "reason": f"exit {proc.returncode}: {reason}"}
