"""Real local Ray clusters for the Ray executor's tests: nodes started with `ray start`, every Ray process on
127.0.0.1, stopped by the fixture that started them (by the pids of their own processes).

These tests run in a network namespace whose only interface is loopback (`tox -e ray`, which runs
`scripts/loopback-only pytest tests/scale`): there Ray has no other address to bind or advertise. Anywhere else
they are skipped with that reason.

One cluster serves the whole session (a start costs ~6 s of wall time and more of CPU, and five tests use one). Each
test still gets it as new: a worker node that a test killed, or that still hosts a run's actor or trainer (a test
that ended mid-run leaves them, since its server is gone), is replaced by a fresh node before the next test.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from reference_server.executors.ray_host import TrainerHost
from tooling.ray_local import LocalRayCluster, RayNode, on_loopback_only

#: What a run leaves on a node: the Ray executor's actor (Ray titles its process `ray::<class>`) and its trainer,
#: real or scripted (tests/scripted_trainer.py, which most of these tests run through TRAINER_COMMAND).
RUN_PROCESSES = (f"ray::{TrainerHost.__name__}", "trainer_tinygrad", "scripted_trainer")


@pytest.fixture(autouse=True)
def _loopback_only_with_ray() -> None:
    if not on_loopback_only():
        pytest.skip("the Ray tests run in a loopback-only network namespace: tox -e ray (scripts/loopback-only)")
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is an optional extra: pip install -e '.[ray]' (make setup installs it)")


@pytest.fixture(scope="session")
def _session_cluster() -> Iterator[LocalRayCluster]:
    """A head that trains nothing (losing it would lose the whole cluster) and two worker nodes of one CPU each."""
    cluster = LocalRayCluster.start([0, 1, 1])
    yield cluster
    cluster.stop()


def _left_over(node: RayNode) -> bool:
    """The node is gone, or something of an earlier test's runs still lives on it."""
    commands = node.commands()
    return not commands or any(mark in command for command in commands.values() for mark in RUN_PROCESSES)


@pytest.fixture
def ray_cluster(_session_cluster: LocalRayCluster) -> LocalRayCluster:
    """The session's cluster with two live, idle worker nodes (as `LocalRayCluster.start([0, 1, 1])` leaves it)."""
    for node in [n for n in _session_cluster.nodes if not n.head and _left_over(n)]:
        _session_cluster.replace(node)
    return _session_cluster
