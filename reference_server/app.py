"""The route table and the service's parts, wired once.

handlers (parse, delegate) -> RunManager (queue, verbs) -> RunSupervisor (one trainer, through an executor)
    -> RunJournal -> EventLog (metrics.jsonl, SSE fan-out) -> EvidenceStore (the only writer under evidence/)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.web import Application, RequestHandler, URLSpec

from . import access, routes
from .assets import Assets, bundled
from .dashboard import PAGES
from .datasets import DatasetCatalog
from .events import EventLog
from .evidence import EvidenceStore, FolderLock
from .executors import Executor
from .executors.local import DEFAULT_COMMAND, LocalExecutor
from .handlers import (
    AssetHandler,
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
    PageHandler,
    Policy,
    ReadyHandler,
    ResumeHandler,
    RunHandler,
    RunMetricsHandler,
    RunsHandler,
    SessionHandler,
    VerificationFileHandler,
    VerificationHandler,
    VerificationsHandler,
)
from .health import Readiness
from .journal import RunJournal
from .provenance import ServiceProvenance
from .recovery import RecoveryReport, recover, settle_unended
from .runs import RunLimits, RunManager
from .schemas import Contract, default_contract
from .settings import ConfigError, Settings
from .telemetry import Telemetry
from .verification import VerificationReports

log = logging.getLogger(__name__)
access_log = logging.getLogger("reference_server.access")

#: How often end evidence that a full disk refused is tried again.
PENDING_RETRY_S = 5.0


def make_executor(settings: Settings, data_dir: Path, env: Mapping[str, str]) -> Executor:
    """The executor the settings name (Ray is imported only when chosen); ConfigError when it cannot be used.

    `--trainer-command` applies to both: the local executor runs it here, the Ray executor on the node (unset, each
    node runs its own interpreter's `-m trainer_tinygrad`)."""
    given = shlex.split(settings.trainer_command) if settings.trainer_command else None
    if settings.executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--executor ray needs Ray: pip install 'trainer-tinygrad-server[ray]' (make setup does)")
        from .executors.ray_cluster import RayExecutor

        return RayExecutor(
            settings.ray_address,
            data_dir=data_dir,
            env=env,
            cpus_per_run=settings.ray_cpus_per_run,
            command=given,
        )
    command = DEFAULT_COMMAND if given is None else given
    return LocalExecutor(settings.resolved_work_dir(), data_dir, env=env, command=command, nice=settings.trainer_nice)


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
    executor: Executor
    manager: RunManager
    readiness: Readiness
    telemetry: Telemetry
    lock: FolderLock
    assets: Assets
    reports: VerificationReports
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
        assets = bundled()  # AssetError when a vendored file is not the bytes its record names
        store = EvidenceStore(settings.evidence_dir, contract, assets)
        events = EventLog(store, max_subscribers=settings.max_sse_subscribers, cache_runs=settings.event_cache_runs)
        journal = RunJournal(store, events)
        catalog = DatasetCatalog(settings.data_dir)
        executor = make_executor(settings, catalog.root, env)
        manager = RunManager(
            store,
            events,
            journal,
            catalog=catalog,
            identity=identity,
            executor=executor,
            limits=RunLimits(
                settings.max_concurrent_runs,
                settings.max_queued_runs,
                settings.cancel_grace_s,
                auto_resume=settings.auto_resume,
                max_auto_resumes=settings.max_auto_resumes,
            ),
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
        events.on_evict = manager.compact
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
            assets,
            VerificationReports(settings.evidence_dir, contract),
            env,
        )
        service._register_metrics()
        return service

    def _register_metrics(self) -> None:
        m = self.manager
        self.events.observers.append(self.telemetry.observe_event)

        def free_bytes() -> int:
            try:
                return self.store.free_bytes()
            except OSError:
                return 0

        self.telemetry.watch(
            lambda: {
                "runs": m.counts(),
                "queued": m.queued,
                "active": m.active,
                "subscribers": self.events.subscribers,
                "damaged": len(m.damaged),
                "free_bytes": free_bytes(),
                "logs_in_memory": self.events.in_memory,
            }
        )

    async def start(self) -> RecoveryReport:
        """Take the evidence folder (FolderLocked when another server has it), rebuild runs from it (active ones
        become `interrupted`), start the executor probe and the retry of end evidence a full disk refused."""
        self.lock.acquire(self.identity.commit)
        self.store.prepare()
        connect = getattr(self.executor, "connect", None)
        if connect is not None:  # a cluster: connected (or found unreachable) before runs are looked for on it
            await connect()
        report = await recover(self.store, self.events, self.journal, self.manager, self.executor)
        self.manager.damaged.update(report.damaged)
        self.events.trim()  # recovery read every log; only the cache's worth of ended ones stays in memory
        self.readiness.start()
        self._retry_task = asyncio.create_task(self._background(report))
        return report

    async def _background(self, report: RecoveryReport) -> None:
        """Every few seconds: write end evidence a full disk refused; reconnect an executor that was unreachable
        and settle the runs that waited for it."""
        connect = getattr(self.executor, "connect", None)
        while True:
            await asyncio.sleep(PENDING_RETRY_S)
            try:
                if self.journal.pending:
                    await self.journal.retry_pending()
                if connect is not None and self.executor.unavailable() and await connect() and report.unended:
                    await settle_unended(report, self.journal, self.manager, self.executor)
            except Exception:
                log.exception("background retry failed")

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
            **{name: (PageHandler, {"page": page, "html": page.render(self.assets)}) for name, page in PAGES.items()},
            "static": (AssetHandler, {"assets": self.assets}),
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
            "session": (SessionHandler, {"contract": self.contract}),
            "verifications": (VerificationsHandler, {"reports": self.reports}),
            "verification": (VerificationHandler, {"reports": self.reports}),
            "verification_file": (VerificationFileHandler, {"reports": self.reports}),
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
            cors_origins=frozenset(self.settings.cors_origins),
        )
        token = self.settings.api_token
        return Application(
            table,
            policy=policy,
            cookie_secret=access.session_key(token) if token else None,
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
