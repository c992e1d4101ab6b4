"""Reads an SSE response incrementally, timing every event on arrival, and keeps the raw stream as evidence.

For a stream named N it writes `sse/N.raw` (the bytes exactly as received), `sse/N.chunks.jsonl` (each network
read: seconds since the request was sent, byte offset, length) and `sse/N.events.jsonl` (each decoded event with
its arrival time), so a reader can check any timing claim in the report against the bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .failures import TargetUnreachable
from .folder import VerifyFolder
from .probes import Exchange, RecordingClient
from .sse import ServerSentEvent, SSEDecoder

#: How long to wait for the server to close the stream after the final `end` event.
CLOSE_GRACE_S = 5.0
#: A stream that sends nothing at all (not even a heartbeat comment) for this long is considered stalled.
STALL_S = 15.0


@dataclass
class ReceivedEvent:
    """One event as it arrived: seconds since subscribing, wall time, the SSE fields and the parsed JSON data."""

    arrival_s: float
    arrival_wall: float
    sse: ServerSentEvent
    payload: Any = None
    parse_error: str | None = None

    @property
    def state_key(self) -> tuple[str, Any] | None:
        """What training state the event carries: (type, step) for metric/checkpoint, (type, status) for
        status/end; None for anything else (so it can never count as new state)."""
        payload = self.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            return None
        kind, data = payload.get("type"), payload["data"]
        if kind in ("metric", "checkpoint"):
            return (kind, data.get("step"))
        if kind in ("status", "end"):
            return (kind, data.get("status"))
        return None


@dataclass
class StreamRecording:
    """Everything observed on one SSE connection."""

    name: str
    subscribed_wall: float
    exchange: Exchange | None = None
    events: list[ReceivedEvent] = field(default_factory=list)
    comments: list[tuple[float, str]] = field(default_factory=list)
    bytes_received: int = 0
    #: `closed` (the server ended the stream), `deadline`, `stalled`, `open_after_end`, `http_status` or `error`.
    ended: str = ""
    error: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def closed_by_server(self) -> bool:
        """True when the server closed the stream itself."""
        return self.ended == "closed"

    def new_state_events(self) -> list[ReceivedEvent]:
        """The events that carry training state not seen earlier on the stream (repeats and comments excluded)."""
        seen: set[tuple[str, Any]] = set()
        fresh = []
        for event in self.events:
            key = event.state_key
            if key is not None and key not in seen:
                seen.add(key)
                fresh.append(event)
        return fresh

    def running_since(self) -> float:
        """Seconds after subscribing at which the stream said the run was running (0 when it never said so)."""
        for event in self.events:
            payload = event.payload if isinstance(event.payload, dict) else {}
            data = payload.get("data")
            if payload.get("type") == "status" and isinstance(data, dict) and data.get("status") == "running":
                return float(event.arrival_s)
        return 0.0


def read_event_stream(
    client: RecordingClient,
    folder: VerifyFolder,
    name: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    deadline: float,
    recording: StreamRecording | None = None,
    on_event: Callable[[ReceivedEvent], None] | None = None,
) -> StreamRecording:
    """Subscribe and read until the server closes, the stream stalls, or `deadline` (time.monotonic) passes.

    After an `end` event the server gets CLOSE_GRACE_S to close the connection. Never raises for transport
    problems: they are recorded in `ended`/`error` for the checks to judge. Pass `recording` to watch it fill from
    another thread; `on_event` is called with each event as it arrives.
    """
    started = time.monotonic()
    if recording is None:
        recording = StreamRecording(name=name, subscribed_wall=time.time())
    recording.subscribed_wall = time.time()
    raw = bytearray()
    chunks: list[str] = []
    decoder = SSEDecoder()
    read_timeout = min(STALL_S, max(0.5, deadline - started))
    try:
        with client.stream(path, params=params, headers=headers, read_timeout=read_timeout) as (exchange, response):
            recording.exchange = exchange
            exchange.body_note = f"[event stream: sse/{name}.raw, sse/{name}.events.jsonl]"
            if response.status_code != 200:
                exchange.body = response.read()
                exchange.body_note = None
                recording.ended = "http_status"
                return recording
            stop_at = deadline
            recording.ended = "closed"
            for chunk in response.iter_raw():
                now = time.monotonic()
                chunks.append(json.dumps({"t": round(now - started, 6), "offset": len(raw), "bytes": len(chunk)}))
                raw.extend(chunk)
                seen_comments = len(decoder.comments)
                for event in decoder.feed(chunk):
                    received = ReceivedEvent(arrival_s=now - started, arrival_wall=time.time(), sse=event)
                    try:
                        received.payload = json.loads(event.data)
                    except ValueError as exc:
                        received.parse_error = str(exc)
                    recording.events.append(received)
                    if on_event is not None:
                        on_event(received)
                    if event.event == "end":
                        stop_at = min(stop_at, now + CLOSE_GRACE_S)
                recording.comments += [(now - started, c) for c in decoder.comments[seen_comments:]]
                if now >= stop_at:
                    ended_after_end = any(e.sse.event == "end" for e in recording.events)
                    recording.ended = "open_after_end" if ended_after_end else "deadline"
                    break
            decoder.close()
    except TargetUnreachable as exc:
        recording.ended, recording.error = "error", str(exc)
    except httpx.ReadTimeout:
        after_end = any(e.sse.event == "end" for e in recording.events)
        recording.ended = "open_after_end" if after_end else ("deadline" if time.monotonic() >= deadline else "stalled")
    except httpx.HTTPError as exc:
        recording.ended, recording.error = "error", f"{type(exc).__name__}: {exc}"
    recording.bytes_received = len(raw)
    recording.files = _write(folder, name, bytes(raw), chunks, recording)
    return recording


def _write(folder: VerifyFolder, name: str, raw: bytes, chunks: list[str], recording: StreamRecording) -> list[str]:
    lines = [
        json.dumps(
            {
                "arrival_s": round(e.arrival_s, 6),
                "arrival_wall": round(e.arrival_wall, 6),
                "id": e.sse.id,
                "event": e.sse.event,
                "retry": e.sse.retry,
                "data": e.sse.data,
            }
        )
        for e in recording.events
    ]
    summary = {
        "name": name,
        "url": recording.exchange.url if recording.exchange else None,
        "probe": recording.exchange.probe if recording.exchange else None,
        "ended": recording.ended,
        "error": recording.error,
        "bytes": len(raw),
        "events": len(recording.events),
        "comments": [[round(t, 6), c] for t, c in recording.comments],
    }
    return [
        folder.write_bytes(f"sse/{name}.raw", raw),
        folder.write_text(f"sse/{name}.chunks.jsonl", "".join(c + "\n" for c in chunks)),
        folder.write_text(f"sse/{name}.events.jsonl", "".join(line + "\n" for line in lines)),
        folder.write_json(f"sse/{name}.summary.json", summary),
    ]
