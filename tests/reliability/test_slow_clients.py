"""Read timeouts for clients that send their headers or body too slowly, with raw sockets against a real server
started with 1-second limits (set through TRAINER_* environment variables), and the settings' precedence."""

from __future__ import annotations

import contextlib
import http.client
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from server_harness import ServerFactory, ServerProcess

from reference_server.settings import ConfigError, load

pytestmark = pytest.mark.xdist_group("reliability-slow-clients")

LIMIT_S = 1.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    """A server whose clients have 1 s for their headers and 1 s for their body."""
    root = tmp_path_factory.mktemp("slow-clients")
    env = {"TRAINER_HEADER_TIMEOUT_S": str(LIMIT_S), "TRAINER_BODY_TIMEOUT_S": str(LIMIT_S)}
    server = ServerProcess.in_folder(root, data_dir, env=env)
    yield server.start()
    assert server.stop() == 0, server.log()[-3000:]


def connect(server: ServerProcess) -> socket.socket:
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def trickle_until_closed(sock: socket.socket, data: bytes, every_s: float, give_up_s: float) -> tuple[float, bytes]:
    """Send `data` a byte at a time; (seconds until the server closed, what it sent back)."""
    start = time.monotonic()
    sock.settimeout(every_s)
    received = b""
    for i in range(len(data)):
        if time.monotonic() - start > give_up_s:
            break
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, received
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start, received
        if not chunk:
            return time.monotonic() - start, received
        received += chunk
    return math.inf, received


def wait_closed(sock: socket.socket, give_up_s: float) -> tuple[float, bytes]:
    """Send nothing more; (seconds until the server closed, what it sent back)."""
    start = time.monotonic()
    sock.settimeout(give_up_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return math.inf, received
    except ConnectionResetError:
        pass
    return time.monotonic() - start, received


def healthz_seconds(server: ServerProcess) -> float:
    """Round trip of a well-behaved request on a fresh connection."""
    start = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        _, answer = wait_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return time.monotonic() - start


def test_headers_trickled_byte_by_byte_are_cut_off_at_the_limit(strict: ServerProcess) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(strict) as sock:
        closed_after, answer = trickle_until_closed(sock, request, every_s=0.05, give_up_s=10)
    print(f"slow headers: closed after {closed_after:.2f} s (limit {LIMIT_S} s)")
    assert LIMIT_S * 0.9 <= closed_after <= LIMIT_S + 2.5, closed_after
    assert answer == b""  # no request was read, so there is nothing to answer
    assert healthz_seconds(strict) < 1.0


def test_a_body_sent_too_slowly_is_cut_off_and_starts_nothing(strict: ServerProcess) -> None:
    body = b'{"steps": 10, "eval_samples": 100}'
    head = (
        b"POST /api/training/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body) + 100}\r\n\r\n".encode()
    )
    with connect(strict) as sock:
        sock.sendall(head + body)  # 100 bytes short: the server waits for them, then gives up
        closed_after, answer = wait_closed(sock, give_up_s=10)
    print(f"slow body: closed after {closed_after:.2f} s (limit {LIMIT_S} s)")
    assert LIMIT_S * 0.9 <= closed_after <= LIMIT_S + 2.5, closed_after
    assert answer == b""
    with strict.client() as client:
        assert client.get("/api/training/runs").json()["runs"] == []


def test_an_idle_keep_alive_connection_is_closed_after_the_header_limit(strict: ServerProcess) -> None:
    with connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        closed_after, _ = wait_closed(sock, give_up_s=10)
    print(f"idle keep-alive: closed after {closed_after:.2f} s (limit {LIMIT_S} s)")
    assert closed_after <= LIMIT_S + 2.5


SLOW_CLIENTS = 300


def test_hundreds_of_slow_clients_do_not_block_a_normal_one(strict: ServerProcess) -> None:
    sockets = [connect(strict) for _ in range(SLOW_CLIENTS)]
    stop = threading.Event()

    def drip() -> None:
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        while not stop.wait(0.1):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")

    dripper = threading.Thread(target=drip)
    dripper.start()
    try:
        time.sleep(0.3)
        during = healthz_seconds(strict)
        print(f"healthz while {SLOW_CLIENTS} clients trickle: {during * 1000:.1f} ms")
        assert during < 1.0
        time.sleep(LIMIT_S + 1.5)
        closed = 0
        for sock in sockets:
            sock.settimeout(0.5)
            try:
                closed += sock.recv(1) == b""
            except (TimeoutError, ConnectionResetError):
                closed += 0
        assert closed == len(sockets)
    finally:
        stop.set()
        dripper.join()
        for sock in sockets:
            sock.close()
    assert healthz_seconds(strict) < 1.0


def test_a_burst_of_thousands_of_health_checks_is_answered_promptly(strict: ServerProcess) -> None:
    url = urlsplit(strict.url)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
        try:
            for _ in range(100):
                started = time.monotonic()
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                with lock:
                    latencies.append(time.monotonic() - started)
                    statuses.append(response.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=hammer) for _ in range(20)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    p50, worst = latencies[len(latencies) // 2], latencies[-1]
    print(f"{len(latencies)} health checks in {elapsed:.1f} s over 20 connections: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms")  # fmt: skip
    assert statuses == [200] * 2000
    assert p99 < 1.0


def test_flags_win_over_environment_over_defaults() -> None:
    assert load([], env={}).header_timeout_s == 60.0 and load([], env={}).body_timeout_s == 60.0
    env = {"TRAINER_HEADER_TIMEOUT_S": "5", "TRAINER_BODY_TIMEOUT_S": "7", "TRAINER_MAX_HEADER_BYTES": "4096"}
    from_env = load([], env=env)
    assert (from_env.header_timeout_s, from_env.body_timeout_s, from_env.max_header_bytes) == (5.0, 7.0, 4096)
    flags = load(["--header-timeout-s", "2", "--body-timeout-s", "3", "--max-header-bytes", "8192"], env=env)
    assert (flags.header_timeout_s, flags.body_timeout_s, flags.max_header_bytes) == (2.0, 3.0, 8192)


@pytest.mark.parametrize(
    "env",
    [
        {"TRAINER_HEADER_TIMEOUT_S": "0"},
        {"TRAINER_BODY_TIMEOUT_S": "-1"},
        {"TRAINER_BODY_TIMEOUT_S": "nan"},
        {"TRAINER_HEADER_TIMEOUT_S": "soon"},
        {"TRAINER_MAX_HEADER_BYTES": "100"},
    ],
)
def test_timeouts_that_cannot_work_refuse_to_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load([], env=env)


def test_the_server_refuses_bad_limits_at_start(server_factory: ServerFactory) -> None:
    with pytest.raises(RuntimeError, match="--header-timeout-s"):
        server_factory(extra_args=["--header-timeout-s", "0"], wait_ready=False)
