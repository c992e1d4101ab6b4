"""Fixtures for running the conformance suite against the real reference server (one per test module)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance_harness import RunningServer

from tooling.launcher import LaunchError, launch


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[RunningServer]:
    """The real reference server on a free port, with its own evidence folder; stopped after the module."""
    root = tmp_path_factory.mktemp("conformance-server")
    log = root / "server.log"
    env = {**os.environ, "MOCKS_DISABLED": "1", "DEV": os.environ.get("DEV", "CPU")}
    try:
        launched = launch(
            ["--evidence-dir", str(root / "evidence"), "--data-dir", str(data_dir)], log_path=log, env=env
        )
    except LaunchError as err:
        pytest.fail(f"the reference server did not become ready: {err}")
    yield RunningServer(launched.url, root / "evidence", log, launched.proc)
    launched.stop(timeout=30)
