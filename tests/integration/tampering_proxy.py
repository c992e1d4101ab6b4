"""A proxy in front of the real reference server that changes exactly one thing, to prove the suite notices.

Every request is forwarded to the upstream server unchanged; a `Tamper` rewrites what comes back: headers, a JSON
body, a binary body, or the event stream block by block (it may delay, drop, repeat or replace blocks). Nothing
else differs from the real server, so a check that fails against the proxy fails for that one change.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from trainer_conformance.client import tls_context
from trainer_conformance.sse import SSEComment, SSEDecoder

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "trailer", "upgrade"}


class Tamper:
    """No change at all; subclasses override one hook."""

    def status(self, method: str, path: str, status: int) -> int:
        return status

    def headers(self, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return headers

    def json_body(self, method: str, path: str, body: Any) -> Any:
        return body

    def binary_body(self, path: str, body: bytes) -> bytes:
        return body

    def stream(self, path: str, blocks: Iterator[str]) -> Iterator[str]:
        """Blocks are whole SSE blocks (events or comments) without their blank-line terminator."""
        yield from blocks


def event_payload(block: str) -> dict[str, Any] | None:
    """The JSON data of an SSE block, when it is an event (decoded by the suite's WHATWG decoder)."""
    events = SSEDecoder().feed(block.encode() + b"\n\n")
    if not events:
        return None
    try:
        value = json.loads(events[0].data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def event_block(payload: dict[str, Any]) -> str:
    """An SSE block carrying `payload`, as the reference server writes one."""
    return f"id: {payload['id']}\nevent: {payload['type']}\ndata: {json.dumps(payload)}"


class TamperingProxy:
    """`with TamperingProxy(upstream, tamper) as proxy:` then point the suite at `proxy.url`."""

    def __init__(self, upstream: str, tamper: Tamper) -> None:
        self.upstream = upstream.rstrip("/")
        self.tamper = tamper
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TamperingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: TamperingProxy
    protocol_version = "HTTP/1.0"  # one exchange per connection: no keep-alive bookkeeping in a test proxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        tamper = self.owner.tamper
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        path = self.path.split("?", 1)[0]
        timeout = httpx.Timeout(60.0, read=None)
        with httpx.Client(base_url=self.owner.upstream, timeout=timeout, verify=tls_context()) as client:
            request = client.build_request(self.command, self.path, headers=headers, content=body)
            response = client.send(request, stream=True)
            try:
                out_headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP]
                out_headers = tamper.headers(path, out_headers)
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    self._relay_stream(response.status_code, out_headers, path, response)
                    return
                content = response.read()
                kind = response.headers.get("content-type", "")
                media = kind.split(";")[0].strip()
                if (media == "application/json" or media.endswith("+json")) and content:
                    original = json.loads(content)
                    document = tamper.json_body(self.command, path, copy.deepcopy(original))
                    if document != original:  # untouched bodies keep their exact bytes (evidence is hashed)
                        content = json.dumps(document).encode()
                elif content:
                    content = tamper.binary_body(path, content)
            finally:
                response.close()
        self.send_response_only(tamper.status(self.command, path, response.status_code))
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _relay_stream(self, status: int, headers: list[tuple[str, str]], path: str, response: httpx.Response) -> None:
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()
        try:
            for block in self.owner.tamper.stream(path, _blocks(response)):
                self.wfile.write(block.encode() + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward


def _blocks(response: httpx.Response) -> Iterator[str]:
    """The upstream stream decoded by the suite's decoder and written again block by block, as the reference server
    writes them (comments, `retry`, then `id`, `event` and `data` lines), so a transparent proxy changes nothing a
    client can see."""
    decoder = SSEDecoder()
    retry: int | None = None
    for chunk in response.iter_raw():
        for item in decoder.feed_with_comments(chunk):
            if isinstance(item, SSEComment):
                yield f":{item.text}"
                continue
            if item.retry is not None and item.retry != retry:
                retry = item.retry
                yield f"retry: {retry}"
            lines = [f"id: {item.id}"] if item.id else []
            lines += [f"event: {item.event}"] if item.event != "message" else []
            lines += [f"data: {line}" for line in item.data.split("\n")]
            yield "\n".join(lines)


# ---- the broken variants ---------------------------------------------------------------------------------------


class CreatedAs201(Tamper):
    """A run that is started answers 201 Created (with its Location), as RFC 9110 suggests, instead of 200."""

    def status(self, method: str, path: str, status: int) -> int:
        return 201 if method == "POST" and path == "/api/training/runs" and status == 200 else status


class CannedMetrics(Tamper):
    """Every run after the first reports the first run's losses and accuracies (canned metrics, replayed)."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.values: dict[int, tuple[float, float]] = {}

    def json_body(self, method: str, path: str, body: Any) -> Any:
        if method == "POST" and path == "/api/training/runs" and isinstance(body, dict) and self.first is None:
            self.first = body.get("run_id")
        match = re.fullmatch(r"/api/training/runs/([^/]+)/metrics", path)
        if match and isinstance(body, dict):
            for metric in body.get("metrics", []):
                if match.group(1) == self.first:
                    self.values[metric["step"]] = (metric["loss"], metric["accuracy"])
                elif metric["step"] in self.values:
                    metric["loss"], metric["accuracy"] = self.values[metric["step"]]
        return body


class FallingLoss(Tamper):
    """Reported training loss halves every 60 steps, whatever the seed or learning rate."""

    def json_body(self, method: str, path: str, body: Any) -> Any:
        if path.endswith("/metrics") and isinstance(body, dict):
            for metric in body.get("metrics", []):
                metric["loss"] = metric["loss"] * 0.5 ** (metric["step"] / 60)
        return body


class HeartbeatPadding(Tamper):
    """After the first few events, only heartbeats and repeats of the last state until the run ends."""

    def stream(self, path: str, blocks: Iterator[str]) -> Iterator[str]:
        last: str | None = None
        for count, block in enumerate(blocks):
            payload = event_payload(block)
            if payload is None or count < 4 or payload["type"] == "end":
                last = block if payload else last
                yield block
                continue
            yield ": heartbeat"
            if last is not None:
                yield last


class Throttled(Tamper):
    """At most one event every 1.5 s until 12 s after the run was said to be running, then the rest at once."""

    def stream(self, path: str, blocks: Iterator[str]) -> Iterator[str]:
        running_at: float | None = None
        for block in blocks:
            payload = event_payload(block)
            if payload is not None and (running_at is None or time.monotonic() - running_at < 12):
                time.sleep(1.5)
            yield block
            if running_at is None and payload and payload.get("data", {}).get("status") == "running":
                running_at = time.monotonic()


class StripHeaders(Tamper):
    """X-Phase and X-Content-Type-Options removed from every response."""

    def headers(self, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, v) for k, v in headers if k.lower() not in ("x-phase", "x-content-type-options")]


class MocksTrue(Tamper):
    """Health bodies say "mocks": true and every response says X-Mocks: true."""

    def headers(self, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, "true" if k.lower() == "x-mocks" else v) for k, v in headers]

    def json_body(self, method: str, path: str, body: Any) -> Any:
        if path in ("/healthz", "/readyz") and isinstance(body, dict):
            body["mocks"] = True
        return body


class FlippedCheckpoint(Tamper):
    """One byte of every downloaded checkpoint flipped (the list and headers still carry the true hash)."""

    def binary_body(self, path: str, body: bytes) -> bytes:
        if re.fullmatch(r"/api/training/runs/[^/]+/checkpoints/[^/]+", path):
            flipped = bytearray(body)
            flipped[-1] ^= 0x01
            return bytes(flipped)
        return body


class NeverFinishes(Tamper):
    """Runs never leave `running`: terminal statuses are rewritten and the stream's end never comes."""

    def json_body(self, method: str, path: str, body: Any) -> Any:
        if isinstance(body, dict) and body.get("status") in ("succeeded", "failed", "cancelled"):
            body["status"], body["finished_at"] = "running", None
        return body

    def stream(self, path: str, blocks: Iterator[str]) -> Iterator[str]:
        for block in blocks:
            payload = event_payload(block)
            if payload and (payload["type"] == "end" or payload.get("data", {}).get("status") == "succeeded"):
                continue
            yield block
        while True:  # keep the connection open, as a run that is still going would
            time.sleep(1)
            yield ": heartbeat"
