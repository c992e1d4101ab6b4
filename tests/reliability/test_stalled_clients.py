"""Clients that connect and never read: they are dropped after the write deadline, their slots and file descriptors
come back, and a download costs one chunk of memory, not the whole file.

The stalled clients are raw sockets with a 4 KiB receive buffer that send a request and never read, against a
server whose write deadline is 1 s; the run they ask for has a log of thousands of events, so what the server sends
cannot all fit in the sockets' buffers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from server_harness import SCRIPTED, ServerProcess, read_sse, start_run, wait_for

from tooling.launcher import open_fds, rss_kib

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability-stalled")]

SLOTS = 5


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[tuple[ServerProcess, dict]]:
    """A server with 5 stream slots and a 1 s write deadline, holding one finished run with a long log."""
    root = tmp_path_factory.mktemp("stalled")
    env = {"TRAINER_MAX_SSE_SUBSCRIBERS": str(SLOTS), "TRAINER_WRITE_TIMEOUT_S": "1"} | SCRIPTED
    server = ServerProcess.in_folder(root, data_dir, env=env).start()
    with server.client() as client:
        run = start_run(client, steps=3000, log_every=1, checkpoint_every=1500, eval_samples=100)
        done = wait_for(client, run["run_id"], {"succeeded", "failed"}, timeout=300)
        assert done["status"] == "succeeded"
    yield server, done
    assert server.stop() == 0, server.log()[-3000:]


def stalled(server: ServerProcess, target: str) -> socket.socket:
    """A client that asks for `target` and never reads what comes back."""
    url = urlsplit(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((url.hostname or "127.0.0.1", url.port or 80))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
    return sock


def subscribers(server: ServerProcess) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("trainer_sse_subscribers ")))


def test_subscribers_that_never_read_are_dropped_and_free_their_slots(strict: tuple[ServerProcess, dict]) -> None:
    server, run = strict
    assert server.proc is not None
    fds_before = open_fds(server.proc.pid)
    socks = [stalled(server, f"/api/events/training?run_id={run['run_id']}") for _ in range(SLOTS)]
    try:
        # Every slot taken at first; within a few write deadlines every stalled client is gone. The stalled requests
        # are served before this test's own: read in one batch, the server could take this one first, give it a slot
        # and refuse a stalled one (a fresh-clone `make test` did, once test clients started ~25 ms sooner).
        deadline = time.monotonic() + 30
        while subscribers(server) < SLOTS and time.monotonic() < deadline:
            time.sleep(0.05)
        with server.client() as client:
            while time.monotonic() < deadline:
                response, stream = read_sse(client, {"run_id": run["run_id"]}, seconds=20)
                if response.status_code == 200:
                    break
                assert response.status_code == 503
                time.sleep(0.5)
            assert response.status_code == 200, "the stalled clients still hold every slot"
            assert stream.events[-1].event == "end" and stream.closed_by_server
        assert server.log().count("left data unread") >= SLOTS
        while subscribers(server) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert subscribers(server) == 0
        assert open_fds(server.proc.pid) <= fds_before + 1
    finally:
        for sock in socks:
            sock.close()


def test_downloads_are_streamed_in_chunks_and_stalled_ones_dropped(strict: tuple[ServerProcess, dict]) -> None:
    server, run = strict
    assert server.proc is not None
    checkpoint = run["checkpoints"][-1]
    target = f"/api/training/runs/{run['run_id']}/evidence/checkpoints/{checkpoint['name']}"
    fds_before = open_fds(server.proc.pid)
    rss_before = rss_kib(server.proc.pid)
    socks = [stalled(server, target) for _ in range(20)]
    try:
        time.sleep(0.5)
        grown_mib = (rss_kib(server.proc.pid) - rss_before) / 1024
        # Read whole, 20 downloads of this file would hold 20 x its size.
        whole_mib = 20 * checkpoint["bytes"] / (1 << 20)
        assert grown_mib < min(8.0, whole_mib / 2), (grown_mib, whole_mib)
        deadline = time.monotonic() + 20
        while open_fds(server.proc.pid) > fds_before + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert open_fds(server.proc.pid) <= fds_before + 1, "stalled downloads kept their file descriptors"
    finally:
        for sock in socks:
            sock.close()
    with server.client() as client:
        body = client.get(target)
        assert body.status_code == 200 and len(body.content) == checkpoint["bytes"]
        assert body.headers["X-Checksum-SHA256"] == checkpoint["sha256"]


def test_a_subscriber_that_stops_reading_a_live_run_is_dropped_and_others_miss_nothing(
    strict: tuple[ServerProcess, dict],
) -> None:
    server, _ = strict
    dropped_before = server.log().count("left data unread")
    with server.client() as client:
        run = start_run(client, steps=4000, log_every=1, checkpoint_every=4000, eval_samples=100)
        sock = stalled(server, f"/api/events/training?run_id={run['run_id']}")
        try:
            response, stream = read_sse(client, {"run_id": run["run_id"]}, seconds=300)
            assert response.status_code == 200 and stream.closed_by_server
            ids = [int(e.id or 0) for e in stream.events]
            assert ids == list(range(1, len(ids) + 1)) and stream.events[-1].event == "end"
            # The stalled one was dropped while the run was still sending (its buffer filled, its deadline passed).
            assert server.log().count("left data unread") == dropped_before + 1
            assert subscribers(server) == 0
        finally:
            sock.close()
