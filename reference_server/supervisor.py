"""One attempt of one run, from its trainer's start to the run's outcome.

The supervisor asks the executor for a trainer, turns each protocol message into the run's events (`started` ->
`status: running`, `metric`, `checkpoint` once its bytes are adopted into the evidence), and when the trainer is
gone decides the outcome from what it said and how it exited. Anything that makes the evidence untrustworthy (a
checkpoint that does not hash as reported, a message the contract refuses, a write the disk refuses) stops the
trainer and fails the run with a reason that says so; the trainer's output is read to its end either way, so it is
never left blocked on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any

from .evidence import CheckpointRejected, EvidenceStore, EvidenceWriteError
from .executors import Executor, Launch, Trainer, TrainerLost, TrainerStartError
from .journal import RunJournal
from .lifecycle import CHECKPOINT_FIELDS, METRIC_FIELDS, Run, RunStatus
from .schemas import ContractViolation

log = logging.getLogger(__name__)

TERMINAL_MESSAGES = ("finished", "failed", "cancelled")


class RunProblem(Exception):
    """Something that ends the attempt as `failed` with `error` (a stable code and a message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message}


class RunSupervisor:
    """Owns one trainer for one attempt of a run."""

    def __init__(
        self,
        run: Run,
        launch: Launch,
        *,
        journal: RunJournal,
        store: EvidenceStore,
        executor: Executor,
        provenance: Callable[[Run, list[dict[str, Any]], dict[str, Any]], dict[str, Any]],
        cancel_grace_s: float,
        stopping: Callable[[], bool],
        attached: Trainer | None = None,
    ) -> None:
        """`attached`: a trainer already running (found again after a restart) instead of a new one."""
        self.run = run
        self.launch = launch
        self.journal = journal
        self.store = store
        self.executor = executor
        self.provenance = provenance
        self.cancel_grace_s = cancel_grace_s
        self.stopping = stopping
        self.trainer: Trainer | None = attached
        self.stop_requested = False
        self.cancel_requested = False
        self.detached = False
        self._killer: asyncio.Task[None] | None = None

    # ----- from the outside -----
    def cancel(self) -> None:
        """A client cancelled the run: stop the trainer (SIGTERM, SIGKILL after the grace period)."""
        self.cancel_requested = True
        self.stop()

    def detach(self) -> None:
        """The server is going and the trainer goes on without it (an executor that detaches): when the supervision
        is cancelled, the run is left as it is, for the next server to find again."""
        self.detached = True

    def stop(self) -> None:
        """Stop the trainer now, or as soon as it has started."""
        self.stop_requested = True
        if self.trainer is not None and not self.trainer.terminated:
            self.trainer.terminate()
            self._killer = self._killer or asyncio.create_task(self._kill_after_grace(self.trainer))

    # ----- the attempt -----
    async def supervise(self) -> None:
        """Run the attempt to its outcome; the run has ended (its `end` published) when this returns."""
        run = self.run
        terminal: Mapping[str, Any] | None = None
        problem: dict[str, str] | None = None
        lost: str | None = None
        trainer = self.trainer
        try:
            if trainer is None:
                try:
                    trainer = self.trainer = await self.executor.start(self.launch)
                except TrainerStartError as exc:
                    problem = {"code": "trainer_start_failed", "message": str(exc)}
                    return
            if self.stop_requested:
                self.stop()
            try:
                async for message in trainer.messages():
                    if self.detached:
                        # Whatever an executor awaits, a cancel it swallowed (as asyncio.wait_for can in Python 3.11
                        # when its future completes as the cancel arrives) must not keep a detached run supervised.
                        raise asyncio.CancelledError
                    if terminal is not None or problem is not None or not self.journal.is_open(run):
                        continue  # read to the end: a trainer blocked on a full pipe would never stop
                    try:
                        terminal = await self._on_message(trainer, message)
                    except RunProblem as exc:
                        log.error("run %s: %s", run.run_id, exc)
                        problem = exc.error
                        self.stop()
                code = await trainer.wait()
                log.info("run %s: trainer exited with %s", run.run_id, code)
            except TrainerLost as exc:
                log.error("run %s: trainer lost: %s", run.run_id, exc)
                lost = str(exc)
        except asyncio.CancelledError:
            if self.detached:
                log.info("run %s: left training without this server (%s executor)", run.run_id, self.executor.name)
                return
            raise
        except Exception as exc:  # the run must still end, whatever broke
            log.exception("run %s: supervision failed", run.run_id)
            if trainer is not None:
                trainer.kill()
                with contextlib.suppress(Exception):
                    await trainer.wait()
            problem = problem or {"code": "server_error", "message": f"the server failed to supervise the run: {exc}"}
        finally:
            if self._killer is not None:
                self._killer.cancel()
            if not self.detached:
                if self.journal.is_open(run):
                    status, error = self._outcome(trainer, terminal, problem, lost)
                    await self.journal.finish(run, status, error, trainer.log_text() if trainer else None)
                if trainer is not None:
                    await trainer.cleanup()

    async def _on_message(self, trainer: Trainer, message: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Record one protocol message; the message itself when it is the trainer's last word."""
        kind = message["event"]
        seq = {"trainer_seq": int(message["seq"])} if isinstance(message.get("seq"), int) else {}
        if kind == "started":
            await self._on_started(trainer, message, seq)
        elif kind == "metric":
            self._emit("metric", {k: message[k] for k in METRIC_FIELDS if k in message} | seq)
        elif kind == "checkpoint":
            await self._on_checkpoint(trainer, message, seq)
        elif kind in TERMINAL_MESSAGES:
            return message
        return None

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.journal.emit(self.run, kind, data)
        except EvidenceWriteError as exc:
            raise RunProblem(exc.code, str(exc)) from exc
        except ContractViolation as exc:
            raise RunProblem("protocol_error", f"the trainer sent a {kind} the contract refuses: {exc}") from exc

    async def _on_started(self, trainer: Trainer, message: Mapping[str, Any], seq: dict[str, int]) -> None:
        run = self.run
        device = message.get("device")
        if run.status is RunStatus.QUEUED:
            self._emit(
                "status",
                {
                    "status": "running",
                    "step": int(message.get("start_step", 0)),
                    "total_steps": int(message.get("total_steps", run.total_steps)),
                    **({"device": str(device)} if device else {}),
                    "placement": trainer.placement,
                }
                | seq,
            )
        await self._record_started(trainer, message)

    async def _record_started(self, trainer: Trainer, message: Mapping[str, Any]) -> None:
        """Rewrite config.json (device, tinygrad version, parameters, what computed the convolutions) and
        provenance.json (the dataset bytes the trainer loaded, where it ran) with what the trainer reported. A record
        that fails its schema is logged, not fatal; a disk that refuses it fails the run."""
        run = self.run
        try:
            stored = self.store.read_config(run.run_id)
            stored["device"] = message.get("device") or stored.get("device")
            if message.get("tinygrad_version"):
                stored["versions"]["tinygrad"] = str(message["tinygrad_version"])
            if isinstance(message.get("parameters"), int):
                stored["parameters"] = message["parameters"]
            if "convolution_kernels" in message:  # null: a model without convolutions
                stored["convolution_kernels"] = message["convolution_kernels"]
            self.store.write_config(run.run_id, stored)
            provenance = message.get("provenance")
            datasets = [provenance] if isinstance(provenance, dict) else []
            self.store.write_provenance(run.run_id, self.provenance(run, datasets, trainer.placement))
        except EvidenceWriteError as exc:
            raise RunProblem(exc.code, str(exc)) from exc
        except (ContractViolation, OSError, KeyError, TypeError, ValueError):
            log.exception("run %s: could not record the trainer's start details", run.run_id)

    async def _on_checkpoint(self, trainer: Trainer, message: Mapping[str, Any], seq: dict[str, int]) -> None:
        run = self.run
        try:
            name, sha, size = str(message["name"]), str(message["sha256"]), int(message["bytes"])
            opener = trainer.checkpoint_opener(message)
            await asyncio.get_running_loop().run_in_executor(
                None, self.store.adopt_checkpoint, run.run_id, name, sha, size, opener
            )
        except (KeyError, TypeError, ValueError, CheckpointRejected) as exc:
            raise RunProblem("checkpoint_rejected", f"checkpoint not adopted: {exc}") from exc
        except EvidenceWriteError as exc:
            raise RunProblem(exc.code, str(exc)) from exc
        data = {k: message[k] for k in CHECKPOINT_FIELDS if k in message}
        if isinstance(message.get("time"), str):
            data["created_at"] = message["time"]
        self._emit("checkpoint", data | seq)

    def _outcome(
        self,
        trainer: Trainer | None,
        terminal: Mapping[str, Any] | None,
        problem: dict[str, str] | None,
        lost: str | None = None,
    ) -> tuple[RunStatus, dict[str, str] | None]:
        run = self.run
        kind = terminal["event"] if terminal else None
        code = trainer.returncode if trainer else None
        if problem is not None:
            return RunStatus.FAILED, problem
        if lost is not None:
            if self.cancel_requested:
                return RunStatus.CANCELLED, None
            return RunStatus.INTERRUPTED, {"code": "node_lost", "message": lost}
        if kind == "finished" and code == 0:
            if run.status is RunStatus.QUEUED:  # the table has no queued -> succeeded: a run must have run
                return RunStatus.FAILED, {"code": "protocol_error", "message": "the trainer finished without `started`"}
            return RunStatus.SUCCEEDED, None
        if self.stopping() and not self.cancel_requested:
            return RunStatus.INTERRUPTED, {"code": "server_stopped", "message": "the server stopped during the run"}
        if kind == "failed":
            assert terminal is not None
            return RunStatus.FAILED, {
                "code": _snake(str(terminal.get("code") or "training_failed")),
                "message": str(terminal.get("reason") or "the trainer reported a failure"),
            }
        if self.cancel_requested and (kind == "cancelled" or (trainer is not None and trainer.terminated)):
            return RunStatus.CANCELLED, None
        how = f"was killed by {signal_name(code)}" if code is not None and code < 0 else f"exited with status {code}"
        said = f" after reporting {kind!r}" if kind else " before reporting an end"
        tail = trainer.last_log() if trainer else ""
        return RunStatus.FAILED, {
            "code": "trainer_crashed",
            "message": f"the training process {how}{said}" + (f": {tail}" if tail else ""),
        }

    async def _kill_after_grace(self, trainer: Trainer) -> None:
        await asyncio.sleep(self.cancel_grace_s)
        if trainer.returncode is None:
            log.warning("run %s: trainer ignored SIGTERM for %.0f s; killing it", self.run.run_id, self.cancel_grace_s)
            trainer.kill()


def _snake(code: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in code.lower()).strip("_")
    return cleaned if cleaned and cleaned[0].isalpha() else "training_failed"


def signal_name(code: int) -> str:
    """`SIGKILL` for -9 (for messages)."""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(code)
