"""Fixtures for the trainer tests: the real Fashion-MNIST in a temporary, verified dataset cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_tinygrad.datasets import DatasetCache

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset cache holding the real Fashion-MNIST, imported and verified against the manifest."""
    if not FASHION_MNIST.is_dir():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    root = tmp_path_factory.mktemp("datasets")
    assert DatasetCache(root).import_dir("fashion-mnist", FASHION_MNIST).verified
    return root
