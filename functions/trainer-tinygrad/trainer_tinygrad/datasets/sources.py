"""Well-known local copies of datasets, found without being named (`trainer-datasets import-known`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownSource:
    """A directory where a package manager installs a dataset's files."""

    dataset: str
    directory: Path
    label: str


KNOWN_SOURCES: tuple[KnownSource, ...] = (
    # Debian/Ubuntu `dataset-fashion-mnist`: re-gzipped, so it is accepted by payload hash.
    KnownSource("fashion-mnist", Path("/usr/share/datasets/fashion-mnist"), "Debian package dataset-fashion-mnist"),
)
