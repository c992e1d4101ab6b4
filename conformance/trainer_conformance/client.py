"""A typed Python client for any server that speaks this project's contract: start and follow training runs.

    from trainer_conformance import TrainerClient

    with TrainerClient("http://127.0.0.1:8080") as client:
        run = client.create_run(steps=300)
        for event in client.events(run.run_id):      # reconnects with Last-Event-ID if the stream drops
            ...
        weights = client.load_checkpoint(run.run_id, client.checkpoints(run.run_id)[-1].name)

It needs only HTTP (httpx), numpy and safetensors: no server, no tinygrad. Errors the server answers with (RFC 9457
problem+json) raise `APIError` with its status, `code` and `detail`; no answer at all raises `TargetUnreachable`;
a checkpoint whose bytes do not hash to what the server listed raises `ChecksumMismatch`. All three are
`ConformanceError`s (see failures.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import safetensors.numpy

from .failures import APIError, ChecksumMismatch, TargetUnreachable
from .folder import write_atomic
from .sse import SSEDecoder


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS settings (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), built once a process:
    httpx builds them for every Client otherwise, reading the whole CA bundle each time (~25 ms of CPU here), and a
    suite session opens a client per event stream besides its own."""
    return httpx.create_ssl_context()


#: Statuses in which a run will not change again unless resumed.
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


