"""The recording HTTP client every check goes through: each exchange is written to `probes/` as it happened.

A probe file holds the request line, headers and body, then the status line, headers and body (binary bodies are
summarised by size and SHA-256; the bytes themselves are saved where the caller asks). `probes/index.jsonl` lists
every exchange with its timing. Exchanges made before the verification folder exists (the first health probe names
the commit, and so the folder) are kept in memory and written when the folder is attached.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .client import tls_context
from .failures import CheckFailure, TargetUnreachable
from .folder import VerifyFolder

_TEXT_TYPES = ("application/json", "application/problem+json", "text/", "application/x-ndjson")
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization"}


def utc_now() -> str:
    """RFC 3339 UTC timestamp with microseconds and `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Exchange:
    """One request and its response (or the transport error that replaced it)."""

    seq: int
    method: str
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    started_wall: float
    elapsed_s: float = 0.0
    status: int = 0
    reason: str = ""
    http_version: str = "HTTP/1.1"
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    error: str | None = None
    probe: str = ""
    #: Set for streamed bodies: the files under sse/ that hold the body.
    body_note: str | None = None

    @property
    def request_id(self) -> str:
        """The X-Request-ID this exchange sent."""
        return next((v for k, v in self.request_headers if k.lower() == "x-request-id"), "")

    @property
    def content_type(self) -> str:
        """The response media type without parameters, lower-case."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The response body as JSON; a body that is not JSON fails the calling check, citing this probe."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckFailure(
                "Response is not JSON",
                f"{self.method} {self.url} answered a body that is not JSON: {exc}",
                [self.probe],
            ) from exc

    def server_date(self) -> float | None:
        """The `Date` header as a POSIX time, when present and parseable."""
        value = self.headers.get("date")
        if not value:
            return None
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None


class ProbeRecorder:
    """Numbers exchanges and writes their probe files (thread-safe: the SSE reader runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: list[Exchange] = []
        self.folder: VerifyFolder | None = None
        self.exchanges: list[Exchange] = []

    def next_seq(self) -> int:
        """The next exchange number, from 1."""
        with self._lock:
            self._seq += 1
            return self._seq

    def attach(self, folder: VerifyFolder) -> None:
        """Start writing to `folder`, including the exchanges recorded before it existed."""
        with self._lock:
            self.folder = folder
            pending, self._pending = self._pending, []
        for exchange in pending:
            self._write(exchange)

    def record(self, exchange: Exchange) -> None:
        """Keep the exchange and write its probe file (now, or when a folder is attached)."""
        slug = re.sub(r"[^A-Za-z0-9]+", "_", httpx.URL(exchange.url).path).strip("_")[:60] or "root"
        exchange.probe = f"probes/{exchange.seq:04d}-{exchange.method}-{slug}.http"
        with self._lock:
            self.exchanges.append(exchange)
            if self.folder is None:
                self._pending.append(exchange)
                return
        self._write(exchange)

    def write_index(self) -> None:
        """Write probes/index.jsonl: one line per exchange, in request order."""
        if self.folder is None:
            return
        lines = []
        for ex in sorted(self.exchanges, key=lambda e: e.seq):
            entry = {
                "seq": ex.seq,
                "method": ex.method,
                "url": ex.url,
                "status": ex.status,
                "request_id": ex.request_id,
                "started_at": datetime.fromtimestamp(ex.started_wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "elapsed_s": round(ex.elapsed_s, 6),
                "error": ex.error,
                "probe": ex.probe,
            }
            lines.append(json.dumps(entry) + "\n")
        self.folder.write_text("probes/index.jsonl", "".join(lines))

    def _write(self, ex: Exchange) -> None:
        assert self.folder is not None
        url = httpx.URL(ex.url)
        target = url.raw_path.decode("ascii", "replace")
        lines = [f"{ex.method} {target} HTTP/1.1", f"Host: {url.netloc.decode('ascii', 'replace')}"]
        lines += [f"{k}: {'<redacted>' if k.lower() in _SECRET_HEADERS else v}" for k, v in ex.request_headers]
        lines += ["", _body_text(ex.request_body, "application/json"), ""]
        if ex.error is not None:
            lines += [f"(no response after {ex.elapsed_s:.3f} s: {ex.error})"]
        else:
            lines += [f"{ex.http_version} {ex.status} {ex.reason}".rstrip()]
            # Raw header lines keep the server's own spelling and order.
            lines += [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in ex.headers.raw]
            lines += ["", ex.body_note or _body_text(ex.body, ex.content_type)]
        self.folder.write_text(ex.probe, "\n".join(lines) + "\n")


def _body_text(body: bytes, content_type: str) -> str:
    if not body:
        return ""
    if content_type.startswith(_TEXT_TYPES) or content_type.endswith("+json"):
        try:
            return body.decode()
        except UnicodeDecodeError:
            pass
    return f"[{len(body)} bytes of {content_type or 'unknown type'}, sha256 {hashlib.sha256(body).hexdigest()}]"


class RecordingClient:
    """httpx with every exchange recorded. Each request sends its own well-formed X-Request-ID unless given one."""

    def __init__(
        self,
        base_url: str,
        recorder: ProbeRecorder,
        *,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.recorder = recorder
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=False, verify=tls_context())
        self._session = uuid.uuid4().hex[:8]

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _headers(self, seq: int, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"X-Request-ID": f"tc-{self._session}-{seq:04d}", "Accept": "application/json", **self._auth}
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        """Send one request and return the recorded exchange (any status). No answer at all raises TargetUnreachable."""
        seq = self.recorder.next_seq()
        sent = self._headers(seq, headers)
        if json_body is not None:
            content = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        request = self._http.build_request(method, path, params=params, content=content, headers=sent)
        exchange = Exchange(
            seq=seq,
            method=method,
            url=str(request.url),
            request_headers=list(sent.items()),
            request_body=content or b"",
            started_wall=time.time(),
        )
        started = time.monotonic()
        try:
            response = self._http.send(request)
            exchange.body = response.read()
        except httpx.HTTPError as exc:
            exchange.elapsed_s = time.monotonic() - started
            exchange.error = f"{type(exc).__name__}: {exc}"
            self.recorder.record(exchange)
            raise TargetUnreachable(f"{method} {exchange.url}: {exchange.error}") from exc
        exchange.elapsed_s = time.monotonic() - started
        _fill_response(exchange, response)
        self.recorder.record(exchange)
        return exchange

    @contextmanager
    def stream(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Iterator[tuple[Exchange, httpx.Response]]:
        """Open a streamed GET (for SSE). The caller reads the body; the probe is written when the block exits."""
        seq = self.recorder.next_seq()
        sent = self._headers(seq, {"Accept": "text/event-stream", **(headers or {})})
        timeout = httpx.Timeout(self.timeout, read=read_timeout or self.timeout)
        exchange = Exchange(
            seq=seq,
            method="GET",
            url="",
            request_headers=list(sent.items()),
            request_body=b"",
            started_wall=time.time(),
        )
        started = time.monotonic()
        # A client of its own per stream: the reader runs in another thread while checks keep polling.
        with httpx.Client(base_url=self.base_url, timeout=timeout, verify=tls_context()) as http:
            request = http.build_request("GET", path, params=params, headers=sent)
            exchange.url = str(request.url)
            try:
                response = http.send(request, stream=True)
            except httpx.HTTPError as exc:
                exchange.elapsed_s = time.monotonic() - started
                exchange.error = f"{type(exc).__name__}: {exc}"
                self.recorder.record(exchange)
                raise TargetUnreachable(f"GET {exchange.url}: {exchange.error}") from exc
            _fill_response(exchange, response)
            try:
                yield exchange, response
            finally:
                response.close()
                exchange.elapsed_s = time.monotonic() - started
                self.recorder.record(exchange)


def _fill_response(exchange: Exchange, response: httpx.Response) -> None:
    exchange.status = response.status_code
    exchange.reason = response.reason_phrase
    exchange.http_version = response.http_version
    exchange.headers = response.headers
