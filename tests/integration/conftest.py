"""Fixtures for running the conformance suite against the real reference server (one per test module)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conformance_harness import RunningServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[RunningServer]:
    """The real reference server on a free port, with its own evidence folder; stopped after the module."""
    root = tmp_path_factory.mktemp("conformance-server")
    port = _free_port()
    log = root / "server.log"
    env = {**os.environ, "MOCKS_DISABLED": "1", "DEV": os.environ.get("DEV", "CPU")}
    command = [sys.executable, "-m", "reference_server", "--host", "127.0.0.1", "--port", str(port),
               "--evidence-dir", str(root / "evidence"), "--data-dir", str(data_dir)]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(f"http://127.0.0.1:{port}", root / "evidence", log, process)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the reference server did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield server
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
