"""The run manager: every run's lifecycle, the queue, and the one table of allowed transitions.

A run's state is never stored on its own: it is what the run's event log says. `Run.apply` folds one event into the
view, and it is the same function whether the event was just appended or read back from metrics.jsonl at start-up,
so a restarted server sees exactly what a running one saw.

Ordering at the end of a run: trainer.log, the `end` event (durable), manifest.json, and only then is `end` published
to readers and subscribers. Whoever sees `end` can fetch a complete evidence folder.

Resume: an `interrupted` or `failed` run with a checkpoint is reopened under the same run id. Its manifest goes, a
`status: queued` event with `resumed_from` follows its earlier `end` in the same log (ids carry on), and a trainer
continues from that checkpoint with step numbering carrying on. The earlier `end` stays: the log is append-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.files import sha256_file

from . import clock
from .datasets import DatasetCatalog
from .errors import (
    IdempotencyConflict,
    InvalidParameter,
    QueueFull,
    RunNotCancellable,
    RunNotFound,
    RunNotResumable,
)
from .events import EventLog
from .evidence import CHECKPOINTS, CheckpointRejected, EvidenceStore
from .process import TrainerProcess
from .provenance import ServiceProvenance

log = logging.getLogger(__name__)


class RunStatus(StrEnum):
    """A run's lifecycle state."""

    QUEUED = "queued"  # accepted; waiting for a slot, or its trainer is still loading
    RUNNING = "running"  # the trainer reported `started`
    SUCCEEDED = "succeeded"  # the trainer reported `finished` and exited 0
    FAILED = "failed"  # the trainer reported `failed`, crashed, or broke the protocol
    CANCELLED = "cancelled"  # a client cancelled it and the trainer stopped
    INTERRUPTED = "interrupted"  # the server stopped while it was queued or running


#: The one table of allowed transitions; a terminal state has none.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.INTERRUPTED: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: The one way out of an ended state: POST .../resume reopens these (to `queued`) when the run has a checkpoint.
RESUMABLE = frozenset({RunStatus.INTERRUPTED, RunStatus.FAILED})


class InvalidTransition(Exception):
    """A transition the table does not allow: a server bug, never a client's."""


