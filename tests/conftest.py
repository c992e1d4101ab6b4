"""Fixtures shared by every test folder: the real Fashion-MNIST in a temporary verified cache, and real servers.

server_harness.py sits beside this file so that any test module can import it. It is imported only by the fixtures
that start servers: the training function's own tests (tests/trainer, tests/datasets) run with the function
installed alone, without the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from trainer_tinygrad import collector
from trainer_tinygrad.datasets import DatasetCache

if TYPE_CHECKING:
    from server_harness import ServerFactory, ServerProcess

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def pytest_configure(config: pytest.Config) -> None:
    """A test process's heap is large and long-lived too (servers' clients, the suite's session, tinygrad in the
    function's own tests): the collector walked it 13.6% of the py lane's workers' CPU time at CPython's default."""
    collector.set_young_threshold()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` first, each kind in collection order.

    Why: pytest-xdist hands out a group (`--dist loadgroup`) or a lone test as one unit, in this order where its own
    reordering is off (the `py` environment). That reordering put groups with more tests first, so the lone tests
    came last, the 35-s crash-points test among them, and `make test` ended on it while the other workers idled; now
    short tests fill the end. A test of more than a few seconds, training or waiting, is therefore marked `slow`:
    unmarked, the 20-s stream fan-out group ended the run instead.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset cache holding the real Fashion-MNIST, imported and verified against the manifest."""
    if not FASHION_MNIST.is_dir():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    root = tmp_path_factory.mktemp("datasets")
    assert DatasetCache(root).import_dir("fashion-mnist", FASHION_MNIST).verified
    return root


def _factory(root: Path, data_dir: Path, started: list[ServerProcess]) -> ServerFactory:
    from server_harness import SCRIPTED, ServerProcess

    def make(
        evidence_dir: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str | None] | None = None,
        wait_ready: bool = True,
        scripted: bool = False,
    ) -> ServerProcess:
        """A server; `scripted`: its trainers are tests/scripted_trainer.py (for tests about the server, not
        training)."""
        env = (dict(SCRIPTED) if scripted else {}) | dict(env or {})
        server = ServerProcess.in_folder(root, data_dir, extra_args, env, evidence_dir=evidence_dir)
        started.append(server)
        return server.start(wait_ready=wait_ready)

    return make


@pytest.fixture
def server_factory(tmp_path: Path, data_dir: Path) -> Iterator[ServerFactory]:
    """Start servers for one test (restart tests start several on one evidence dir); all stopped after."""
    started: list[ServerProcess] = []
    yield _factory(tmp_path, data_dir, started)
    for server in started:
        if server.proc and server.proc.poll() is None:
            server.stop()


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    """One server shared by a module's tests, its trainers scripted (tests/scripted_trainer.py): for modules about
    the server's API, streams and evidence rather than training (mark them with xdist_group too)."""
    started: list[ServerProcess] = []
    yield _factory(tmp_path_factory.mktemp("server"), data_dir, started)(scripted=True)
    for s in started:
        if s.proc and s.proc.poll() is None:
            assert s.stop() == 0, s.log()[-3000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    """One server shared by a module's tests (mark the module with xdist_group so they share a worker)."""
    started: list[ServerProcess] = []
    yield _factory(tmp_path_factory.mktemp("server"), data_dir, started)()
    for s in started:
        if s.proc and s.proc.poll() is None:
            assert s.stop() == 0, s.log()[-3000:]
