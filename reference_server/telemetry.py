"""Prometheus text exposition (format 0.0.4) without a client library: a few counters, gauges and a histogram.

Gauges that mirror state (runs by status, steps trained, subscribers, queue length) are read at scrape time
from their owners; only request latency is accumulated here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Histogram:
    """A histogram per label set (cumulative buckets, sum, count)."""

    name: str
    help: str
    label_names: tuple[str, ...]
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    _series: dict[tuple[str, ...], list[float]] = field(default_factory=dict)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        """Count one observation."""
        series = self._series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[i] += 1
        series[-2] += value
        series[-1] += 1

    def render(self) -> list[str]:
        """Exposition lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, series in sorted(self._series.items()):
            pairs = list(zip(self.label_names, labels, strict=True))
            for bound, count in zip(self.buckets, series, strict=False):
                lines.append(f"{self.name}_bucket{_labels([*pairs, ('le', _number(bound))])} {_number(count)}")
            lines.append(f"{self.name}_bucket{_labels([*pairs, ('le', '+Inf')])} {_number(series[-1])}")
            lines.append(f"{self.name}_sum{_labels(pairs)} {_number(series[-2])}")
            lines.append(f"{self.name}_count{_labels(pairs)} {_number(series[-1])}")
        return lines


Sample = tuple[dict[str, str], float]


@dataclass
class Scraped:
    """A metric whose samples are read from their owner when scraped."""

    name: str
    help: str
    kind: str  # "gauge" or "counter"
    read: Callable[[], list[Sample]]

    def render(self) -> list[str]:
        """Exposition lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.read():
            lines.append(f"{self.name}{_labels(sorted(labels.items()))} {_number(value)}")
        return lines


class Telemetry:
    """The metrics registry the /metrics handler renders."""

    def __init__(self) -> None:
        self.latency = Histogram(
            "trainer_http_request_duration_seconds",
            "HTTP request latency by route, method and status (SSE streams count their whole life)",
            ("route", "method", "status"),
        )
        self.scraped: list[Scraped] = []

    def add(self, name: str, help_: str, kind: str, read: Callable[[], list[Sample]]) -> None:
        """Register a metric read at scrape time."""
        self.scraped.append(Scraped(name, help_, kind, read))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.latency.observe((route, method, str(status)), seconds)

    def render(self) -> str:
        """The whole exposition text."""
        lines: list[str] = []
        for metric in self.scraped:
            lines += metric.render()
        lines += self.latency.render()
        return "\n".join(lines) + "\n"
