"""The event log: each run's events in order, durable in its metrics.jsonl, fanned out to SSE subscribers.

An event is ``{id, run_id, type, time, data}`` (schemas/event.schema.json); ids start at 1 and increase by one within
a run. "The events after Last-Event-ID N" are found by id, not by list position, so a replay always moves forward
even through a log that is not what it should be. The log of every active run is kept in memory, and of the
`cache_runs` ended runs read most recently; an ended run's log beyond those leaves memory (its run's view drops its
per-step history with it) and is read back from metrics.jsonl when someone asks for it, on a worker thread. A log
being streamed is pinned and never leaves memory meanwhile.

Subscribers follow the chat-demo shape: a cursor to replay from, then, once caught up, a place on the source's
broadcast channel (broadcast.py), which writes each new batch of frames to every caught-up connection, and a wake-up
when the client goes away or falls behind. The all-runs feed is live only and keeps a bounded backlog. Each event is
encoded into its SSE frame once, when it is published (the data is the very metrics.jsonl line), however many
subscribers read it; a subscriber finds its place in the feed by arithmetic, not by scanning the backlog. At shutdown
the log is closed only after every run has published its last event, so every stream can finish its sentence first.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trainer_tinygrad.clock import utc_now

from .broadcast import Channel, Wake
from .errors import TooManySubscribers
from .evidence import EvidenceStore
from .evidence.store import dumps

EVENT_TYPES = ("status", "metric", "checkpoint", "end")


def new_event(run_id: str, event_id: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """An event as the log stores it, stamped now."""
    return {"id": event_id, "run_id": run_id, "type": type_, "time": utc_now(), "data": data}


def sse_frame(event: dict[str, Any], sse_id: str, line: str | None = None) -> str:
    """One event in the SSE wire format; its data is its metrics.jsonl line (one line of JSON)."""
    data = line if line is not None else dumps(event).decode("utf-8")
    return f"id: {sse_id}\nevent: {event['type']}\ndata: {data}\n\n"


@dataclass
class RunEvents:
    """One run's events (None while they are not in memory) and the channel its caught-up subscribers wait on."""

    run_id: str
    events: list[dict[str, Any]] | None = field(default_factory=list)
    frames: list[str | None] = field(default_factory=list)  # each event's SSE frame, encoded once, when needed
    last_id: int = 0  # id of the newest event (0 before the first), known whether or not the events are in memory
    ended: bool = False  # the newest event is an `end`: nothing follows it but a resume
    pins: int = 0  # streams reading it now
    channel: Channel = field(default_factory=Channel)

    def after(self, cursor: int, limit: int | None = None) -> list[dict[str, Any]]:
        """The events with id > cursor, in order (at most `limit` of them); the log must be in memory."""
        if self.events is None:
            raise RuntimeError(f"the log of run {self.run_id} is not in memory: load it first")
        start = bisect.bisect_right(self.events, cursor, key=lambda e: int(e["id"]))
        return self.events[start : None if limit is None else start + limit]

    def frames_after(self, cursor: int, limit: int) -> tuple[int, str]:
        """(the last id sent, the SSE frames of the events after `cursor`, at most `limit`, joined); (cursor, "")
        when there are none. Frames are encoded on first use and kept."""
        if self.events is None:
            raise RuntimeError(f"the log of run {self.run_id} is not in memory: load it first")
        start = bisect.bisect_right(self.events, cursor, key=lambda e: int(e["id"]))
        end = min(len(self.events), start + limit)
        if start >= end:
            return cursor, ""
        if len(self.frames) < len(self.events):
            self.frames.extend([None] * (len(self.events) - len(self.frames)))
        for i in range(start, end):
            if self.frames[i] is None:
                self.frames[i] = sse_frame(self.events[i], str(self.events[i]["id"]))
        return int(self.events[end - 1]["id"]), "".join(self.frames[start:end])  # type: ignore[arg-type]


