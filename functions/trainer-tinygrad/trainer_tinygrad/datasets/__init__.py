"""Datasets for trainer-tinygrad: a pinned manifest, a verified local cache, fetch/import, loaders, provenance.

numpy and the standard library only: the reference server imports this package, and it must never load tinygrad.
`Dataset` and `load_dataset` (the loaders, numpy) are imported on first use: the server, which only reads the cache,
then starts without numpy (~0.1 s of every server start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cache import DatasetCache, DatasetStatus, FileState, FileStatus, KnownImport, default_cache_dir
from .errors import (
    ChecksumMismatch,
    DatasetError,
    DatasetFormatError,
    DatasetNotAvailable,
    FetchFailed,
    ManifestError,
    UnknownDataset,
)
from .manifest import DatasetEntry, FileEntry, Manifest

if TYPE_CHECKING:
    from .dataset import Dataset, load_dataset


def __getattr__(name: str) -> Any:
    if name in ("Dataset", "load_dataset"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChecksumMismatch",
    "Dataset",
    "DatasetCache",
    "DatasetEntry",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotAvailable",
    "DatasetStatus",
    "FetchFailed",
    "FileEntry",
    "FileState",
    "FileStatus",
    "KnownImport",
    "Manifest",
    "ManifestError",
    "UnknownDataset",
    "default_cache_dir",
    "load_dataset",
]
