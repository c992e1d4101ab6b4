"""Section 4: the per-run Server-Sent Events stream, read incrementally and timed on arrival."""

from __future__ import annotations

import math
from typing import Any

from ..expectations import expect_headers, expect_media_type, expect_status, expect_valid
from ..failures import CheckFailure, CheckSkipped
from ..registry import check
from ..session import RATE_EVENTS, RATE_WINDOW_S, Session
from ..stream import StreamRecording

_AREA = ("schemas/event.schema.json", "schemas/headers.json", "reference_server/")
#: A streamed value and the endpoint's are one number written twice: equal up to float formatting.
SAME_VALUE = {"rel_tol": 1e-9, "abs_tol": 1e-12}


def _files(stream: StreamRecording) -> list[str]:
    return [f for f in stream.files if f.endswith((".events.jsonl", ".raw", ".summary.json"))]


@check(
    "sse.headers",
    "The stream is an uncompressed text/event-stream",
    "GET /api/events/training?run_id=... answers 200 with Content-Type text/event-stream, the SSE header block "
    "of schemas/headers.json (Cache-Control: no-store, X-Accel-Buffering: no) and no Content-Encoding.",
    evidence="the stream's probe; `sse/main.summary.json`",
    needs={"main"},
    area=_AREA,
)
def headers(s: Session) -> dict[str, Any]:
    _, stream = s.main_stream()
    if stream.exchange is None:
        raise CheckFailure("No answer", f"subscribing failed: {stream.error}", _files(stream))
    exchange = stream.exchange
    expect_status(exchange, 200)
    expect_media_type(exchange, "text/event-stream")
    expect_headers(s.contract, exchange, "sse")
    if exchange.headers.get("content-encoding", "identity") != "identity":
        raise CheckFailure(
            "Compressed stream", f"Content-Encoding {exchange.headers['content-encoding']!r}", [exchange.probe]
        )
    return {"content_type": exchange.headers.get("content-type")}


@check(
    "sse.rate",
    f"At least {RATE_EVENTS} new-state events within {RATE_WINDOW_S:g} s",
    f"Subscribed right after starting a run with the target's default settings, at least {RATE_EVENTS} events "
    f"(not comments) arrive within {RATE_WINDOW_S:g} s of the run being running (the arrival of its `running` "
    "status event; the subscription itself when the stream has none), each carrying new training state: a metric "
    "or checkpoint of a step not seen before, or a status not seen before. Heartbeats and repeats do not count.",
    evidence="`sse/main.raw` (the bytes), `.chunks.jsonl` (each read's arrival), `.events.jsonl` (each event's)",
    needs={"main"},
    area=(*_AREA, "functions/trainer-tinygrad/"),
)
def rate(s: Session) -> dict[str, Any]:
    _, stream = s.main_stream()
    fresh = stream.new_state_events()
    opened = stream.running_since()
    closes = opened + RATE_WINDOW_S

    def inside(t: float) -> bool:
        return opened <= t <= closes

    in_window = [e for e in fresh if inside(e.arrival_s)]
    figures = {
        "window_opens_s": round(opened, 3),
        "new_state_events_in_window": len(in_window),
        "events_in_window": sum(1 for e in stream.events if inside(e.arrival_s)),
        "comments_in_window": sum(1 for t, _ in stream.comments if inside(t)),
        "new_state_events_within_10s_of_subscribing": sum(1 for e in fresh if e.arrival_s <= RATE_WINDOW_S),
        "first_event_s": round(stream.events[0].arrival_s, 3) if stream.events else None,
    }
    if len(in_window) < RATE_EVENTS:
        raise CheckFailure(
            "Too few events",
            f"{len(in_window)} events carrying new training state arrived in the {RATE_WINDOW_S:g} s after the run "
            f"was running ({opened:.2f} s after subscribing; needs {RATE_EVENTS}); {figures['events_in_window']} "
            f"events and {figures['comments_in_window']} comments arrived in that window",
            [*_files(stream), f"sse/{stream.name}.chunks.jsonl"],
        )
    figures["tenth_event_s"] = round(in_window[RATE_EVENTS - 1].arrival_s, 3)
    return figures


