"""Live fan-out: each event source (one run's log, the all-runs feed) has a Channel; a stream that has caught up with
its source parks a Listener there, and the channel writes each batch of new frames to every parked connection itself.

Why: with one coroutine per subscriber waiting on a condition, every event woke every subscriber's coroutine, and
each armed two timers (its heartbeat and its write deadline): at 1,000 subscribers, thousands of callbacks and timer
handles per event. Now an event costs each caught-up subscriber one write of bytes shared by all of them (the batch's
frames joined and chunk-framed once), and the frames published in one pass of the event loop go out as one write;
after a flush that took long (many subscribers), the next waits as long again, so the frames published meanwhile go
out together and the loop keeps time for everything else.

The bounded buffer stays: a listener is written to only while its connection has nothing unsent. A write that does
not go through whole (a client reading slowly, or not at all), or that finds the previous one still unsent, wakes
the listener's handler instead: it waits for the connection to drain under the write deadline (dropping the client
past it), then catches up from the log by its cursor, a batch at a time, and parks again. A parked listener gets a
`: keep-alive` comment after `heartbeat_s` without a write, from one timer of its own re-armed once per heartbeat
(not per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

from tornado.iostream import IOStream, StreamClosedError

KEEP_ALIVE = b": keep-alive\n\n"
#: After a flush that took t seconds, the next one waits until FLUSH_SPACING * t has passed, gathering the frames
#: published meanwhile into one write. With a few subscribers a flush takes microseconds and nothing waits; with 1,000
#: it takes ~10-30 ms (a send per connection), and events coming every ~20 ms would otherwise keep the loop writing
#: nearly all the time, their latency growing in a queue (measured: p99 ~170 ms without, ~90 ms with 1.0, 1,000
#: subscribers on 2 shared cores; 2.0 no better, 4.0 worse).
FLUSH_SPACING = 1.0
#: A timer may fire this much early (the loop's clock resolution); a heartbeat due within it counts as due.
_EARLY_S = 0.001


class Wake(enum.Enum):
    """Why a parked listener's handler is woken."""

    BEHIND = "behind"  # its connection holds unsent bytes: wait for them under the deadline, then read the log
    DONE = "done"  # the run ended or the log closed: send what is left and finish the stream
    GONE = "gone"  # the client left


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk (RFC 9112 section 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Listener:
    """A parked stream: its connection, its cursor in the source, and the future its handler awaits."""

    __slots__ = ("_heartbeat_s", "_loop", "_socket", "_timer", "chunked", "cursor", "last_write", "stream", "woken")

    def __init__(self, stream: IOStream, cursor: int, *, chunked: bool, heartbeat_s: float) -> None:
        self.stream = stream
        # A plain TCP stream with nothing unsent can take our bytes straight to its socket: no future, no callback
        # (IOStream.write makes both for every write). A TLS stream must encrypt, so it always goes through write().
        self._socket = stream.socket if type(stream) is IOStream else None
        self.cursor = cursor  # the last event (run: id; feed: sequence number) written to this connection
        self.chunked = chunked  # HTTP/1.1 chunked body; an HTTP/1.0 body is the bare bytes, ended by closing
        self._loop = asyncio.get_running_loop()
        self.woken: asyncio.Future[Wake] = self._loop.create_future()
        self.last_write = self._loop.time()
        self._heartbeat_s = heartbeat_s
        self._timer = self._loop.call_at(self.last_write + heartbeat_s, self._beat)

    def wake(self, why: Wake) -> None:
        """Hand control back to the handler (the first reason wins); nothing more is written from here."""
        if not self.woken.done():
            self.woken.set_result(why)
        self._timer.cancel()

    def push(self, plain: bytes, framed: bytes, cursor: int | None) -> None:
        """Write one batch (`framed`: the same bytes as one chunk) and move the cursor to `cursor` (None: a comment)."""
        if self.woken.done():
            return
        stream = self.stream
        if stream.closed():
            self.wake(Wake.GONE)
            return
        if stream.writing():  # the last batch has not gone out yet: nothing more is buffered for this client
            self.wake(Wake.BEHIND)
            return
        data = framed if self.chunked else plain
        try:
            sent = 0
            if self._socket is not None:
                with contextlib.suppress(BlockingIOError):
                    sent = self._socket.send(data)
            if sent < len(data):
                stream.write(memoryview(data)[sent:])  # the rest waits in the stream until the socket takes it
        except StreamClosedError:
            self.wake(Wake.GONE)
            return
        except OSError:  # the client reset the connection: close it, as IOStream would have
            stream.close(exc_info=True)
            self.wake(Wake.GONE)
            return
        self.last_write = self._loop.time()
        if cursor is not None:
            self.cursor = cursor
        if stream.writing():  # the socket took part of it: the handler waits for the rest under the deadline
            self.wake(Wake.BEHIND)

    def _beat(self) -> None:
        if self.woken.done():
            return
        now = self._loop.time()
        due = self.last_write + self._heartbeat_s
        if now >= due - _EARLY_S:
            self.push(KEEP_ALIVE, chunk(KEEP_ALIVE), None)
            due = now + self._heartbeat_s
        if not self.woken.done():
            self._timer = self._loop.call_at(due, self._beat)


class Channel:
    """Where one source's new frames go out to the listeners parked on it."""

    def __init__(self) -> None:
        self._listeners: dict[Listener, None] = {}  # insertion-ordered: the first parked is written to first
        self._pending: list[tuple[int, str]] = []  # (cursor, frame) published in this pass of the loop
        self._scheduled = False
        self._ready_at = 0.0  # loop time before which the next flush does not start (FLUSH_SPACING)

    def __len__(self) -> int:
        return len(self._listeners)

    def park(self, listener: Listener) -> None:
        """Write the source's next frames to `listener` until it is woken."""
        self._listeners[listener] = None

    def leave(self, listener: Listener) -> None:
        """Stop writing to `listener` (its handler has it back)."""
        self._listeners.pop(listener, None)

    def publish(self, cursor: int, frame: str) -> None:
        """A frame the source already holds at `cursor`: written to the parked listeners at the end of this pass of
        the loop (or, right after a long flush, once FLUSH_SPACING allows), with the others published meanwhile. A
        stream that is not parked reads it from the source."""
        if not self._listeners:
            return
        self._pending.append((cursor, frame))
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_at(max(loop.time(), self._ready_at), self.flush)

    def flush(self) -> None:
        """Write what is pending to every parked listener: the same bytes to all that wait for all of it."""
        self._scheduled = False
        pending, self._pending = self._pending, []
        if not pending or not self._listeners:
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            self._write(pending)
        finally:
            ended = loop.time()
            self._ready_at = ended + FLUSH_SPACING * (ended - began)

    def _write(self, pending: list[tuple[int, str]]) -> None:
        first, head = pending[0][0], pending[-1][0]
        shared: tuple[bytes, bytes] | None = None
        for listener in list(self._listeners):
            if listener.cursor >= head:
                continue
            if listener.cursor < first:
                if shared is None:
                    plain = "".join(frame for _, frame in pending).encode("utf-8")
                    shared = (plain, chunk(plain))
                listener.push(*shared, head)
            else:  # parked in the middle of this batch (it read the first part from the source): only the rest
                plain = "".join(frame for at, frame in pending if at > listener.cursor).encode("utf-8")
                listener.push(plain, chunk(plain), head)

    def wake_all(self, why: Wake) -> None:
        """Write what is pending, then wake every parked listener (the source has ended, or the log closed)."""
        self.flush()
        for listener in list(self._listeners):
            listener.wake(why)
