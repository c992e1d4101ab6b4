"""The route table and the service's parts, wired once.

handlers (parse, delegate) -> RunManager (one state table, queue, trainer processes)
    -> EventLog (metrics.jsonl, SSE fan-out) -> EvidenceStore (the only writer under evidence/)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tornado.web import Application, RequestHandler

from .datasets import DatasetCatalog
from .events import EventLog
from .evidence import EvidenceStore
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
from .provenance import ServiceProvenance
from .runs import RunLimits, RunManager
from .schemas import Contract, default_contract
from .settings import Settings
from .telemetry import Telemetry

access_log = logging.getLogger("reference_server.access")

RUN = r"/api/training/runs/(?P<run_id>[^/]+)"


@dataclass
class Service:
    """Every long-lived part of the server; `start` recovers runs and probes the device, `stop` ends runs."""

    settings: Settings
    identity: ServiceProvenance
    contract: Contract
    store: EvidenceStore
    events: EventLog
    catalog: DatasetCatalog
    manager: RunManager
    readiness: Readiness
    telemetry: Telemetry
    env: dict[str, str] = field(default_factory=dict)

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
        catalog = DatasetCatalog(settings.data_dir)
        readiness = Readiness(store, catalog, identity, python=sys.executable, env=env)
        manager = RunManager(
            store,
            events,
            catalog,
            identity,
            work_dir=settings.resolved_work_dir(),
            limits=RunLimits(settings.max_concurrent_runs, settings.max_queued_runs, settings.cancel_grace_s),
            env=env,
            device=readiness.device_name,
        )
        telemetry = Telemetry()
        service = cls(settings, identity, contract, store, events, catalog, manager, readiness, telemetry, env)
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
        started = time.time()
        t.add("trainer_process_start_time_seconds", "Server start, Unix time", "gauge", lambda: [({}, started)])

    def start(self) -> list[str]:
        """Create the evidence tree, rebuild runs from it (active ones become `interrupted`), start the device
        probe. Call on the running loop. Returns the ids of the runs found interrupted."""
        self.store.prepare()
        interrupted = self.manager.recover()
        self.readiness.start()
        return interrupted

    async def stop(self) -> None:
        """End every run (`interrupted`) and release the worker threads."""
        await self.manager.shutdown()
        self.catalog.close()

    def application(self) -> Application:
        """The Tornado application with the route table."""
        run_deps = {"manager": self.manager, "contract": self.contract, "store": self.store}
        stream = {
            "manager": self.manager,
            "events": self.events,
            "heartbeat_s": self.settings.heartbeat_s,
            "retry_ms": self.settings.sse_retry_ms,
        }
        routes: list[tuple[str, type[RequestHandler], dict[str, Any]]] = [
            (r"/api/training/runs", RunsHandler, run_deps),
            (RUN, RunHandler, run_deps),
            (RUN + r"/metrics", RunMetricsHandler, run_deps),
            (RUN + r"/cancel", CancelHandler, run_deps),
            (RUN + r"/resume", ResumeHandler, run_deps),
            (RUN + r"/checkpoints", CheckpointsHandler, run_deps),
            (RUN + r"/checkpoints/(?P<name>[^/]+)", CheckpointFileHandler, run_deps),
            (RUN + r"/evidence", EvidenceHandler, run_deps),
            (RUN + r"/evidence/(?P<file>.+)", EvidenceFileHandler, run_deps),
            (r"/api/events/training", EventStreamHandler, stream),
            (r"/api/datasets", DatasetsHandler, {"catalog": self.catalog}),
            (r"/api/datasets/(?P<name>[^/]+)/files/(?P<file>[^/]+)", DatasetFileHandler, {"catalog": self.catalog}),
            (r"/healthz", HealthHandler, {"readiness": self.readiness}),
            (r"/readyz", ReadyHandler, {"readiness": self.readiness}),
            (r"/metrics", MetricsHandler, {"telemetry": self.telemetry}),
            (r"/openapi.json", OpenApiHandler, {"document": self.contract.openapi()}),
        ]
        policy = Policy(
            commit=self.identity.commit,
            max_body_bytes=self.settings.max_body_bytes,
            max_header_bytes=self.settings.max_header_bytes,
            api_token=self.settings.api_token,
            protect_reads=self.settings.protect_reads,
        )
        return Application(
            routes,
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