@check(
    "sse.ids",
    "Event ids increase by one",
    "Every event has an id; a stream subscribed from the start carries ids 1, 2, 3, ... in order, and each "
    "event's data has the same id and its `type` equals the SSE event name.",
    evidence="`sse/main.events.jsonl`, `sse/main.raw`",
    needs={"main"},
    area=_AREA,
)
def ids(s: Session) -> dict[str, Any]:
    _, stream = s.main_stream()
    evidence = _files(stream)
    if not stream.events:
        raise CheckFailure("No events", "the stream delivered no events", evidence)
    previous = 0
    for event in stream.events:
        if not event.sse.id.isdigit():
            raise CheckFailure("Bad event id", f"event id {event.sse.id!r} is not a decimal integer", evidence)
        current = int(event.sse.id)
        if current != previous + 1:
            raise CheckFailure("Ids not consecutive", f"id {current} follows id {previous}", evidence)
        payload = event.payload if isinstance(event.payload, dict) else {}
        if payload.get("id") != current or payload.get("type") != event.sse.event:
            raise CheckFailure(
                "SSE fields disagree with data",
                f"SSE id {current} event {event.sse.event!r}, data id {payload.get('id')!r} type "
                f"{payload.get('type')!r}",
                evidence,
            )
        previous = current
    return {"events": len(stream.events), "last_id": previous}


@check(
    "sse.payloads",
    "Event payloads are valid",
    "Every event's data is JSON valid against event.schema.json for the subscribed run id, and its numbers are finite.",
    evidence="`sse/main.events.jsonl`, `sse/main.raw`",
    needs={"main"},
    area=_AREA,
)
def payloads(s: Session) -> dict[str, Any]:
    main, stream = s.main_stream()
    evidence = _files(stream)
    for event in stream.events:
        if event.parse_error is not None:
            raise CheckFailure("Event data is not JSON", f"event {event.sse.id}: {event.parse_error}", evidence)
        expect_valid(s.contract, "event", event.payload, f"event {event.sse.id}", evidence)
        if event.payload["run_id"] != main.run_id:
            raise CheckFailure("Wrong run", f"event {event.sse.id} is for run {event.payload['run_id']}", evidence)
        numbers = [v for v in event.payload["data"].values() if isinstance(v, float)]
        if not all(math.isfinite(v) for v in numbers):
            raise CheckFailure("Non-finite value", f"event {event.sse.id}: {event.payload['data']}", evidence)
    kinds: dict[str, int] = {}
    for event in stream.events:
        kinds[event.sse.event] = kinds.get(event.sse.event, 0) + 1
    return {"events": kinds}


@check(
    "sse.agrees_with_metrics",
    "Streamed values equal the metrics endpoint's",
    "The stream's metric events and the metrics endpoint list the same steps with equal loss and accuracy; its "
    "checkpoint events equal the endpoint's evals (eval_loss, eval_accuracy) and the checkpoint list (sha256, "
    "bytes).",
    evidence="`sse/main.events.jsonl`; the metrics pages and checkpoint list probes",
    needs={"main"},
    area=(*_AREA, "schemas/metrics.schema.json"),
)
def agrees_with_metrics(s: Session) -> dict[str, Any]:
    main, stream = s.main_stream(finished=True)
    history = s.metrics(main)
    evidence = _files(stream) + [p.probe for p in history.pages]
    streamed = _by_step(stream, "metric")
    served = {m["step"]: m for m in history.metrics}
    if sorted(streamed) != sorted(served):
        missing, extra = sorted(set(served) - set(streamed)), sorted(set(streamed) - set(served))
        raise CheckFailure(
            "Different steps", f"steps only in the endpoint: {missing[:10]}; only in the stream: {extra[:10]}", evidence
        )
    for step, data in streamed.items():
        for key in ("loss", "accuracy"):
            if not _same(data.get(key), served[step].get(key)):
                raise CheckFailure(
                    "Values disagree",
                    f"step {step} {key}: stream {data.get(key)}, endpoint {served[step].get(key)}",
                    evidence,
                )
    checkpoints = _by_step(stream, "checkpoint")
    evals = {e["step"]: e for e in history.evals}
    listed = {c.get("name"): c for c in s.listed_checkpoints(main)}
    evidence.append(s.checkpoint_list(main).probe)
    if sorted(checkpoints) != sorted(evals):
        raise CheckFailure(
            "Different checkpoints", f"stream steps {sorted(checkpoints)}, endpoint evals {sorted(evals)}", evidence
        )
    for step, data in checkpoints.items():
        for key in ("eval_loss", "eval_accuracy"):
            if not _same(data.get(key), evals[step].get(key)):
                raise CheckFailure("Values disagree", f"checkpoint step {step} {key} differs", evidence)
        entry = listed.get(data.get("name"))
        if entry is None or entry.get("sha256") != data.get("sha256") or entry.get("bytes") != data.get("bytes"):
            raise CheckFailure(
                "Checkpoint disagrees", f"{data.get('name')}: stream {data.get('sha256')}, list {entry}", evidence
            )
    return {"metric_steps": len(streamed), "checkpoints": len(checkpoints)}


