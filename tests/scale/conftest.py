"""Real local Ray clusters for the Ray executor's tests: nodes started with `ray start`, every Ray process on
127.0.0.1, stopped by the fixture that started them (by the pids of their own processes).

These tests run in a network namespace whose only interface is loopback (`tox -e ray`, which runs
`scripts/loopback-only pytest tests/scale`): there Ray has no other address to bind or advertise. Anywhere else
they are skipped with that reason.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tooling.ray_local import LocalRayCluster, on_loopback_only


@pytest.fixture(autouse=True)
def _loopback_only_with_ray() -> None:
    if not on_loopback_only():
        pytest.skip("the Ray tests run in a loopback-only network namespace: tox -e ray (scripts/loopback-only)")
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is an optional extra: pip install -e '.[ray]' (make setup installs it)")


@pytest.fixture
def ray_cluster() -> Iterator[LocalRayCluster]:
    """A head that trains nothing (losing it would lose the whole cluster) and two worker nodes of one CPU each."""
    cluster = LocalRayCluster.start([0, 1, 1])
    yield cluster
    cluster.stop()
