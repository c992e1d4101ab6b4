"""sse.rate's window opens when the stream says the run is running; what counts is new training state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from trainer_conformance.checks.sse import rate
from trainer_conformance.contract import default_contract
from trainer_conformance.failures import CheckFailure
from trainer_conformance.folder import VerifyFolder
from trainer_conformance.probes import Exchange, ProbeRecorder, RecordingClient
from trainer_conformance.session import Options, RunObservation, Session
from trainer_conformance.sse import ServerSentEvent
from trainer_conformance.stream import ReceivedEvent, StreamRecording


def event(seq: int, at: float, kind: str, **data: Any) -> ReceivedEvent:
    payload = {"id": seq, "run_id": "run-00000000", "type": kind, "time": "2025-01-01T00:00:00Z", "data": data}
    return ReceivedEvent(at, 1e9 + at, ServerSentEvent(kind, json.dumps(payload), str(seq)), payload)


def session_with(stream: StreamRecording, tmp_path: Path) -> Session:
    recorder = ProbeRecorder()
    folder = VerifyFolder(tmp_path / "out")
    session = Session(Options("http://127.0.0.1:9"), RecordingClient("http://127.0.0.1:9", recorder), folder,
                      default_contract(), None)  # fmt: skip
    create = Exchange(1, "POST", "http://127.0.0.1:9/api/training/runs", [], b"", 0.0, headers=httpx.Headers())
    session.runs["main"] = RunObservation("main", {}, create, body={"run_id": "run-00000000", "status": "queued"},
                                          stream=stream)  # fmt: skip
    return session


def stream_of(events: list[ReceivedEvent]) -> StreamRecording:
    return StreamRecording(name="main", subscribed_wall=1e9, events=events, ended="closed")


def test_window_opens_at_the_running_status_not_at_subscription(tmp_path: Path) -> None:
    # Queued for 12 s (waiting behind another run), then 12 metrics within 3 s of running.
    events = [event(1, 0.05, "status", status="queued"), event(2, 12.0, "status", status="running")]
    events += [event(3 + i, 12.5 + 0.25 * i, "metric", step=10 * (i + 1), loss=1.0, accuracy=0.5) for i in range(12)]
    stream = stream_of(events)
    assert stream.running_since() == 12.0
    figures = rate(session_with(stream, tmp_path))
    assert figures["new_state_events_in_window"] == 13
    assert figures["new_state_events_within_10s_of_subscribing"] == 1


def test_repeats_and_late_events_do_not_count(tmp_path: Path) -> None:
    events = [event(1, 0.0, "status", status="running")]
    # Five distinct steps, each sent three times, then the rest after the window closed.
    seq = 2
    for step in range(1, 6):
        for _ in range(3):
            events.append(event(seq, step * 0.5, "metric", step=step * 10, loss=1.0, accuracy=0.5))
            seq += 1
    events += [event(seq + i, 10.5 + i, "metric", step=100 + i, loss=1.0, accuracy=0.5) for i in range(10)]
    with pytest.raises(CheckFailure, match="6 events carrying new training state"):
        rate(session_with(stream_of(events), tmp_path))


def test_without_a_running_status_the_window_opens_at_subscription() -> None:
    assert stream_of([event(1, 3.0, "metric", step=10, loss=1.0, accuracy=0.5)]).running_since() == 0.0