class EventLog:
    """Appends events (evidence first, then memory, then subscribers) and hands out cursors to read them."""

    def __init__(
        self, store: EvidenceStore, *, max_subscribers: int, cache_runs: int, feed_backlog: int = 10_000
    ) -> None:
        self.store = store
        self.max_subscribers = max_subscribers
        self.cache_runs = cache_runs
        #: Called with a run id when its log leaves memory (the run's view drops its per-step history then).
        self.on_evict: Callable[[str], None] = lambda run_id: None
        self._resident: OrderedDict[str, None] = OrderedDict()  # ended runs whose logs are in memory, oldest first
        self.subscribers = 0
        self.closed = False
        self._runs: dict[str, RunEvents] = {}
        # The all-runs feed: the frames of the last `feed_backlog` events (ids `<run_id>:<id>`); entry i has
        # sequence number _feed_first + i, and a subscriber's cursor is a sequence number.
        self.feed_backlog = feed_backlog
        self._feed: list[str] = []
        self._feed_first = 1
        self._feed_seq = 0
        self.feed_channel = Channel()
        #: Called with every event as it is published (the metrics count them).
        self.observers: list[Callable[[dict[str, Any]], None]] = []

    def load(self, run_id: str, events: list[dict[str, Any]]) -> RunEvents:
        """Register a run with the events already on disk (at start-up, or [] for a new run)."""
        log = RunEvents(run_id, list(events))
        if events:
            log.last_id, log.ended = int(events[-1]["id"]), events[-1]["type"] == "end"
        self._runs[run_id] = log
        if log.ended:
            self._resident[run_id] = None
        return log

    async def loaded(self, run_id: str) -> RunEvents:
        """A run's log with its events in memory (read back from metrics.jsonl, up to the last event published, on a
        worker thread when they had left)."""
        log = self._runs[run_id]
        if log.events is None:
            events = await asyncio.get_running_loop().run_in_executor(None, self.store.read_events, run_id)
            if log.events is None:
                log.events = events[: log.last_id]
        if log.ended:
            self._resident[run_id] = None
            self._resident.move_to_end(run_id)
            self.trim()
        return log

    @contextlib.contextmanager
    def pinned(self, log: RunEvents) -> Iterator[None]:
        """Keep a log in memory while it is streamed."""
        log.pins += 1
        try:
            yield
        finally:
            log.pins -= 1
            self.trim()

    def trim(self) -> None:
        """Let the logs of ended runs beyond the `cache_runs` most recently read leave memory (pinned ones stay)."""
        excess = len(self._resident) - self.cache_runs
        for run_id in list(self._resident):
            if excess <= 0:
                break
            log = self._runs[run_id]
            if log.pins or not log.ended:
                continue
            log.events = None
            log.frames = []
            del self._resident[run_id]
            excess -= 1
            self.on_evict(run_id)

    @property
    def in_memory(self) -> int:
        """Runs whose logs are in memory now (active ones and the cached ended ones)."""
        return sum(log.events is not None for log in self._runs.values())

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
        if event["id"] != log.last_id + 1 or log.events is None:
            raise RuntimeError(
                f"event {event['id']} of {event['run_id']} published out of order, or to a log not loaded"
            )
        line = dumps(event).decode("utf-8")
        log.events.append(event)
        frame = sse_frame(event, str(event["id"]), line)
        if len(log.frames) == len(log.events) - 1:
            log.frames.append(frame)
        log.last_id, log.ended = int(event["id"]), event["type"] == "end"
        if log.ended:
            self._resident[log.run_id] = None
            self._resident.move_to_end(log.run_id)
            self.trim()
        elif log.run_id in self._resident:  # a resume: active again, so it stays
            del self._resident[log.run_id]
        for observe in self.observers:
            observe(event)
        log.channel.publish(log.last_id, frame)
        if log.ended:  # its subscribers get the end, then finish their streams
            log.channel.wake_all(Wake.DONE)
        self._feed_seq += 1
        feed_frame = sse_frame(event, f"{event['run_id']}:{event['id']}", line)
        self._feed.append(feed_frame)
        if len(self._feed) >= 2 * self.feed_backlog:  # trimmed in halves: appends stay O(1) on average
            del self._feed[: -self.feed_backlog]
            self._feed_first = self._feed_seq - len(self._feed) + 1
        self.feed_channel.publish(self._feed_seq, feed_frame)

    @property
    def feed_cursor(self) -> int:
        """The all-runs feed's newest sequence number: a new subscriber starts here (live only)."""
        return self._feed_seq

    def feed_after(self, cursor: int, limit: int) -> tuple[int, str]:
        """(the new cursor, the frames of the feed entries after `cursor` still in the backlog, at most `limit`)."""
        start = max(cursor + 1 - self._feed_first, 0)
        frames = self._feed[start : start + limit]
        return (self._feed_first + start + len(frames) - 1 if frames else cursor), "".join(frames)

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
            log.channel.wake_all(Wake.DONE)
        self.feed_channel.wake_all(Wake.DONE)
