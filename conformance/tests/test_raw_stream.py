"""The raw subscribers the load tools share (a coroutine per stream, and reader callbacks): chunked and
close-delimited bodies, decoded by the WHATWG decoder."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from scripted_target import ScriptedTarget
from trainer_conformance.raw_stream import ChunkedBody, EventReceiver, RawEventStream
from trainer_conformance.sse import ServerSentEvent, SharedDecoding

BODY = b': hello\nretry: 500\n\nid: 1\nevent: metric\ndata: {"step": 10}\n\nid: 2\r\ndata: a\r\ndata: b\r\n\r\n'


async def serve_once(
    chunks: list[bytes], *, chunked: bool, truncate: bool = False, status: bytes = b"200 OK"
) -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        encoding = b"Transfer-Encoding: chunked\r\n" if chunked else b"Connection: close\r\n"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/event-stream\r\n" + encoding + b"\r\n")
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        if chunked and not truncate:
            writer.write(b"0\r\n\r\n")
        if truncate:
            writer.write(b"ff\r\npartial")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def collect(chunks: list[bytes], *, chunked: bool, truncate: bool = False) -> tuple[RawEventStream, list]:
    server, port = await serve_once(chunks, chunked=chunked, truncate=truncate)
    async with server:
        stream = await RawEventStream.open("127.0.0.1", port, "/events", headers={"X-Request-ID": "raw-test-1"})
        got = []
        try:
            async for arrived, event in stream.events():
                got.append((arrived, event))
        finally:
            await stream.close()
    return stream, got


@pytest.mark.parametrize("chunked", [True, False])
def test_events_split_anywhere_across_chunks_arrive_whole(chunked: bool) -> None:
    pieces = [BODY[i : i + 7] for i in range(0, len(BODY), 7)]  # splits fields, CRLFs and the JSON
    stream, got = asyncio.run(collect(pieces, chunked=chunked))
    assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
    assert [(e.id, e.event, e.data) for _, e in got] == [("1", "metric", '{"step": 10}'), ("2", "message", "a\nb")]
    assert stream.closed_by_server and stream.decoder.retry == 500 and stream.decoder.comments == [" hello"]
    assert all(arrived > 1e9 for arrived, _ in got), "arrival is wall-clock time"


def test_a_body_cut_inside_a_chunk_is_an_error_not_a_clean_end() -> None:
    with pytest.raises(ConnectionError, match="inside the chunked body"):
        asyncio.run(collect([BODY], chunked=True, truncate=True))


def kinds_of_a_scripted_run(read: Callable[[str, int, str], Awaitable[list[str]]]) -> list[str]:
    """A run started on the scripted server, its stream read by `read(host, port, path)`: the event types."""
    with ScriptedTarget() as target:
        run_id = httpx.post(f"{target.url}/api/training/runs", json={}).json()["run_id"]
        host, port = target.url.removeprefix("http://").split(":")
        return asyncio.run(read(host, int(port), f"/api/events/training?run_id={run_id}"))


def test_a_real_stream_from_the_scripted_server() -> None:
    async def kinds(host: str, port: int, path: str) -> list[str]:
        stream = await RawEventStream.open(host, port, path)
        try:
            return [event.event async for _, event in stream.events()]
        finally:
            await stream.close()

    got = kinds_of_a_scripted_run(kinds)
    assert got[0] == "status" and got[-1] == "end" and got.count("metric") == 20


async def receive(
    chunks: list[bytes],
    *,
    chunked: bool,
    truncate: bool = False,
    status: bytes = b"200 OK",
    shared: SharedDecoding | None = None,
) -> tuple[EventReceiver, list[tuple[float, ServerSentEvent]]]:
    """The same, through an EventReceiver: every event its callback got."""
    server, port = await serve_once(chunks, chunked=chunked, truncate=truncate, status=status)
    got: list[tuple[float, ServerSentEvent]] = []
    async with server:
        receiver = await EventReceiver.open(
            "127.0.0.1",
            port,
            "/events",
            lambda arrived, event: got.append((arrived, event)),
            headers={"X-A": "1"},
            shared=shared,
        )
        try:
            await receiver.done
        finally:
            receiver.close()
    return receiver, got


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("shared", [None, SharedDecoding()], ids=["alone", "shared"])
def test_the_receiver_gets_events_split_anywhere_across_chunks_whole(
    chunked: bool, shared: SharedDecoding | None
) -> None:
    pieces = [BODY[i : i + 7] for i in range(0, len(BODY), 7)]
    receiver, got = asyncio.run(receive(pieces, chunked=chunked, shared=shared))
    assert receiver.status == 200 and receiver.headers["content-type"] == "text/event-stream"
    assert [(e.id, e.event, e.data) for _, e in got] == [("1", "metric", '{"step": 10}'), ("2", "message", "a\nb")]
    assert receiver.closed_by_server and receiver.decoder.retry == 500 and receiver.decoder.comments == [" hello"]
    assert all(arrived > 1e9 for arrived, _ in got), "arrival is wall-clock time"


def test_the_receiver_reports_a_body_cut_inside_a_chunk_as_an_error() -> None:
    with pytest.raises(ConnectionError, match="inside the chunked body"):
        asyncio.run(receive([BODY], chunked=True, truncate=True))


def test_the_receiver_reads_nothing_of_a_refused_subscription() -> None:
    receiver, got = asyncio.run(receive([BODY], chunked=True, status=b"503 Service Unavailable"))
    assert receiver.status == 503 and got == [] and not receiver.closed_by_server


def test_the_receiver_on_a_real_stream_from_the_scripted_server() -> None:
    async def kinds(host: str, port: int, path: str) -> list[str]:
        got: list[str] = []
        receiver = await EventReceiver.open(host, port, path, lambda _, event: got.append(event.event))
        try:
            await receiver.done
        finally:
            receiver.close()
        return got

    got = kinds_of_a_scripted_run(kinds)
    assert got[0] == "status" and got[-1] == "end" and got.count("metric") == 20


def test_chunked_bodies_with_extensions_and_trailers_byte_by_byte() -> None:
    body = b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"
    whole = ChunkedBody()
    assert whole.feed(body) == [b"hello", b" ", b"0123456789"] and whole.ended
    split = ChunkedBody()
    assert b"".join(part for i in range(len(body)) for part in split.feed(body[i : i + 1])) == b"hello 0123456789"
    assert split.ended
    assert split.feed(b"5\r\nafter\r\n") == []  # nothing after the end


@pytest.mark.parametrize("bad", [b"zz\r\nhello\r\n", b"5\r\nhelloXY", b"-5\r\nhello\r\n", b"0x5\r\nhello\r\n"])
def test_a_malformed_chunk_is_an_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        ChunkedBody().feed(bad)
