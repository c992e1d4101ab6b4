"""GET /api/events/training: Server-Sent Events.

Per run: the run's log from the start (or after Last-Event-ID), then live events, then `end` and the stream closes.
A reconnect whose Last-Event-ID is the final `end` of a run that cannot continue gets 204 No Content, which stops a
browser's EventSource from reconnecting; a run that can still be resumed answers an empty stream, as before.
Without run_id: every run's events, live only, with ids `<run_id>:<id>`. A comment line goes out every
`heartbeat_s` so proxies keep the connection; comments are not events. No compression on the stream.

A replay goes out in batches, each flushed before the next is written, so a stream holds at most one batch beyond
what the socket holds; a client that leaves a batch unread past the write deadline is dropped (its slot and file
descriptor freed). A stream that has caught up parks on its source's broadcast channel (broadcast.py), which writes
the live events to it, and gets its connection back when the client falls behind (then it waits for the flush under
the same deadline and catches up from the log), leaves, or the source ends. At shutdown a stream ends only once the
log is closed, which happens after every run has published its last event: a subscriber gets each run's `end` before
the server goes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

from tornado.http1connection import HTTP1Connection

from ..broadcast import Channel, Listener, Wake
from ..errors import InvalidLastEventId, InvalidParameter, RunNotFound
from ..events import EventLog, RunEvents
from ..lifecycle import RUN_ID_PATTERN
from ..runs import RunManager
from .base import STREAM_SEND_BUFFER, BaseHandler

_LAST_ID = re.compile(rf"^(?:(?P<run>{RUN_ID_PATTERN.pattern.strip('^$')}):)?(?P<id>[0-9]{{1,18}})$")
#: Events per write while replaying: bounds what one stream buffers.
REPLAY_BATCH = 256


class EventStreamHandler(BaseHandler):
    """The event stream of one run, or of all runs."""

    query_parameters = frozenset({"run_id", "last_event_id"})

    def initialize(
        self, manager: RunManager, events: EventLog, heartbeat_s: float, retry_ms: int, streams: set[BaseHandler]
    ) -> None:
        """Dependencies from the route table; `streams` is the service's set of open streams (for shutdown)."""
        self.manager = manager
        self.events = events
        self.heartbeat_s = heartbeat_s
        self.retry_ms = retry_ms
        self.streams = streams
        self._gone = False
        self._listener: Listener | None = None

    def on_connection_close(self) -> None:
        """The client left: wake the loop so it ends (a normal end, not an error)."""
        self._gone = True
        if self._listener is not None:
            self._listener.wake(Wake.GONE)

    async def get(self) -> None:
        """Stream events until `end` (per run), the client leaves, or the server stops."""
        run_id = self.get_query_argument("run_id", None)
        if run_id is None:
            if self.request.method == "HEAD":
                await self._head()
                return
            with self.events.subscription(), self._tracked():
                self._open()
                await self._follow_feed()
            return
        if not RUN_ID_PATTERN.match(run_id):
            raise InvalidParameter(f"run_id={run_id!r} is not a run id")
        run = self.manager.get(run_id)  # 404 for an unknown run, 409 for one whose evidence cannot be trusted
        if self.events.get(run_id) is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        log = await self.events.loaded(run_id)
        cursor = self._cursor(run_id, log)
        if cursor and cursor == log.last_id and log.ended and run.final:
            # The client has the run's last word and nothing can follow it. A 200 with an empty stream would make
            # a browser's EventSource reconnect every `retry` ms for as long as its tab stays open; a 204 is the
            # WHATWG way to tell it to stop. A run that can still be resumed keeps the 200: a browser that keeps
            # reconnecting then follows the resume.
            self.set_status(204)
            self.finish()
            return
        if self.request.method == "HEAD":
            await self._head()
            return
        with self.events.subscription(), self._tracked(), self.events.pinned(log):
            self._open()
            await self._follow_run(log, cursor)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        self.streams.add(self)
        try:
            yield
        finally:
            self.streams.discard(self)

    def _cursor(self, run_id: str, log: RunEvents) -> int:
        """Where the replay starts. `Last-Event-ID` wins over `?last_event_id=`, but each one given must be valid;
        an empty one is none (a browser's EventSource sends none before its first event)."""
        given = [self.request.headers.get("Last-Event-ID"), self.get_query_argument("last_event_id", None)]
        cursors = [self._parse_cursor(run_id, log, raw.strip()) for raw in given if raw is not None and raw.strip()]
        return cursors[0] if cursors else 0

    @staticmethod
    def _parse_cursor(run_id: str, log: RunEvents, raw: str) -> int:
        match = _LAST_ID.match(raw)
        if not match or (match.group("run") and match.group("run") != run_id):
            raise InvalidLastEventId(f"Last-Event-ID {raw[:80]!r} is not an event id of run {run_id} (an integer)")
        cursor = int(match.group("id"))
        if cursor > log.last_id:
            raise InvalidLastEventId(f"Last-Event-ID {cursor} is past run {run_id}'s last event ({log.last_id})")
        return cursor

    async def _head(self) -> None:
        """The stream's headers alone. Flushed before the end, so no `Content-Length: 0` goes out: a stream has no
        length, and RFC 9110 allows one on HEAD only when it equals what GET would send."""
        self._open()
        await self.flush()

    def _open(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        if self.request.method != "HEAD":
            self.limit_send_buffer(STREAM_SEND_BUFFER)
            # Events are small writes that should leave at once. With Nagle's algorithm on (Tornado's default while a
            # response is being written), each one waited for the ACK of the one before, which the client's delayed
            # ACK holds up to 40 ms: at a few dozen events a second, the events bunched up and arrived late.
            # Tornado turns it back on when the response ends.
            self._connection().stream.set_nodelay(True)
            self.write(f": trainer-tinygrad events\nretry: {self.retry_ms}\n\n")

    def _connection(self) -> HTTP1Connection:
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)  # the only kind Tornado's HTTPServer makes
        return connection

    async def _send(self, text: str) -> bool:
        if self._gone:
            return False
        self.write(text)
        if not await self.flush_or_drop():
            self._gone = True
            return False
        return True

    async def _follow_run(self, log: RunEvents, cursor: int) -> None:
        def after(cursor: int) -> tuple[int, str]:
            return log.frames_after(cursor, REPLAY_BATCH)

        await self._follow(after, lambda: log.ended or self.events.closed, log.channel, cursor)

    async def _follow_feed(self) -> None:
        def after(cursor: int) -> tuple[int, str]:
            return self.events.feed_after(cursor, REPLAY_BATCH)

        await self._follow(after, lambda: self.events.closed, self.events.feed_channel, self.events.feed_cursor)

    async def _follow(
        self, after: Callable[[int], tuple[int, str]], over: Callable[[], bool], channel: Channel, cursor: int
    ) -> None:
        """Replay from `cursor` in batches, then park on `channel` for the live events; again after each wake-up,
        until the source is `over` or the client is gone."""
        if not await self._send(""):
            return
        while not self._gone:
            cursor, text = after(cursor)
            if text:
                if not await self._send(text):
                    return
                continue
            if over():
                break
            cursor, why = await self._park(channel, cursor)
            if why is Wake.BEHIND and not await self._send(""):  # wait for the connection to drain, or drop it
                return
        self._close()

    async def _park(self, channel: Channel, cursor: int) -> tuple[int, Wake]:
        """Let the channel write live events (and heartbeats) to this connection until it wakes us; the cursor it
        reached, and why it woke us."""
        listener = Listener(
            self._connection().stream,
            cursor,
            # Tornado frames an HTTP/1.1 body in chunks and says so in the headers it sent; an HTTP/1.0 one is bare.
            chunked=self._headers.get("Transfer-Encoding", "").lower() == "chunked",
            heartbeat_s=self.heartbeat_s,
        )
        self._listener = listener
        channel.park(listener)
        try:
            why = await listener.woken
        finally:
            channel.leave(listener)
            listener.wake(Wake.GONE)  # stops its heartbeat when we were cancelled instead of woken
            self._listener = None
        return listener.cursor, why

    def _close(self) -> None:
        if not self._gone and not self._finished:
            self.finish()
