"""Live fan-out (reference_server/broadcast.py): caught-up streams get each event from one shared write, over real
sockets against a real server with scripted trainers. Many subscribers, a client that falls behind and catches up,
an HTTP/1.0 client (no chunked framing), and the heartbeat on an idle stream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from server_harness import SCRIPTED, ServerProcess, read_sse, start_run, wait_for
from trainer_conformance.raw_stream import RawEventStream
from trainer_conformance.sse import SSEDecoder

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server-fanout")]  # ~20 s of live streams

HEARTBEAT_S = 0.3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fanout")
    server = ServerProcess.in_folder(root, data_dir, ["--heartbeat-s", str(HEARTBEAT_S)], env=SCRIPTED).start()
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def log_lines(server: ServerProcess, run_id: str) -> list[str]:
    return (server.evidence_dir / "training" / run_id / "metrics.jsonl").read_text().splitlines()


async def subscribe(url: str, path: str, until_end_of: list[str]) -> list[tuple[str, str]]:
    """(id, data) of every event on `path` until the `end` of the run named in `until_end_of` (filled later)."""
    parts = urlsplit(url)
    stream = await RawEventStream.open(parts.hostname or "127.0.0.1", parts.port or 80, path)
    assert stream.status == 200
    seen: list[tuple[str, str]] = []
    try:
        async for _, event in stream.events():
            seen.append((event.id, event.data))
            if event.event == "end" and until_end_of and until_end_of[0] in event.data:
                break
    finally:
        await stream.close()
    return seen


def test_every_live_subscriber_gets_every_event_once_in_order(server: ServerProcess) -> None:
    run_ids: list[str] = []

    async def scenario() -> tuple[list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
        feed = [asyncio.create_task(subscribe(server.url, "/api/events/training", run_ids)) for _ in range(30)]
        await asyncio.sleep(1.0)  # the feed is live only: its subscribers are in before the run starts
        with server.client() as client:
            run = await asyncio.to_thread(start_run, client, steps=600, log_every=2, checkpoint_every=300)
        run_ids.append(run["run_id"])
        path = f"/api/events/training?run_id={run['run_id']}"
        per_run = [asyncio.create_task(subscribe(server.url, path, run_ids)) for _ in range(30)]
        return await asyncio.wait_for(asyncio.gather(*feed), 120), await asyncio.wait_for(asyncio.gather(*per_run), 120)

    feeds, runs = asyncio.run(scenario())
    lines = log_lines(server, run_ids[0])
    assert len(lines) > 300
    for seen in runs:  # replayed, then live: exactly the log
        assert [data for _, data in seen] == lines
        assert [int(i) for i, _ in seen] == list(range(1, len(lines) + 1))
    for seen in feeds:  # live from before the first event: the run's whole log, with feed ids
        mine = [(i, data) for i, data in seen if i.startswith(run_ids[0] + ":")]
        assert [data for _, data in mine] == lines
        assert [i for i, _ in mine] == [f"{run_ids[0]}:{n}" for n in range(1, len(lines) + 1)]


def test_a_client_that_falls_behind_catches_up_without_gaps_or_repeats(server: ServerProcess) -> None:
    with server.client() as client:
        run = start_run(client, steps=1000, log_every=1, checkpoint_every=1000, eval_samples=100)
        url = urlsplit(server.url)
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            target = f"/api/events/training?run_id={run['run_id']}"
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            body, reads = b"", 0
            while chunk := sock.recv(2048):
                body += chunk
                reads += 1
                if reads % 50 == 0:
                    time.sleep(0.5)  # stop reading now and then: the server's writes back up behind us
        wait_for(client, run["run_id"], {"succeeded"})
    head, _, rest = body.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    decoder = SSEDecoder()
    events = decoder.feed(unchunk(rest))
    assert [e.data for e in events] == log_lines(server, run["run_id"])
    assert events[-1].event == "end"


def unchunk(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body, decoded (RFC 9112 section 7.1); ends at the last chunk."""
    out, at = b"", 0
    while True:
        eol = body.index(b"\r\n", at)
        size = int(body[at:eol].split(b";")[0], 16)
        if size == 0:
            return out
        out += body[eol + 2 : eol + 2 + size]
        assert body[eol + 2 + size : eol + 4 + size] == b"\r\n"
        at = eol + 4 + size


def test_an_http_1_0_client_gets_the_live_events_unframed(server: ServerProcess) -> None:
    with server.client() as client:
        run = start_run(client, steps=400, log_every=2, checkpoint_every=400, eval_samples=100)
        url = urlsplit(server.url)
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30) as sock:
            sock.sendall(f"GET /api/events/training?run_id={run['run_id']} HTTP/1.0\r\n\r\n".encode())
            body = b""
            while chunk := sock.recv(65536):  # an HTTP/1.0 body ends when the server closes the connection
                body += chunk
    head, _, rest = body.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200" and b"chunked" not in head
    events = SSEDecoder().feed(rest)
    assert [e.data for e in events] == log_lines(server, run["run_id"])


def test_an_idle_stream_gets_a_comment_every_heartbeat(server: ServerProcess) -> None:
    with server.client() as client:
        response, stream = read_sse(client, {}, seconds=6 * HEARTBEAT_S)
    assert response.status_code == 200 and not stream.events
    # One comment per heartbeat without events (a timer may fire late on a busy machine, never early).
    assert 2 <= stream.comments.count("keep-alive") <= 6, stream.comments
