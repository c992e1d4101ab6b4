"""Fixtures for the dataset tests: a loopback HTTP mirror per test, and the real Fashion-MNIST cache per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dataset_mirror import DEBIAN_FASHION, Mirror
from trainer_tinygrad.datasets import DatasetCache, Manifest


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    """A fresh loopback mirror per test."""
    m = Mirror()
    yield m
    m.close()


@pytest.fixture(scope="session")
def real_fashion_cache(tmp_path_factory: pytest.TempPathFactory) -> DatasetCache:
    """The Debian Fashion-MNIST imported once per session into a temporary cache (never the user's)."""
    if not DEBIAN_FASHION.is_dir():
        pytest.skip(f"{DEBIAN_FASHION} missing: install the Debian package dataset-fashion-mnist (make setup does)")
    cache = DatasetCache(tmp_path_factory.mktemp("real-fashion-cache"), Manifest.load())
    cache.import_dir("fashion-mnist", DEBIAN_FASHION)
    return cache
