"""One SSE subscription over a bare connection, for load tools that hold hundreds or thousands at once.

An HTTP client library per event costs more CPU than the server under test at 1,000 subscribers; these send one
HTTP/1.1 GET, read the response head, decode a chunked (or close-delimited) body by hand (`ChunkedBody`), and hand the
bytes to the suite's WHATWG decoder. Two shapes of it:

- `RawEventStream`: `async for arrived, event in stream.events()`, one coroutine per subscription;
- `EventReceiver`: a callback per event from a reader callback on the socket, no coroutine or future per event, and
  the decoding shared with the other receivers of the same stream (`SharedDecoding`): at 1,000 subscribers of one
  live run on two cores, a client of coroutines, each decoding its copy, read each event late, so the latency it
  measured was largely its own (BENCHMARKS.md, section 3).

They live here, beside that decoder, because every load tool (benchmarks/, scripts/) has this package installed and
none may import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping

from .sse import ServerSentEvent, SharedDecoding, SSEDecoder


def get_request(host: str, port: int, path: str, headers: Mapping[str, str] | None) -> bytes:
    """The subscription's HTTP/1.1 GET."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes) -> tuple[str, str, int, dict[str, str]]:
    """A response head (without its blank line): the text, the status line, the status and the headers (names
    lower-case)."""
    text = head.decode("latin-1")
    status_line, *lines = text.split("\r\n")
    fields = (line.partition(":") for line in lines if line)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    return text, status_line, int(status_line.split(" ", 2)[1]), headers


class RawEventStream:
    """`stream = await RawEventStream.open(host, port, path)`, then `async for arrived, event in stream.events()`.

    `status` and `headers` (lower-case names) are the response's; `closed_by_server` is True once the body ended
    cleanly (the last chunk, or the connection closed by the server after a close-delimited body).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self._reader, self._writer = reader, writer
        self.head, self.status_line, self.status, self.headers = parse_head(head)
        self.decoder = SSEDecoder()
        self.closed_by_server = False

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, *, headers: Mapping[str, str] | None = None, limit: int = 1 << 20
    ) -> RawEventStream:
        """Connect, send the GET, read the response head. OSError when the connection fails."""
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        writer.write(get_request(host, port, path, headers))
        try:
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, head[:-4])

    async def events(self) -> AsyncIterator[tuple[float, ServerSentEvent]]:
        """Each event with the wall-clock time (time.time()) its bytes arrived, until the body ends.

        A connection that breaks inside a chunk raises ConnectionError; a malformed chunk, ValueError.
        """
        async for chunk in self._body():
            arrived = time.time()
            for event in self.decoder.feed(chunk):
                yield arrived, event
        self.decoder.close()
        self.closed_by_server = True

    async def _body(self) -> AsyncIterator[bytes]:
        chunked = ChunkedBody() if is_chunked(self.headers) else None
        while data := await self._reader.read(65536):
            if chunked is None:
                yield data
                continue
            for payload in chunked.feed(data):
                yield payload
            if chunked.ended:
                return
        if chunked is not None:
            raise ConnectionError("connection closed inside the chunked body")

    async def close(self) -> None:
        """Close the connection (a no-op when it is already closed)."""
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


def is_chunked(headers: Mapping[str, str]) -> bool:
    """Whether a response's body is chunked (its header names lower-case)."""
    return "chunked" in headers.get("transfer-encoding", "").lower()