@dataclass(frozen=True)
class Run:
    """A run as the server describes it (run.schema.json); `raw` is the whole body."""

    run_id: str
    status: str
    config: dict[str, Any]
    progress: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    latest_metrics: dict[str, Any] | None
    error: Any
    raw: dict[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        """True in a terminal status (succeeded, failed, cancelled, interrupted)."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Run:
        """A Run from a run.schema.json body."""
        return cls(
            run_id=body["run_id"],
            status=body["status"],
            config=dict(body.get("config") or {}),
            progress=dict(body.get("progress") or {}),
            created_at=body.get("created_at", ""),
            started_at=body.get("started_at"),
            finished_at=body.get("finished_at"),
            latest_metrics=body.get("latest_metrics"),
            error=body.get("error"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class MetricsPage:
    """One page of GET .../metrics: training metrics, evaluations, and where the next page starts (None: last)."""

    metrics: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    next_after_step: int | None


@dataclass(frozen=True)
class CheckpointInfo:
    """One entry of a run's checkpoint list (checkpoint.schema.json)."""

    name: str
    step: int
    sha256: str
    bytes: int
    eval_loss: float | None
    eval_accuracy: float | None


@dataclass(frozen=True)
class Event:
    """One event of a run's stream (event.schema.json): id, type, time and data."""

    id: int
    type: str
    time: str
    data: dict[str, Any]
    run_id: str


class TrainerClient:
    """Runs, metrics, events, checkpoints of one server. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=headers, transport=transport, verify=tls_context()
        )

    def __enter__(self) -> TrainerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ---- runs --------------------------------------------------------------------------------------------------

    def create_run(self, **config: Any) -> Run:
        """POST /api/training/runs with `config` (run-create-request.schema.json); the server's defaults fill the
        rest. Accepts 200, 201 or 202."""
        return Run.from_json(self._json("POST", "/api/training/runs", json=config))

    def get_run(self, run_id: str) -> Run:
        """GET one run."""
        return Run.from_json(self._json("GET", _run(run_id)))

    def list_runs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Run]:
        """Every run, newest first, following `next_cursor` from page to page."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"status": status} if status else {})}
            if cursor:
                params["cursor"] = cursor
            body = self._json("GET", "/api/training/runs", params=params)
            yield from (Run.from_json(r) for r in body["runs"])
            cursor = body.get("next_cursor")
            if not cursor:
                return

    def wait(self, run_id: str, *, timeout: float = 600.0, poll_s: float = 0.5) -> Run:
        """Poll until the run is in a terminal status; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.finished:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout:g} s")
            time.sleep(poll_s)

    def cancel(self, run_id: str) -> Run:
        """POST .../cancel: stop a queued or running run."""
        return Run.from_json(self._json("POST", _run(run_id, "cancel")))

    def resume(self, run_id: str) -> Run:
        """POST .../resume: continue an interrupted or failed run from its last intact checkpoint."""
        return Run.from_json(self._json("POST", _run(run_id, "resume")))

    # ---- metrics and events -------------------------------------------------------------------------------------

    def metrics_pages(self, run_id: str, *, after_step: int | None = None, limit: int = 100) -> Iterator[MetricsPage]:
        """Every page of the run's metrics from `after_step` on."""
        while True:
            params: dict[str, Any] = {"limit": limit, **({"after_step": after_step} if after_step is not None else {})}
            body = self._json("GET", _run(run_id, "metrics"), params=params)
            page = MetricsPage(list(body["metrics"]), list(body["evals"]), body.get("next_after_step"))
            yield page
            if page.next_after_step is None or not page.metrics:
                return
            after_step = page.next_after_step

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Every training metric of the run, all pages joined."""
        return [m for page in self.metrics_pages(run_id) for m in page.metrics]

    def events(
        self, run_id: str, *, last_event_id: str | None = None, reconnects: int = 10, read_timeout: float = 60.0
    ) -> Iterator[Event]:
        """The run's events as they happen, from the first (or after `last_event_id`) to `end`.

        A stream that drops before its `end` is reopened with `Last-Event-ID` (the last dispatched id), after the
        server's `retry` delay, at most `reconnects` times in a row; no event is lost or repeated.
        """
        failures = 0
        while True:
            decoder = SSEDecoder()
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
            ended = False
            try:
                timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
                params = {"run_id": run_id}
                with self._http.stream("GET", "/api/events/training", params=params, headers=headers,
                                       timeout=timeout) as response:  # fmt: skip
                    if response.status_code != 200:
                        response.read()
                        raise _api_error(response)
                    for chunk in response.iter_raw():
                        for sse in decoder.feed(chunk):
                            payload = json.loads(sse.data)
                            last_event_id = decoder.last_event_id or last_event_id
                            failures = 0
                            yield Event(payload["id"], payload["type"], payload["time"], payload["data"], run_id)
                            ended = payload["type"] == "end"
                if ended:
                    return
            except httpx.TransportError as exc:
                if failures >= reconnects:
                    raise TargetUnreachable(
                        f"the event stream of {run_id} dropped {failures + 1} times: {exc}"
                    ) from exc
            else:
                if failures >= reconnects:
                    raise TargetUnreachable(f"the event stream of {run_id} closed before its end event")
            failures += 1
            time.sleep((decoder.retry or 1000) / 1000)

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's checkpoints, oldest first."""
        body = self._json("GET", _run(run_id, "checkpoints"))
        entries = [
            CheckpointInfo(c["name"], c["step"], c["sha256"], c["bytes"], c.get("eval_loss"), c.get("eval_accuracy"))
            for c in body["checkpoints"]
        ]
        return sorted(entries, key=lambda c: c.step)

    def download_checkpoint(self, run_id: str, name: str, path: Path | str) -> Path:
        """Download a checkpoint to `path` (a file, or a folder to put it in), verified by SHA-256 against the
        checkpoint list and the X-Checksum-SHA256 header; a mismatch raises ChecksumMismatch and writes nothing."""
        listed = {c.name: c for c in self.checkpoints(run_id)}
        if name not in listed:
            raise APIError(404, "checkpoint_not_found", f"run {run_id} lists no checkpoint {name}", {})
        target = Path(path)
        if target.is_dir():
            target = target / name
        digest = hashlib.sha256()
        chunks = []
        headers = {"Accept": "application/octet-stream"}
        with self._http.stream("GET", _run(run_id, "checkpoints", name), headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise _api_error(response)
            header = response.headers.get("x-checksum-sha256")
            for chunk in response.iter_bytes():
                digest.update(chunk)
                chunks.append(chunk)
        got = digest.hexdigest()
        if got != listed[name].sha256 or (header and header != got):
            raise ChecksumMismatch(f"{name}: downloaded sha256 {got}, listed {listed[name].sha256}, header {header}")
        write_atomic(target, b"".join(chunks))
        return target

    def load_checkpoint(self, run_id: str, name: str) -> dict[str, np.ndarray]:
        """A checkpoint's tensors as numpy arrays (downloaded and verified first)."""
        with tempfile.TemporaryDirectory(prefix="trainer-checkpoint-") as scratch:
            path = self.download_checkpoint(run_id, name, Path(scratch) / "checkpoint.safetensors")
            return dict(safetensors.numpy.load_file(str(path)))

    # ---- plumbing ----------------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TargetUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _api_error(response)
        body: dict[str, Any] = response.json()
        return body


def _run(run_id: str, *rest: str) -> str:
    return "/".join(["/api/training/runs", quote(run_id, safe=""), *(quote(part, safe="") for part in rest)])


def _api_error(response: httpx.Response) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or response.text[:300] or response.reason_phrase
    return APIError(response.status_code, str(body.get("code") or body.get("title") or "error"), str(detail), body)