def check_transition(current: RunStatus, new: RunStatus) -> None:
    """Raise InvalidTransition unless TRANSITIONS allows current -> new."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"{current} -> {new} is not an allowed transition")


def new_run_id() -> str:
    """An opaque run id: `run-` and 20 lowercase hex digits (80 random bits)."""
    return "run-" + secrets.token_hex(10)


_METRIC_FIELDS = ("step", "epoch", "loss", "accuracy", "learning_rate", "samples_per_second")
_CHECKPOINT_FIELDS = ("step", "name", "eval_loss", "eval_accuracy", "eval_samples", "sha256", "bytes")


@dataclass
class Run:
    """The view of one run, folded from its events."""

    run_id: str
    config: dict[str, Any]
    created_at: str
    seq: int
    idempotency_key: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.QUEUED
    started_at: str | None = None
    finished_at: str | None = None
    step: int = 0
    device: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    cancel_requested: bool = False
    resumed_from: str | None = None  # the checkpoint name the current attempt continues from

    @property
    def total_steps(self) -> int:
        """Steps the run trains in all (from its resolved config)."""
        return int(self.config["steps"])

    @property
    def terminal(self) -> bool:
        """True once the run has ended."""
        return self.status in TERMINAL

    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one event into the view (live and at recovery alike)."""
        data = event["data"]
        kind = event["type"]
        if kind == "status":
            if data.get("resumed_from") and self.status in TERMINAL:
                self._reopen(int(data.get("step", 0)), str(data["resumed_from"]))
            self.status = RunStatus(data["status"])
            if self.status is RunStatus.RUNNING:
                self.started_at = self.started_at or event["time"]  # a resumed run keeps its first start
                self.device = data.get("device", self.device)
                self.step = max(self.step, int(data.get("step", 0)))
        elif kind == "metric":
            self.metrics.append({k: data[k] for k in _METRIC_FIELDS if k in data} | {"time": event["time"]})
            self.step = max(self.step, int(data["step"]))
        elif kind == "checkpoint":
            record = {k: data[k] for k in _CHECKPOINT_FIELDS if k in data}
            self.evals.append(
                {
                    "step": data["step"],
                    "eval_loss": data["eval_loss"],
                    "eval_accuracy": data["eval_accuracy"],
                    **({"eval_samples": data["eval_samples"]} if "eval_samples" in data else {}),
                    "checkpoint": data["name"],
                    "time": event["time"],
                }
            )
            self.checkpoints.append(record | {"created_at": data.get("created_at", event["time"])})
            self.step = max(self.step, int(data["step"]))
        elif kind == "end":
            self.status = RunStatus(data["status"])
            self.finished_at = event["time"]
            self.error = data.get("error")
            self.step = max(self.step, int(data.get("step", 0)))

    def _reopen(self, step: int, checkpoint: str) -> None:
        """A resume: the view goes back to the checkpoint it continues from. Metrics logged after that checkpoint
        by the attempt that ended stay in the log but leave the view, since the resumed attempt logs those steps
        again."""
        self.resumed_from = checkpoint
        self.finished_at = None
        self.error = None
        self.cancel_requested = False
        self.step = step
        self.metrics = [m for m in self.metrics if m["step"] <= step]
        self.evals = [e for e in self.evals if e["step"] <= step]
        self.checkpoints = [c for c in self.checkpoints if c["step"] <= step]

    def links(self) -> dict[str, str]:
        """Where a client goes next (relative URLs)."""
        base = f"/api/training/runs/{self.run_id}"
        return {
            "self": base,
            "metrics": f"{base}/metrics",
            "events": f"/api/events/training?run_id={self.run_id}",
            "checkpoints": f"{base}/checkpoints",
            "evidence": f"{base}/evidence",
            "cancel": f"{base}/cancel",
            "resume": f"{base}/resume",
        }

    def checkpoint_json(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One checkpoint as checkpoint.schema.json, with its download URL."""
        return dict(record) | {"url": f"/api/training/runs/{self.run_id}/checkpoints/{record['name']}"}

    def to_json(self) -> dict[str, Any]:
        """The run as run.schema.json."""
        total = self.total_steps
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "config": self.config,
            "progress": {"step": self.step, "total_steps": total, "fraction": min(1.0, self.step / total)},
            "latest_metrics": self.metrics[-1] if self.metrics else None,
            "latest_eval": self.evals[-1] if self.evals else None,
            "checkpoints": [self.checkpoint_json(c) for c in self.checkpoints],
            "device": self.device,
            "error": self.error,
            "idempotency_key": self.idempotency_key,
            "links": self.links(),
        }

    def metrics_page(self, after_step: int | None, limit: int) -> dict[str, Any]:
        """metrics.schema.json: records with step > after_step, covering at most `limit` distinct steps."""
        floor = -1 if after_step is None else after_step
        steps = sorted(
            {m["step"] for m in self.metrics if m["step"] > floor}
            | {e["step"] for e in self.evals if e["step"] > floor}
        )
        page_steps = steps[:limit]
        ceiling = page_steps[-1] if page_steps else floor
        more = len(steps) > limit
        return {
            "run_id": self.run_id,
            "metrics": [m for m in self.metrics if floor < m["step"] <= ceiling],
            "evals": [e for e in self.evals if floor < e["step"] <= ceiling],
            "next_after_step": ceiling if more else None,
        }


@dataclass(frozen=True)
class RunLimits:
    """How much the manager takes on at once."""

    max_concurrent: int = 1
    max_queued: int = 16
    cancel_grace_s: float = 30.0


class RunManager:
    """Owns every run: creation (idempotent), the queue, the training processes, cancel, recovery, shutdown."""

    def __init__(
        self,
        store: EvidenceStore,
        events: EventLog,
        catalog: DatasetCatalog,
        identity: ServiceProvenance,
        *,
        work_dir: Path,
        limits: RunLimits | None = None,
        env: Mapping[str, str] | None = None,
        device: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.store = store
        self.events = events
        self.catalog = catalog
        self.identity = identity
        self.work_dir = work_dir
        self.limits = limits or RunLimits()
        self.env = dict(os.environ if env is None else env)
        self.device = device
        self.runs: dict[str, Run] = {}
        self._by_key: dict[str, str] = {}
        self._queue: deque[str] = deque()
        self._active: dict[str, TrainerProcess] = {}
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # one supervisor per training process
        self._killers: dict[str, asyncio.Task[None]] = {}  # SIGKILL timers after a SIGTERM
        self._seq = 0
        self.stopping = False

    # ----- reads -----
    def get(self, run_id: str) -> Run:
        """A run by id; RunNotFound (404) otherwise."""
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFound(f"no run with id {run_id!r}; list runs with GET /api/training/runs")
        return run

    def page(self, limit: int, cursor: str | None, status: str | None = None) -> tuple[list[Run], str | None]:
        """A page of runs, newest first; the cursor is the id of the last run of the previous page."""
        ordered = sorted(self.runs.values(), key=lambda r: r.seq, reverse=True)
        if status is not None:
            ordered = [r for r in ordered if r.status == status]
        start = 0
        if cursor is not None:
            positions = {r.run_id: i for i, r in enumerate(ordered)}
            if cursor not in positions:
                raise InvalidParameter(f"cursor {cursor!r} is not from a previous page of this listing")
            start = positions[cursor] + 1
        page = ordered[start : start + limit]
        more = start + limit < len(ordered)
        return page, (page[-1].run_id if more and page else None)

    def counts(self) -> dict[str, int]:
        """Runs by status (every status present, zeros included)."""
        counts = dict.fromkeys((str(s) for s in RunStatus), 0)
        for run in self.runs.values():
            counts[str(run.status)] += 1
        return counts

    @property
    def queued(self) -> int:
        """Runs waiting for a slot."""
        return len(self._queue)

    @property
    def active(self) -> int:
        """Training processes alive now."""
        return len(self._active) + len(self._starting)

    # ----- creation -----
    async def create(self, body: dict[str, Any]) -> tuple[Run, bool]:
        """Start a run from a schema-valid request body; (run, created). The same idempotency_key returns the
        same run (409 when the rest of the request differs)."""
        key = body.get("idempotency_key")
        request = {k: v for k, v in body.items() if k != "idempotency_key"}
        existing = self._by_idempotency_key(key, request)
        if existing is not None:
            return existing, False
        self._check_queue_room()
        if "dataset" in request:
            await self.catalog.require(request["dataset"])
            dataset = request["dataset"]
        else:
            dataset = await self.catalog.default_dataset()
        # The awaits above let other requests in: look again before creating anything.
        existing = self._by_idempotency_key(key, request)
        if existing is not None:
            return existing, False
        self._check_queue_room()
        config = resolve_config(request, dataset)
        self.store.contract.check("training-config.schema.json", config)
        run = self._new_run(config, request, key)
        self._queue.append(run.run_id)
        self._pump()
        return run, True

    def _by_idempotency_key(self, key: str | None, request: dict[str, Any]) -> Run | None:
        if key is None or key not in self._by_key:
            return None
        run = self.runs[self._by_key[key]]
        if run.request != request:
            raise IdempotencyConflict(
                f"idempotency_key {key!r} already started run {run.run_id} with a different request; "
                "use a new key for a different run"
            )
        return run

    def _check_queue_room(self) -> None:
        if len(self._queue) >= self.limits.max_queued:
            raise QueueFull(
                f"{len(self._queue)} runs are already waiting (limit {self.limits.max_queued}); retry later",
                retry_after=30,
            )

    def _new_run(self, config: dict[str, Any], request: dict[str, Any], key: str | None) -> Run:
        run_id = new_run_id()
        while run_id in self.runs:
            run_id = new_run_id()
        created = clock.now()
        config_doc: dict[str, Any] = {
            "run_id": run_id,
            "config": config,
            "versions": dict(self.identity.versions),
            "device": self.device(),
            "created_at": created,
            "request": request,
            "idempotency_key": key,
        }
        provenance = self._provenance(run_id, config, created, datasets=[])
        self.store.create_run(run_id, config_doc, provenance)
        run = self._register(run_id, config_doc)
        self.events.load(run_id, [])
        self._emit(run, "status", {"status": "queued", "step": 0, "total_steps": run.total_steps})
        log.info("run %s: queued (%s, %s, %d steps)", run_id, config["dataset"], config["model"], config["steps"])
        return run

    def _provenance(
        self, run_id: str, config: Mapping[str, Any], created: str, datasets: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "datasets": datasets,
            "commit": self.identity.commit,
            "tree_dirty": self.identity.tree_dirty,
            "diff_sha256": self.identity.diff_sha256,
            "host": self.identity.host,
            "seed": int(config["seed"]),
            "mocks_disabled": "1",
            "created_at": created,
        }

    def _register(self, run_id: str, config_doc: Mapping[str, Any]) -> Run:
        self._seq += 1
        run = Run(
            run_id=run_id,
            config=dict(config_doc["config"]),
            created_at=config_doc["created_at"],
            seq=self._seq,
            idempotency_key=config_doc.get("idempotency_key"),
            request=dict(config_doc.get("request") or {}),
            device=config_doc.get("device"),
        )
        self.runs[run_id] = run
        if run.idempotency_key:
            self._by_key[run.idempotency_key] = run_id
        return run

    def _emit(self, run: Run, kind: str, data: dict[str, Any]) -> None:
        if kind == "status" and data["status"] != run.status:
            check_transition(run.status, RunStatus(data["status"]))
        run.apply(self.events.append(run.run_id, kind, data))

    # ----- scheduling -----
    def _pump(self) -> None:
        while not self.stopping and self._queue and self.active < self.limits.max_concurrent:
            run_id = self._queue.popleft()
            self._starting.add(run_id)
            task = asyncio.create_task(self._supervise(self.runs[run_id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _supervise(self, run: Run) -> None:
        work = self.work_dir / run.run_id
        resume = None
        if run.resumed_from is not None:
            resume = (self.store.run_dir(run.run_id) / CHECKPOINTS / run.resumed_from).resolve()
        proc = TrainerProcess(run.run_id, run.config, work, data_dir=self.catalog.root, env=self.env, resume=resume)
        terminal: dict[str, Any] | None = None
        problem: dict[str, str] | None = None
        try:
            try:
                await proc.start()
            except OSError as exc:
                problem = {"code": "trainer_start_failed", "message": f"cannot start the training process: {exc}"}
                return
            finally:
                self._starting.discard(run.run_id)
            self._active[run.run_id] = proc
            if run.cancel_requested or self.stopping:
                proc.terminate()
                self._arm_killer(proc)
            async for message in proc.messages():
                kind = message["event"]
                if terminal is not None:
                    continue
                if kind == "started":
                    self._on_started(run, message)
                elif kind == "metric":
                    self._on_metric(run, message)
                elif kind == "checkpoint":
                    problem = await self._on_checkpoint(run, message)
                    if problem is not None:
                        proc.terminate()
                        break
                elif kind in ("finished", "failed", "cancelled"):
                    terminal = message
            code = await proc.wait()
            log.info("run %s: trainer exited with %s", run.run_id, code)
        except Exception as exc:  # the run must still end, whatever broke
            log.exception("run %s: supervision failed", run.run_id)
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
            problem = problem or {"code": "server_error", "message": f"the server failed to supervise the run: {exc}"}
        finally:
            self._active.pop(run.run_id, None)
            killer = self._killers.pop(run.run_id, None)
            if killer is not None:
                killer.cancel()
            status, error = self._outcome(run, proc, terminal, problem)
            await self._finish(run, status, error, proc)
            if proc.returncode is not None or proc.pid is None:
                await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, work, True)
            self._pump()

    def _on_started(self, run: Run, message: Mapping[str, Any]) -> None:
        device = message.get("device")
        if run.status is RunStatus.QUEUED:
            self._emit(
                run,
                "status",
                {
                    "status": "running",
                    "step": int(message.get("start_step", 0)),
                    "total_steps": int(message.get("total_steps", run.total_steps)),
                    **({"device": str(device)} if device else {}),
                },
            )
        self._record_started(run, message)

    def _record_started(self, run: Run, message: Mapping[str, Any]) -> None:
        """Rewrite config.json (device, tinygrad version) and provenance.json (the dataset bytes the trainer
        loaded) with what the trainer reported. A record that fails its schema is logged, not fatal."""
        try:
            stored = self.store.read_config(run.run_id)
            stored["device"] = message.get("device") or stored.get("device")
            if message.get("tinygrad_version"):
                stored["versions"]["tinygrad"] = str(message["tinygrad_version"])
            if isinstance(message.get("parameters"), int):
                stored["parameters"] = message["parameters"]
            self.store.write_config(run.run_id, stored)
            provenance = message.get("provenance")
            datasets = [provenance] if isinstance(provenance, dict) else []
            self.store.write_provenance(
                run.run_id, self._provenance(run.run_id, run.config, run.created_at, datasets=datasets)
            )
        except Exception:
            log.exception("run %s: could not record the trainer's start details", run.run_id)

    def _on_metric(self, run: Run, message: Mapping[str, Any]) -> None:
        data = {k: message[k] for k in _METRIC_FIELDS if k in message}
        try:
            self._emit(run, "metric", data)
        except Exception as exc:
            log.warning("run %s: metric line refused (%s): %r", run.run_id, exc, dict(message))

    async def _on_checkpoint(self, run: Run, message: Mapping[str, Any]) -> dict[str, str] | None:
        try:
            name, sha, size = str(message["name"]), str(message["sha256"]), int(message["bytes"])
            source = Path(str(message["path"]))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.store.adopt_checkpoint, run.run_id, source, name, sha, size)
        except (KeyError, TypeError, ValueError, CheckpointRejected) as exc:
            log.error("run %s: checkpoint rejected: %s", run.run_id, exc)
            return {"code": "checkpoint_rejected", "message": f"checkpoint not adopted: {exc}"}
        data = {k: message[k] for k in _CHECKPOINT_FIELDS if k in message}
        if isinstance(message.get("time"), str):
            data["created_at"] = message["time"]
        self._emit(run, "checkpoint", data)
        return None

    def _outcome(
        self,
        run: Run,
        proc: TrainerProcess,
        terminal: Mapping[str, Any] | None,
        problem: dict[str, str] | None,
    ) -> tuple[RunStatus, dict[str, str] | None]:
        code = proc.returncode
        kind = terminal["event"] if terminal else None
        if problem is not None:
            return RunStatus.FAILED, problem
        if kind == "finished" and code == 0:
            if run.status is RunStatus.QUEUED:  # the table has no queued -> succeeded: a run must have run
                return RunStatus.FAILED, {"code": "protocol_error", "message": "the trainer finished without `started`"}
            return RunStatus.SUCCEEDED, None
        if self.stopping:
            return RunStatus.INTERRUPTED, {"code": "server_stopped", "message": "the server stopped during the run"}
        if kind == "failed":
            assert terminal is not None
            return RunStatus.FAILED, {
                "code": _snake(str(terminal.get("code") or "training_failed")),
                "message": str(terminal.get("reason") or "the trainer reported a failure"),
            }
        if run.cancel_requested and (kind == "cancelled" or proc.terminated):
            return RunStatus.CANCELLED, None
        how = f"was killed by {signal_name(code)}" if code is not None and code < 0 else f"exited with status {code}"
        said = f" after reporting {kind!r}" if kind else " before reporting an end"
        tail = proc.last_stderr()
        return RunStatus.FAILED, {
            "code": "trainer_crashed",
            "message": f"the training process {how}{said}" + (f": {tail}" if tail else ""),
        }

    async def _finish(
        self, run: Run, status: RunStatus, error: dict[str, str] | None, proc: TrainerProcess | None
    ) -> None:
        """End a run: trainer.log, the durable `end` event, manifest.json, then publish `end`."""
        if run.terminal:
            return
        check_transition(run.status, status)
        loop = asyncio.get_running_loop()
        data = {"status": str(status), "error": error, "step": run.step}
        end: dict[str, Any] | None = None
        try:
            if proc is not None and proc.pid is not None:
                await loop.run_in_executor(None, self.store.write_trainer_log, run.run_id, proc.stderr_text())
            end = self.events.record(run.run_id, "end", data)
            await loop.run_in_executor(None, self.store.write_manifest, run.run_id, str(status), run.created_at)
        except Exception:
            # Streams must still end: publish the end in memory; a restart writes what is missing.
            log.exception("run %s: could not write its end evidence", run.run_id)
        if end is None:
            end = self.events.build(run.run_id, "end", data)
        self.events.publish(end)
        run.apply(end)
        log.info("run %s: %s%s", run.run_id, status, f" ({error['code']})" if error else "")

    # ----- cancel -----
    async def cancel(self, run_id: str) -> Run:
        """Ask a run to stop. A queued run ends at once; a training one gets SIGTERM (SIGKILL after the grace)."""
        run = self.get(run_id)
        if run.terminal:
            if run.status is RunStatus.CANCELLED:
                return run
            raise RunNotCancellable(f"run {run_id} already ended {run.status}; only queued or running runs cancel")
        run.cancel_requested = True
        if run_id in self._queue:
            self._queue.remove(run_id)
            await self._finish(run, RunStatus.CANCELLED, None, None)
            return run
        proc = self._active.get(run_id)
        if proc is not None and not proc.terminated:
            proc.terminate()
            self._arm_killer(proc)
        return run

    # ----- resume -----
    async def resume(self, run_id: str) -> Run:
        """Reopen an interrupted or failed run and queue it to continue from its last checkpoint (whose file must
        still hash to what was recorded). RunNotResumable (409) otherwise; QueueFull (429) when the queue is full."""
        run = self.get(run_id)
        checkpoint = self._resumable_checkpoint(run)
        self._check_queue_room()
        await self.catalog.require(str(run.config["dataset"]))
        path = self.store.run_dir(run_id) / CHECKPOINTS / str(checkpoint["name"])
        try:
            digest, size = await asyncio.get_running_loop().run_in_executor(None, sha256_file, path)
        except OSError as exc:
            raise RunNotResumable(f"run {run_id}: checkpoint {checkpoint['name']} cannot be read: {exc}") from exc
        if digest != checkpoint["sha256"] or size != checkpoint["bytes"]:
            raise RunNotResumable(
                f"run {run_id}: checkpoint {checkpoint['name']} no longer matches its recorded sha256 "
                f"({checkpoint['sha256']}); the evidence was changed, so the run is not resumed"
            )
        # The awaits above let other requests in (a second resume, say): look again before changing anything.
        if self._resumable_checkpoint(run) is not checkpoint:
            raise RunNotResumable(f"run {run_id} changed while its resume was checked; it is now {run.status}")
        self._check_queue_room()
        # Manifest first: a run folder with a manifest is an ended run, and this one is about to continue.
        self.store.reopen_run(run_id)
        data = {
            "status": "queued",
            "step": int(checkpoint["step"]),
            "total_steps": run.total_steps,
            "resumed_from": str(checkpoint["name"]),
        }
        run.apply(self.events.reopen(run_id, data))
        log.info("run %s: resumed from %s (step %d)", run_id, checkpoint["name"], checkpoint["step"])
        self._queue.append(run_id)
        self._pump()
        return run

    def _resumable_checkpoint(self, run: Run) -> dict[str, Any]:
        if run.status not in RESUMABLE:
            what = "is still active" if not run.terminal else f"ended {run.status}"
            raise RunNotResumable(f"run {run.run_id} {what}; only interrupted or failed runs resume")
        if not run.checkpoints:
            raise RunNotResumable(f"run {run.run_id} ended {run.status} before its first checkpoint; start a new run")
        return run.checkpoints[-1]

    async def _kill_after_grace(self, proc: TrainerProcess) -> None:
        await asyncio.sleep(self.limits.cancel_grace_s)
        if proc.returncode is None:
            log.warning(
                "run %s: trainer ignored SIGTERM for %.0f s; killing it", proc.run_id, self.limits.cancel_grace_s
            )
            proc.kill()

    def _arm_killer(self, proc: TrainerProcess) -> None:
        if proc.run_id not in self._killers:
            self._killers[proc.run_id] = asyncio.create_task(self._kill_after_grace(proc))

    # ----- start-up and shutdown -----
    def recover(self) -> list[str]:
        """Rebuild every run from the evidence directory. A run without an `end` event gets one with status
        `interrupted`, and a manifest; a torn last line of metrics.jsonl is cut off. Returns the interrupted ids."""
        interrupted: list[str] = []
        stored_runs = []
        for run_id in self.store.run_ids():
            try:
                stored_runs.append(self.store.read_run(run_id))
            except Exception:
                log.exception("run %s: evidence unreadable; skipped", run_id)
        for stored in sorted(stored_runs, key=lambda s: (s.config.get("created_at", ""), s.run_id)):
            if stored.torn_tail:
                log.warning("run %s: metrics.jsonl ended in a torn line; cut off", stored.run_id)
                self.store.repair_log(stored.run_id, stored.events)
            run = self._register(stored.run_id, stored.config)
            log_ = self.events.load(stored.run_id, stored.events)
            for event in stored.events:
                run.apply(event)
            if not log_.ended:
                # Its trainer died with the old server (PR_SET_PDEATHSIG); its scratch space is garbage.
                shutil.rmtree(self.work_dir / run.run_id, ignore_errors=True)
                end = self.events.record(
                    run.run_id,
                    "end",
                    {
                        "status": "interrupted",
                        "error": {"code": "server_stopped", "message": "the server stopped while the run was active"},
                        "step": run.step,
                    },
                )
                self.store.write_manifest(run.run_id, "interrupted", run.created_at)
                self.events.publish(end)
                run.apply(end)
                interrupted.append(run.run_id)
            elif self.store.read_manifest(run.run_id) is None:
                self.store.write_manifest(run.run_id, str(run.status), run.created_at)
        return interrupted

    async def shutdown(self) -> None:
        """Stop taking runs, end queued ones and SIGTERM training ones; each ends `interrupted`."""
        self.stopping = True
        while self._queue:
            run = self.runs[self._queue.popleft()]
            await self._finish(
                run,
                RunStatus.INTERRUPTED,
                {"code": "server_stopped", "message": "the server stopped before it ran"},
                None,
            )
        for proc in list(self._active.values()):
            proc.terminate()
            self._arm_killer(proc)
        if self._tasks:  # the killers SIGKILL any trainer still there after the grace period
            await asyncio.wait(set(self._tasks), timeout=self.limits.cancel_grace_s + 10)
        self.events.wake_all()
        self.store.close()


def _snake(code: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in code.lower()).strip("_")
    return cleaned if cleaned and cleaned[0].isalpha() else "training_failed"


def signal_name(code: int) -> str:
    """`SIGKILL` for -9 (for messages)."""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(code)
