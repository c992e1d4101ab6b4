"""The run manager: the public verbs on runs (create, list, get, cancel, resume), the queue, and shutdown.

Each run that leaves the queue gets a `RunSupervisor` (supervisor.py) that owns its trainer until the run's outcome;
every event goes through the `RunJournal` (journal.py); start-up recovery is recovery.py. The manager decides who
runs when, and answers clients.

Creation is all or nothing: a run exists (is listed, is found by its idempotency key) only once its folder and its
first event are durable; a disk that refuses them is a 507 and leaves nothing behind.

Resume: an `interrupted` or `failed` run with a checkpoint is reopened under the same run id. Its manifest goes, a
`status: queued` event with `resumed_from` follows its earlier `end` in the same log (ids carry on), and a trainer
continues from that checkpoint with step numbering carrying on. The earlier `end` stays: the log is append-only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError
from trainer_tinygrad.clock import utc_now
from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.files import sha256_file

from .datasets import DatasetCatalog
from .errors import (
    EvidenceDamagedError,
    ExecutorUnavailable,
    IdempotencyConflict,
    InsufficientStorage,
    InvalidParameter,
    QueueFull,
    RunNotCancellable,
    RunNotFound,
    RunNotResumable,
    ShuttingDown,
    ValidationFailed,
)
from .events import EventLog, new_event
from .evidence import CHECKPOINTS, EvidenceStore, EvidenceWriteError, StoredRun
from .executors import Executor, Launch, ResumePoint, Trainer
from .journal import RunJournal
from .lifecycle import LABEL_FIELDS, RESUMABLE, Run, RunStatus, new_run_id
from .provenance import ServiceProvenance
from .schemas import field_errors
from .supervisor import RunSupervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLimits:
    """How much the manager takes on at once, and its resume policy (from Settings, where the defaults live)."""

    max_concurrent: int
    max_queued: int
    cancel_grace_s: float
    auto_resume: bool = False  # a run's policy when its request does not say
    max_auto_resumes: int = 0


class RunManager:
    """Owns every run: creation (idempotent), the queue, supervisors, cancel, resume, shutdown."""

    def __init__(
        self,
        store: EvidenceStore,
        events: EventLog,
        journal: RunJournal,
        *,
        catalog: DatasetCatalog,
        identity: ServiceProvenance,
        executor: Executor,
        limits: RunLimits,
        device: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.store = store
        self.events = events
        self.journal = journal
        self.catalog = catalog
        self.identity = identity
        self.executor = executor
        self.limits = limits
        self.device = device
        self.runs: dict[str, Run] = {}
        #: Run folders recovery could not trust: run id -> what is wrong (listed, never written to).
        self.damaged: dict[str, str] = {}
        self._by_key: dict[str, str] = {}
        self._queue: deque[str] = deque()
        self._supervisors: dict[str, RunSupervisor] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self.stopping = False

    # ----- reads -----
    def get(self, run_id: str) -> Run:
        """A run by id; RunNotFound (404), or EvidenceDamagedError (409) for a folder that cannot be trusted."""
        run = self.runs.get(run_id)
        if run is None:
            if run_id in self.damaged:
                raise EvidenceDamagedError(
                    f"run {run_id} exists but its evidence cannot be trusted ({self.damaged[run_id]}); the server "
                    "leaves the folder as it found it for someone to inspect"
                )
            raise RunNotFound(f"no run with id {run_id!r}; list runs with GET /api/training/runs")
        return run

    def page(
        self, limit: int, cursor: str | None, status: str | None = None, tag: str | None = None
    ) -> tuple[list[Run], str | None]:
        """A page of runs, newest first (only those with `status`, carrying `tag`); the cursor is the id of the last
        run of the previous page."""
        ordered = sorted(self.runs.values(), key=lambda r: r.seq, reverse=True)
        if status is not None:
            ordered = [r for r in ordered if r.status == status]
        if tag is not None:
            ordered = [r for r in ordered if tag in r.tags]
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

    async def history(self, run: Run) -> Run:
        """The run with its per-step history in its view (read back from its log when the view was compacted)."""
        if run.compacted:
            log = await self.events.loaded(run.run_id)
            if run.compacted and log.events is not None:
                run.restore(log.events)
        return run

    def compact(self, run_id: str) -> None:
        """Drop the per-step history of an ended run whose log left memory."""
        run = self.runs.get(run_id)
        if run is not None and run.terminal:
            run.compact()

    def largest_checkpoint(self) -> int:
        """Bytes of the largest checkpoint any run has written (0 before the first)."""
        return max((int(c["bytes"]) for run in self.runs.values() for c in run.checkpoints), default=0)

    @property
    def queued(self) -> int:
        """Runs waiting for a slot."""
        return len(self._queue)

    @property
    def active(self) -> int:
        """Runs with a supervisor (a trainer starting or training)."""
        return len(self._supervisors)

    # ----- creation -----
    async def create(self, body: dict[str, Any]) -> tuple[Run, bool]:
        """Start a run from a schema-valid request body; (run, created). The same idempotency_key returns the
        same run (409 when the rest of the request differs)."""
        self._check_accepting()
        unavailable = self.executor.unavailable()
        if unavailable:
            raise ExecutorUnavailable(f"no run can start now: {unavailable}", retry_after=10)
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
        self._check_accepting()
        existing = self._by_idempotency_key(key, request)
        if existing is not None:
            return existing, False
        self._check_queue_room()
        config = resolve_config({k: v for k, v in request.items() if k not in LABEL_FIELDS}, dataset)
        errors = self.store.contract.errors("training-config.schema.json", config)
        if errors:
            raise ValidationFailed(_config_refusal(errors), errors=_config_fields(errors, request, config))
        run = self._new_run(config, request, key)
        self._queue.append(run.run_id)
        self._pump()
        return run, True

    def _check_accepting(self) -> None:
        if self.stopping:
            raise ShuttingDown(
                "the server is shutting down and takes no new work; retry on its successor", retry_after=5
            )

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
        while run_id in self.runs or run_id in self.damaged:
            run_id = new_run_id()
        created = utc_now()
        config_doc: dict[str, Any] = {
            "run_id": run_id,
            "config": config,
            "versions": dict(self.identity.versions),
            "device": self.device(),
            "created_at": created,
            "request": request,
            "idempotency_key": key,
            "auto_resume": bool(request.get("auto_resume", self.limits.auto_resume)),
        }
        first = new_event(run_id, 1, "status", {"status": "queued", "step": 0, "total_steps": int(config["steps"])})
        try:
            self.store.create_run(run_id, config_doc, self.provenance(run_id, config, created, [], None), first)
        except EvidenceWriteError as exc:
            raise InsufficientStorage(f"the run was not created: {exc}; nothing was kept") from exc
        run = self.register(StoredRun(run_id, config_doc, []))
        self.events.load(run_id, [])
        self.events.publish(first)
        run.apply(first)
        log.info("run %s: queued (%s, %s, %d steps)", run_id, config["dataset"], config["model"], config["steps"])
        return run

    def provenance(
        self,
        run_id: str,
        config: Mapping[str, Any],
        created: str,
        datasets: list[dict[str, Any]],
        placement: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """provenance.json: the code, the host and the dataset bytes behind a run."""
        document: dict[str, Any] = {
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
        if placement:
            document["placement"] = dict(placement)
        return document

    def register(self, stored: StoredRun) -> Run:
        """Add a run (new, or read back at start-up) to the table; its events are applied by the caller."""
        config_doc = stored.config
        self._seq += 1
        run = Run(
            run_id=stored.run_id,
            config=dict(config_doc["config"]),
            created_at=config_doc["created_at"],
            seq=self._seq,
            idempotency_key=config_doc.get("idempotency_key"),
            request=dict(config_doc.get("request") or {}),
            device=config_doc.get("device"),
            auto_resume=bool(config_doc.get("auto_resume", False)),
        )
        self.runs[run.run_id] = run
        if run.idempotency_key:
            self._by_key[run.idempotency_key] = run.run_id
        return run

    # ----- scheduling -----
    def _pump(self) -> None:
        while not self.stopping and self._queue and self.active < self.limits.max_concurrent:
            self._supervise(self.runs[self._queue.popleft()])

    def adopt(self, run: Run, trainer: Trainer) -> None:
        """Supervise a trainer that outlived the last server (found again at start-up), outside the queue."""
        self._supervise(run, attached=trainer)

    def _supervise(self, run: Run, attached: Trainer | None = None) -> None:
        supervisor = RunSupervisor(
            run,
            self.launch(run),
            journal=self.journal,
            store=self.store,
            executor=self.executor,
            provenance=lambda r, datasets, placement: self.provenance(
                r.run_id, r.config, r.created_at, datasets, placement
            ),
            cancel_grace_s=self.limits.cancel_grace_s,
            stopping=lambda: self.stopping,
            attached=attached,
        )
        self._supervisors[run.run_id] = supervisor
        task = asyncio.create_task(self._watch(supervisor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, supervisor: RunSupervisor) -> None:
        run = supervisor.run
        try:
            await supervisor.supervise()
        finally:
            self._supervisors.pop(run.run_id, None)
            if not supervisor.detached:
                await self._maybe_auto_resume(run)
                self._pump()

    def launch(self, run: Run) -> Launch:
        """What a trainer for the run's current attempt is started with."""
        return Launch(run.run_id, run.config, self._resume_point(run))

    def _resume_point(self, run: Run) -> ResumePoint | None:
        if run.resumed_from is None:
            return None
        record = next(c for c in run.checkpoints if c["name"] == run.resumed_from)
        return ResumePoint(
            name=str(record["name"]),
            path=self.store.run_dir(run.run_id) / CHECKPOINTS / str(record["name"]),
            sha256=str(record["sha256"]),
            bytes=int(record["bytes"]),
            step=int(record["step"]),
        )

    # ----- cancel -----
    async def cancel(self, run_id: str) -> Run:
        """Stop a run. A queued run ends `cancelled` at once, whatever its trainer is doing (a trainer still loading
        is stopped); a training one is asked to stop (SIGTERM, SIGKILL after the grace period)."""
        run = self.get(run_id)
        if run.terminal:
            if run.status is RunStatus.CANCELLED:
                return run
            raise RunNotCancellable(f"run {run_id} already ended {run.status}; only queued or running runs cancel")
        supervisor = self._supervisors.get(run_id)
        if run.status is RunStatus.QUEUED:
            if run_id in self._queue:
                self._queue.remove(run_id)
            if supervisor is not None:
                supervisor.cancel()
            await self.journal.finish(run, RunStatus.CANCELLED, None)
            return run
        if supervisor is not None:
            supervisor.cancel()
        return run

    # ----- resume -----
    async def resume(self, run_id: str) -> Run:
        """Reopen an interrupted or failed run and queue it to continue from its last checkpoint (whose file must
        still hash to what was recorded). RunNotResumable (409) otherwise; QueueFull (429) when the queue is full;
        InsufficientStorage (507) when the evidence disk has no room to go on."""
        self._check_accepting()
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
        self._check_accepting()
        if self._resumable_checkpoint(run) is not checkpoint:
            raise RunNotResumable(f"run {run_id} changed while its resume was checked; it is now {run.status}")
        self._check_queue_room()
        await self.history(run)
        if self._resumable_checkpoint(run) is not checkpoint:
            raise RunNotResumable(f"run {run_id} changed while its resume was checked; it is now {run.status}")
        self._reopen(run, checkpoint, {})
        return run

    def _reopen(self, run: Run, checkpoint: Mapping[str, Any], extra: dict[str, Any]) -> None:
        if run.run_id in self.journal.pending:
            raise InsufficientStorage(f"run {run.run_id}: its last end is still waiting for room on the evidence disk")
        data = {
            "status": "queued",
            "step": int(checkpoint["step"]),
            "total_steps": run.total_steps,
            "resumed_from": str(checkpoint["name"]),
            **extra,
        }
        try:
            self.journal.reopen(run, data)
        except EvidenceWriteError as exc:
            raise InsufficientStorage(f"run {run.run_id} was not resumed: {exc}") from exc
        log.info("run %s: resumed from %s (step %d)", run.run_id, checkpoint["name"], checkpoint["step"])
        self._queue.append(run.run_id)
        self._pump()

    async def _maybe_auto_resume(self, run: Run) -> None:
        """A run whose node was lost resumes by itself from its last checkpoint when its policy says so, at most
        `max_auto_resumes` times; each time is a `queued` event with `auto_resume` in the log."""
        if (
            self.stopping
            or run.status is not RunStatus.INTERRUPTED
            or (run.error or {}).get("code") != "node_lost"
            or not run.auto_resume
            or run.auto_resumes >= self.limits.max_auto_resumes
            or not run.checkpoints
        ):
            return
        checkpoint = run.checkpoints[-1]
        path = self.store.run_dir(run.run_id) / CHECKPOINTS / str(checkpoint["name"])
        digest, size = await asyncio.get_running_loop().run_in_executor(None, sha256_file, path)
        if digest != checkpoint["sha256"] or size != checkpoint["bytes"]:
            log.error("run %s: not resumed automatically: %s no longer hashes as recorded", run.run_id, path.name)
            return
        await self.history(run)
        if run.status is not RunStatus.INTERRUPTED or self.stopping:  # a client resumed it meanwhile, or we stop
            return
        attempt = {"attempt": run.auto_resumes + 1, "max": self.limits.max_auto_resumes, "after": "node_lost"}
        try:
            self._reopen(run, checkpoint, {"auto_resume": attempt})
        except InsufficientStorage as exc:
            log.error("run %s: not resumed automatically: %s", run.run_id, exc)

    def _resumable_checkpoint(self, run: Run) -> dict[str, Any]:
        if run.status not in RESUMABLE:
            what = "is still active" if not run.terminal else f"ended {run.status}"
            raise RunNotResumable(f"run {run.run_id} {what}; only interrupted or failed runs resume")
        if not run.checkpoints:
            raise RunNotResumable(f"run {run.run_id} ended {run.status} before its first checkpoint; start a new run")
        return run.checkpoints[-1]

    # ----- shutdown -----
    async def shutdown(self) -> None:
        """Take no new work; end queued runs `interrupted`; stop training ones (each ends `interrupted`, its `end`
        published before this returns, so every stream can deliver it), unless the executor's trainers go on
        without the server: those are left training, for the next server to find again."""
        self.stopping = True
        while self._queue:
            run = self.runs[self._queue.popleft()]
            await self.journal.finish(
                run, RunStatus.INTERRUPTED, {"code": "server_stopped", "message": "the server stopped before it ran"}
            )
        if self.executor.detaches:
            for supervisor in list(self._supervisors.values()):
                supervisor.detach()
            for task in list(self._tasks):
                task.cancel()
        else:
            for supervisor in list(self._supervisors.values()):
                supervisor.stop()
        if self._tasks:  # each supervisor SIGKILLs a trainer still there after the grace period
            await asyncio.wait(set(self._tasks), timeout=self.limits.cancel_grace_s + 10)


def _config_refusal(errors: list[ValidationError]) -> str:
    first = errors[0]
    where = ".".join(str(p) for p in first.absolute_path) or "(config)"
    return f"the resolved run config is out of range: {where}: {first.message}"


def _config_fields(
    errors: list[ValidationError], request: Mapping[str, Any], config: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Problem `errors` for a resolved config: `steps` computed from `epochs` is blamed on the request's `epochs`."""
    fields = field_errors(errors)
    for item in fields:
        if item["field"] == "steps" and "epochs" in request:
            item["field"] = "epochs"
            item["message"] = (
                f"{request['epochs']} epochs at batch_size {config['batch_size']} is {config['steps']} steps: "
                f"{item['message']}"
            )
    return fields