def _by_step(stream: StreamRecording, kind: str) -> dict[Any, dict[str, Any]]:
    found: dict[Any, dict[str, Any]] = {}
    for event in stream.events:
        if isinstance(event.payload, dict) and event.payload.get("type") == kind:
            found.setdefault(event.payload["data"].get("step"), event.payload["data"])
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, **SAME_VALUE)
    return bool(a == b)


@check(
    "sse.final_event",
    "The stream ends with a final event",
    "The last event is `end`, carrying the run's terminal status; then the server closes the stream.",
    evidence="`sse/main.events.jsonl`; `sse/main.summary.json` (how the stream ended)",
    needs={"main"},
    area=_AREA,
)
def final_event(s: Session) -> dict[str, Any]:
    main, stream = s.main_stream(finished=True)
    evidence = _files(stream)
    if not stream.events or stream.events[-1].sse.event != "end":
        last = stream.events[-1].sse.event if stream.events else None
        raise CheckFailure("No final event", f"the last event is {last!r}; stream ended: {stream.ended}", evidence)
    status = stream.events[-1].payload.get("data", {}).get("status") if stream.events[-1].payload else None
    if status != main.status:
        raise CheckFailure("Final status disagrees", f"end says {status!r}, the run is {main.status!r}", evidence)
    if not stream.closed_by_server:
        raise CheckFailure(
            "Stream left open",
            f"after the end event the stream was not closed by the server ({stream.ended})",
            evidence,
        )
    return {"status": status, "events": len(stream.events)}


@check(
    "sse.replay",
    "Last-Event-ID replays exactly the missed events",
    "Reconnecting to a finished run with Last-Event-ID: N answers exactly the events with id > N, equal to the "
    "first subscription's, ending with `end`, and then closes.",
    evidence="`sse/replay.*` beside `sse/main.*`",
    needs={"main", "replay"},
    area=_AREA,
)
def replay(s: Session) -> dict[str, Any]:
    _, stream = s.main_stream(finished=True)
    if s.replay is None or s.replay_after is None:
        raise CheckSkipped("no reconnection was made (the first stream carried no numeric ids)")
    after = s.replay_after
    evidence = _files(stream) + _files(s.replay)
    expected = [
        (e.sse.id, e.sse.event, e.sse.data) for e in stream.events if e.sse.id.isdigit() and int(e.sse.id) > after
    ]
    got = [(e.sse.id, e.sse.event, e.sse.data) for e in s.replay.events]
    if s.replay.exchange is not None:
        expect_status(s.replay.exchange, 200)
    if got != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected))
        )
        raise CheckFailure(
            "Replay differs",
            f"after Last-Event-ID {after} expected {len(expected)} events (ids {expected[0][0] if expected else '-'}.."
            f"{expected[-1][0] if expected else '-'}), got {len(got)}; first difference at position {first}",
            evidence,
        )
    if not s.replay.closed_by_server:
        raise CheckFailure("Stream left open", f"the replay was not closed by the server ({s.replay.ended})", evidence)
    return {"last_event_id": after, "replayed": len(got)}
