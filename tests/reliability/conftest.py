"""The server tests' harness and fixtures (real servers on free ports, the real Fashion-MNIST), reused here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SERVER_TESTS = Path(__file__).resolve().parents[1] / "server"
if str(_SERVER_TESTS) not in sys.path:
    sys.path.insert(0, str(_SERVER_TESTS))


def _server_fixtures() -> object:
    spec = importlib.util.spec_from_file_location("server_fixtures", _SERVER_TESTS / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fixtures = _server_fixtures()
data_dir = _fixtures.data_dir  # type: ignore[attr-defined]
server_factory = _fixtures.server_factory  # type: ignore[attr-defined]
server = _fixtures.server  # type: ignore[attr-defined]