#: A chunk size: hexadecimal digits only (no sign, no 0x, which int() would take).
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class ChunkedBody:
    """Incremental decoder of an HTTP/1.1 chunked body (RFC 9112 section 7.1): feed it bytes as they arrive, get
    back the chunks' data they completed. `ended` once the last chunk and the trailer section after it are read."""

    def __init__(self) -> None:
        self._buffer = b""
        self.ended = False

    def feed(self, data: bytes) -> list[bytes]:
        """The data of every chunk `data` completed, in order (none after the end). ValueError on a bad size line."""
        buffer = self._buffer + data if self._buffer else data
        payloads: list[bytes] = []
        at = 0
        while not self.ended:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            digits = buffer[at:line_end].split(b";")[0].strip()
            if not _HEX.fullmatch(digits):
                raise ValueError(f"not a chunk size: {digits[:20]!r}")
            size = int(digits, 16)
            if size == 0:  # the last chunk: then trailer lines, ended by an empty one
                blank = buffer.find(b"\r\n\r\n", line_end)
                if blank < 0:
                    break
                at, self.ended = blank + 4, True
                break
            start, end = line_end + 2, line_end + 2 + size
            if len(buffer) < end + 2:
                break
            if buffer[end : end + 2] != b"\r\n":
                raise ValueError("a chunk not followed by CRLF")
            payloads.append(buffer[start:end])
            at = end + 2
        self._buffer = buffer[at:]
        return payloads


#: What an EventReceiver calls for each event: the wall-clock time (time.time()) its bytes arrived, and the event.
EventCallback = Callable[[float, ServerSentEvent], None]


class EventReceiver:
    """`receiver = await EventReceiver.open(host, port, path, on_event)`, then `await receiver.done`.

    The response head is read as for `RawEventStream`; then the event loop calls a reader callback when the socket has
    bytes, which reads them, decodes them and calls `on_event` for each event they complete. `done` resolves when the
    body ends (`closed_by_server` True), or with the error that broke it (a body cut inside a chunk: ConnectionError);
    `close()` stops reading and closes the socket. `status`, `headers` and `decoder` are as `RawEventStream`'s.
    Receivers of the same stream can share one `SharedDecoding`, so that each piece of it is decoded once.
    """

    def __init__(
        self,
        sock: socket.socket,
        head: bytes,
        rest: bytes,
        on_event: EventCallback,
        shared: SharedDecoding | None = None,
    ) -> None:
        self._sock = sock
        self.head, self.status_line, self.status, self.headers = parse_head(head)
        self.decoder = SSEDecoder()
        self.closed_by_server = False
        self._chunked = ChunkedBody() if is_chunked(self.headers) else None
        self._on_event = on_event
        self._shared = shared
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._reading = False
        if self.status == 200:
            self._reading = True
            self._loop.add_reader(sock.fileno(), self._readable)
            if rest:
                self._take(rest, time.time())
        else:
            self.done.set_result(None)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        on_event: EventCallback,
        *,
        headers: Mapping[str, str] | None = None,
        shared: SharedDecoding | None = None,
    ) -> EventReceiver:
        """Connect, send the GET, read the response head. OSError when the connection fails; ConnectionError when it
        closes before the head is whole."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, get_request(host, port, path, headers))
            received = b""
            while (end := received.find(b"\r\n\r\n")) < 0:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    raise ConnectionError("connection closed before the response head")
                received += data
        except BaseException:
            sock.close()
            raise
        return cls(sock, received[:end], received[end + 4 :], on_event, shared)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not data:
            self.decoder.close()
            if self._chunked is not None and not self._chunked.ended:
                self._end(ConnectionError("connection closed inside the chunked body"))
            else:
                self.closed_by_server = True
                self._end(None)
            return
        self._take(data, time.time())

    def _take(self, data: bytes, arrived: float) -> None:
        try:
            payloads = self._chunked.feed(data) if self._chunked is not None else [data]
        except ValueError as exc:
            self._end(exc)
            return
        shared = self._shared
        for payload in payloads:
            for event in shared.feed(self.decoder, payload) if shared else self.decoder.feed(payload):
                self._on_event(arrived, event)
        if self._chunked is not None and self._chunked.ended:
            self.decoder.close()
            self.closed_by_server = True
            self._end(None)

    def _end(self, error: BaseException | None) -> None:
        self._stop_reading()
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())

    def close(self) -> None:
        """Stop reading and close the connection (a no-op when it is already closed)."""
        self._stop_reading()
        if not self.done.done():
            self.done.cancel()
        self._sock.close()
