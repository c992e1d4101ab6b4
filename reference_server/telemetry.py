"""Prometheus metrics through prometheus-client, in a registry of the server's own (never the library's global one).

Counters only ever go up, and count things as they happen: each run event the log publishes is observed once
(`observe_event`), so steps are counted as they are trained (a resumed run's re-trained steps count again), runs as
they start and end, checkpoints and their bytes as they are adopted. Values that mirror state (runs by status, the
queue, subscribers, damaged folders) are gauges read from their owners at scrape time by a custom collector.
Process metrics (CPU seconds, resident memory, open file descriptors) come from the library's process collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Gauges(Collector):
    """Gauges read from their owners when scraped."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        state = self.read()
        runs = GaugeMetricFamily("trainer_runs", "Runs by status", labels=["status"])
        for status, count in state["runs"].items():
            runs.add_metric([status], count)
        yield runs
        for name, help_, key in (
            ("trainer_runs_queued", "Runs waiting for a training slot", "queued"),
            ("trainer_runs_active", "Runs with a trainer starting or training", "active"),
            ("trainer_sse_subscribers", "Open event-stream connections", "subscribers"),
            ("trainer_evidence_damaged_runs", "Run folders whose evidence recovery could not trust", "damaged"),
            ("trainer_evidence_free_bytes", "Free bytes on the evidence disk", "free_bytes"),
            ("trainer_event_logs_in_memory", "Runs whose event logs are in memory", "logs_in_memory"),
        ):
            yield GaugeMetricFamily(name, help_, value=state[key])


class Telemetry:
    """The server's metrics; `render` is the exposition /metrics answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.steps = Counter(
            "trainer_steps_trained",
            "Optimizer steps trained, counted as trained (re-trained steps count again)",
            registry=r,
        )
        self.events = Counter("trainer_events", "Run events published", registry=r)
        self.started = Counter("trainer_runs_started", "Run attempts whose trainer started training", registry=r)
        self.ended = Counter("trainer_runs_ended", "Run attempts that ended, by outcome", ["status"], registry=r)
        self.checkpoints = Counter("trainer_checkpoints_written", "Checkpoints adopted into the evidence", registry=r)
        self.checkpoint_bytes = Counter(
            "trainer_checkpoint_bytes_written", "Bytes of checkpoints adopted into the evidence", registry=r
        )
        self.latency = Histogram(
            "trainer_http_request_duration_seconds",
            "HTTP request latency by route, method and status (SSE streams count their whole life)",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._counted: dict[str, int] = {}  # run id -> the last step counted for its current attempt

    def watch(self, read: Callable[[], Mapping[str, Any]]) -> None:
        """Register the gauges `read` returns at scrape time (runs, queued, active, subscribers, damaged)."""
        self.registry.register(_Gauges(read))

    def observe_event(self, event: Mapping[str, Any]) -> None:
        """Count one published run event."""
        self.events.inc()
        run_id, kind, data = event["run_id"], event["type"], event["data"]
        step = data.get("step")
        if kind == "status" and data.get("status") in ("queued", "running") and isinstance(step, int):
            self._counted[run_id] = step  # an attempt starts (again) from this step
            if data["status"] == "running":
                self.started.inc()
        elif kind in ("metric", "end") and isinstance(step, int):
            counted = self._counted.get(run_id, step)
            if step > counted:
                self.steps.inc(step - counted)
            self._counted[run_id] = max(counted, step)
            if kind == "end":
                self.ended.labels(status=str(data.get("status"))).inc()
                self._counted.pop(run_id, None)
        elif kind == "checkpoint":
            self.checkpoints.inc()
            if isinstance(data.get("bytes"), int):
                self.checkpoint_bytes.inc(data["bytes"])

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.latency.labels(route=route, method=method, status=str(status)).observe(seconds)

    def render(self) -> bytes:
        """The whole exposition text."""
        return generate_latest(self.registry)
