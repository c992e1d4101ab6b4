"""One SSE subscription over a bare asyncio connection, for load tools that hold hundreds or thousands at once.

An HTTP client library per event costs more CPU than the server under test at 1,000 subscribers; this sends one
HTTP/1.1 GET, reads the response head, decodes a chunked (or close-delimited) body by hand, and hands the bytes to
the suite's WHATWG decoder. It lives here, beside that decoder, because every load tool (benchmarks/, scripts/) has
this package installed and none may import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

from .sse import ServerSentEvent, SSEDecoder


class RawEventStream:
    """`stream = await RawEventStream.open(host, port, path)`, then `async for arrived, event in stream.events()`.

    `status` and `headers` (lower-case names) are the response's; `closed_by_server` is True once the body ended
    cleanly (the last chunk, or the connection closed by the server after a close-delimited body).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self._reader, self._writer = reader, writer
        self.head = head.decode("latin-1")
        self.status_line, *lines = self.head.split("\r\n")
        self.status = int(self.status_line.split(" ", 2)[1])
        self.headers = {
            name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)
        }
        self.decoder = SSEDecoder()
        self.closed_by_server = False

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, *, headers: Mapping[str, str] | None = None, limit: int = 1 << 20
    ) -> RawEventStream:
        """Connect, send the GET, read the response head. OSError when the connection fails."""
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, head[:-4])

    async def events(self) -> AsyncIterator[tuple[float, ServerSentEvent]]:
        """Each event with the wall-clock time (time.time()) its bytes arrived, until the body ends.

        A connection that breaks inside a chunk raises asyncio.IncompleteReadError or ConnectionError.
        """
        async for chunk in self._body():
            arrived = time.time()
            for event in self.decoder.feed(chunk):
                yield arrived, event
        self.decoder.close()
        self.closed_by_server = True

    async def _body(self) -> AsyncIterator[bytes]:
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            while data := await self._reader.read(65536):
                yield data
            return
        while True:
            size_line = await self._reader.readline()
            if not size_line:
                raise ConnectionError("connection closed inside the chunked body")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await self._reader.readline()  # the blank line after the last chunk (no trailers are sent)
                return
            yield (await self._reader.readexactly(size + 2))[:-2]

    async def close(self) -> None:
        """Close the connection (a no-op when it is already closed)."""
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
