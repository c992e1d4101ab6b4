"""The event log: each run's events in order, durable in its metrics.jsonl, fanned out to SSE subscribers.

An event is ``{id, run_id, type, time, data}`` (schemas/event.schema.json); ids start at 1 and increase by one within
a run. "The events after Last-Event-ID N" are found by id, not by list position, so a replay always moves forward
even through a log that is not what it should be. The whole log of every run is kept in memory (a default run has
~160 events), which makes replay after a finished run or a restart the same code path as a live stream: the log is
loaded from metrics.jsonl at start-up.

Subscribers follow the chat-demo shape: a cursor, a condition to wait on with a timeout (the heartbeat), and a
wake-up when the client goes away. The all-runs feed is live only and keeps a bounded backlog. At shutdown the log
is closed only after every run has published its last event, so every stream can finish its sentence first.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tornado.locks import Condition
from trainer_tinygrad.clock import utc_now

from .errors import TooManySubscribers
from .evidence import EvidenceStore

EVENT_TYPES = ("status", "metric", "checkpoint", "end")


def new_event(run_id: str, event_id: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """An event as the log stores it, stamped now."""
    return {"id": event_id, "run_id": run_id, "type": type_, "time": utc_now(), "data": data}


@dataclass
class RunEvents:
    """One run's events and the condition its subscribers wait on."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    condition: Condition = field(default_factory=Condition)

    @property
    def last_id(self) -> int:
        """Id of the newest event (0 before the first)."""
        return int(self.events[-1]["id"]) if self.events else 0

    @property
    def ended(self) -> bool:
        """True once the `end` event is in the log: nothing follows it but a resume."""
        return bool(self.events) and self.events[-1]["type"] == "end"

    def after(self, cursor: int, limit: int | None = None) -> list[dict[str, Any]]:
        """The events with id > cursor, in order (at most `limit` of them)."""
        start = bisect.bisect_right(self.events, cursor, key=lambda e: int(e["id"]))
        return self.events[start : None if limit is None else start + limit]


class EventLog:
    """Appends events (evidence first, then memory, then subscribers) and hands out cursors to read them."""

    def __init__(self, store: EvidenceStore, *, max_subscribers: int, feed_backlog: int = 10_000) -> None:
        self.store = store
        self.max_subscribers = max_subscribers
        self.subscribers = 0
        self.closed = False
        self._runs: dict[str, RunEvents] = {}
        # The all-runs feed: (sequence, event); a subscriber's cursor is a sequence number.
        self._feed: deque[tuple[int, dict[str, Any]]] = deque(maxlen=feed_backlog)
        self._feed_seq = 0
        self.feed_condition = Condition()
        self.appended_total = 0

    def load(self, run_id: str, events: list[dict[str, Any]]) -> RunEvents:
        """Register a run with the events already on disk (at start-up, or a new run's first event)."""
        log = RunEvents(run_id, list(events))
        self._runs[run_id] = log
        return log

    def get(self, run_id: str) -> RunEvents | None:
        """A run's events, or None for an unknown run."""
        return self._runs.get(run_id)

    def append(self, run_id: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        """Record one event (validated, appended to metrics.jsonl), then publish it to readers and subscribers.
        EvidenceWriteError when it could not be made durable: then nobody sees it."""
        event = self.record(run_id, type_, data)
        self.publish(event)
        return event

    def build(self, run_id: str, type_: str, data: dict[str, Any], *, reopen: bool = False) -> dict[str, Any]:
        """The next event of a run, not yet recorded anywhere. After `end` only a reopening (resume) may follow."""
        log = self._runs[run_id]
        if log.ended != reopen:
            raise RuntimeError(
                f"run {run_id} already has its end event; only a resume may follow it"
                if log.ended
                else f"run {run_id} has not ended; there is nothing to reopen"
            )
        return new_event(run_id, log.last_id + 1, type_, data)

    def record(self, run_id: str, type_: str, data: dict[str, Any], *, reopen: bool = False) -> dict[str, Any]:
        """Make the next event durable (metrics.jsonl) without showing it to anyone yet: the end of a run is
        published only after its manifest is written."""
        event = self.build(run_id, type_, data, reopen=reopen)
        self.store.append_event(run_id, event, sync=reopen or type_ in ("checkpoint", "end"))
        return event

    def reopen(self, run_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Append the `status` event that resumes an ended run (after its `end`; ids carry on) and publish it."""
        event = self.record(run_id, "status", data, reopen=True)
        self.publish(event)
        return event

    def publish(self, event: dict[str, Any]) -> None:
        """Show a recorded event to readers and wake the subscribers waiting for it."""
        log = self._runs[event["run_id"]]
        if event["id"] != log.last_id + 1:
            raise RuntimeError(f"event {event['id']} of {event['run_id']} published out of order")
        log.events.append(event)
        self.appended_total += 1
        log.condition.notify_all()
        self._feed_seq += 1
        self._feed.append((self._feed_seq, event))
        self.feed_condition.notify_all()

    @property
    def feed_cursor(self) -> int:
        """The all-runs feed's newest sequence number: a new subscriber starts here (live only)."""
        return self._feed_seq

    def feed_after(self, cursor: int) -> list[tuple[int, dict[str, Any]]]:
        """Feed entries after `cursor` that are still in the backlog."""
        return [(seq, event) for seq, event in self._feed if seq > cursor]

    @contextlib.contextmanager
    def subscription(self) -> Iterator[None]:
        """Count a subscriber for its lifetime; refuse beyond `max_subscribers`."""
        if self.subscribers >= self.max_subscribers:
            raise TooManySubscribers(
                f"{self.subscribers} event-stream subscribers already connected (limit {self.max_subscribers}); "
                "retry later",
                retry_after=5,
            )
        self.subscribers += 1
        try:
            yield
        finally:
            self.subscribers -= 1

    def close(self) -> None:
        """No more events will come (shutdown, after every run published its last one): wake every subscriber so
        each sends what is left and ends its stream."""
        self.closed = True
        for log in self._runs.values():
            log.condition.notify_all()
        self.feed_condition.notify_all()
