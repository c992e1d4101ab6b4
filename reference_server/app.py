"""The route table and the service's parts, wired once.

handlers (parse, delegate) -> RunManager (queue, verbs) -> RunSupervisor (one trainer, through an executor)
    -> RunJournal -> EventLog (metrics.jsonl, SSE fan-out) -> EvidenceStore (the only writer under evidence/)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tornado.web import Application, RequestHandler, URLSpec

from . import routes
from .datasets import DatasetCatalog
from .events import EventLog
from .evidence import EvidenceStore, FolderLock
from .executors.local import LocalExecutor
from .handlers import (
    CancelHandler,
    CheckpointFileHandler,
    CheckpointsHandler,
    DatasetFileHandler,
    DatasetsHandler,
    EventStreamHandler,
    EvidenceFileHandler,
    EvidenceHandler,
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    OpenApiHandler,
    Policy,
    ReadyHandler,
    ResumeHandler,
    RunHandler,
    RunMetricsHandler,
    RunsHandler,
)
from .health import Readiness
from .journal import RunJournal
from .provenance import ServiceProvenance
from .recovery import RecoveryReport, recover
from .runs import RunLimits, RunManager
from .schemas import Contract, default_contract
from .settings import Settings
from .telemetry import Telemetry

log = logging.getLogger(__name__)
access_log = logging.getLogger("reference_server.access")

#: How often end evidence that a full disk refused is tried again.
PENDING_RETRY_S = 5.0


@dataclass
class Service:
    """Every long-lived part of the server; `start` takes the evidence folder and recovers runs, `stop` ends them."""

    settings: Settings
    identity: ServiceProvenance
    contract: Contract
    store: EvidenceStore
    events: EventLog
    journal: RunJournal
    catalog: DatasetCatalog
    executor: LocalExecutor
    manager: RunManager
    readiness: Readiness
    telemetry: Telemetry
    lock: FolderLock
    env: dict[str, str] = field(default_factory=dict)
    streams: set[RequestHandler] = field(default_factory=set)
    _retry_task: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        identity: ServiceProvenance | None = None,
        env: Mapping[str, str] | None = None,
        contract: Contract | None = None,
    ) -> Service:
        """Assemble the parts from settings (nothing starts yet)."""
        env = dict(os.environ if env is None else env)
        identity = identity or ServiceProvenance.detect(env)
        contract = contract or default_contract()
        store = EvidenceStore(settings.evidence_dir, contract)
        events = EventLog(store, max_subscribers=settings.max_sse_subscribers)
        journal = RunJournal(store, events)
        catalog = DatasetCatalog(settings.data_dir)
        executor = LocalExecutor(
            settings.resolved_work_dir(), catalog.root, env=env, python=sys.executable, nice=settings.trainer_nice
        )
        manager = RunManager(
            store,
            events,
            journal,
            catalog=catalog,
            identity=identity,
            executor=executor,
            limits=RunLimits(settings.max_concurrent_runs, settings.max_queued_runs, settings.cancel_grace_s),
        )
        readiness = Readiness(
            store,
            catalog,
            identity,
            executor,
            min_free_bytes=settings.min_free_bytes,
            largest_checkpoint=manager.largest_checkpoint,
            pending_ends=lambda: len(journal.pending),
        )
        manager.device = readiness.device_name
        telemetry = Telemetry()
        lock = FolderLock(store.training)
        service = cls(
            settings,
            identity,
            contract,
            store,
            events,
            journal,
            catalog,
            executor,
            manager,
            readiness,
            telemetry,
            lock,
            env,
        )
        service._register_metrics()
        return service

    def _register_metrics(self) -> None:
        m, t = self.manager, self.telemetry
        t.add("trainer_runs", "Runs by status", "gauge", lambda: [({"status": s}, n) for s, n in m.counts().items()])
        t.add(
            "trainer_steps_trained_total",
            "Optimizer steps trained, summed over every run this server knows",
            "counter",
            lambda: [({}, sum(r.step for r in m.runs.values()))],
        )
        t.add("trainer_runs_queued", "Runs waiting for a training slot", "gauge", lambda: [({}, m.queued)])
        t.add("trainer_runs_active", "Training processes alive", "gauge", lambda: [({}, m.active)])
        t.add(
            "trainer_sse_subscribers", "Open event-stream connections", "gauge", lambda: [({}, self.events.subscribers)]
        )
        t.add(
            "trainer_events_total",
            "Run events published since this server started",
            "counter",
            lambda: [({}, self.events.appended_total)],
        )
        t.add(
            "trainer_evidence_damaged_runs",
            "Run folders whose evidence recovery could not trust",
            "gauge",
            lambda: [({}, len(m.damaged))],
        )
        started = time.time()
        t.add("trainer_process_start_time_seconds", "Server start, Unix time", "gauge", lambda: [({}, started)])

    async def start(self) -> RecoveryReport:
        """Take the evidence folder (FolderLocked when another server has it), rebuild runs from it (active ones
        become `interrupted`), start the executor probe and the retry of end evidence a full disk refused."""
        self.lock.acquire(self.identity.commit)
        self.store.prepare()
        report = await recover(self.store, self.events, self.journal, self.manager.register, self.executor.forget)
        self.manager.damaged.update(report.damaged)
        self.readiness.start()
        self._retry_task = asyncio.create_task(self._retry_pending())
        return report

    async def _retry_pending(self) -> None:
        while True:
            await asyncio.sleep(PENDING_RETRY_S)
            if self.journal.pending:
                try:
                    await self.journal.retry_pending()
                except Exception:
                    log.exception("retrying end evidence failed")

    async def stop(self) -> None:
        """Take no new work; end every run (`interrupted`) and publish its end; then let open streams deliver what
        is left (at most `shutdown_drain_s`), release the worker threads and the evidence folder."""
        await self.manager.shutdown()
        if self._retry_task is not None:
            self._retry_task.cancel()
        with contextlib.suppress(Exception):
            await self.journal.retry_pending()
        self.events.close()
        deadline = time.monotonic() + self.settings.shutdown_drain_s
        while self.streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.executor.close()
        self.catalog.close()
        self.store.close()
        self.lock.release()

    def application(self) -> Application:
        """The Tornado application with the route table (generated from routes.PATHS)."""
        run_deps = {"manager": self.manager, "contract": self.contract, "store": self.store}
        stream = {
            "manager": self.manager,
            "events": self.events,
            "heartbeat_s": self.settings.heartbeat_s,
            "retry_ms": self.settings.sse_retry_ms,
            "streams": self.streams,
        }
        handlers: dict[str, tuple[type[RequestHandler], dict[str, Any]]] = {
            "runs": (RunsHandler, run_deps),
            "run": (RunHandler, run_deps),
            "run_metrics": (RunMetricsHandler, run_deps),
            "run_cancel": (CancelHandler, run_deps),
            "run_resume": (ResumeHandler, run_deps),
            "run_checkpoints": (CheckpointsHandler, run_deps),
            "run_checkpoint": (CheckpointFileHandler, run_deps),
            "run_evidence": (EvidenceHandler, run_deps),
            "run_evidence_file": (EvidenceFileHandler, run_deps),
            "events": (EventStreamHandler, stream),
            "datasets": (DatasetsHandler, {"catalog": self.catalog}),
            "dataset_file": (DatasetFileHandler, {"catalog": self.catalog}),
            "healthz": (HealthHandler, {"readiness": self.readiness}),
            "readyz": (ReadyHandler, {"readiness": self.readiness}),
            "metrics": (MetricsHandler, {"telemetry": self.telemetry}),
            "openapi": (OpenApiHandler, {"document": self.contract.openapi()}),
        }
        table = [URLSpec(routes.pattern(name), *handlers[name], name=name) for name in routes.PATHS]
        policy = Policy(
            commit=self.identity.commit,
            max_body_bytes=self.settings.max_body_bytes,
            max_header_bytes=self.settings.max_header_bytes,
            api_token=self.settings.api_token,
            protect_reads=self.settings.protect_reads,
            write_timeout_s=self.settings.write_timeout_s,
        )
        return Application(
            table,
            policy=policy,
            default_handler_class=NotFoundHandler,
            log_function=self._log_request,
            compress_response=False,  # never on the event stream; JSON bodies are small
        )

    def _log_request(self, handler: RequestHandler) -> None:
        status = handler.get_status()
        seconds = handler.request.request_time()
        route = type(handler).__name__.removesuffix("Handler") or "Unknown"
        self.telemetry.observe_request(route, handler.request.method or "?", status, seconds)
        level = logging.WARNING if status >= 500 else logging.INFO
        request_id = handler._headers.get("X-Request-ID", "-")
        access_log.log(
            level,
            "%d %s %s %.1fms rid=%s",
            status,
            handler.request.method,
            handler.request.path,  # never the query or headers: a token must not reach the log
            seconds * 1000,
            request_id,
        )
