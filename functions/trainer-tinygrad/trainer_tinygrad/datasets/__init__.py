"""Datasets for trainer-tinygrad: a pinned manifest, a verified local cache, fetch/import, loaders, provenance.

numpy and the standard library only: the reference server imports this package, and it must never load tinygrad.
"""

from .cache import DatasetCache, DatasetStatus, FileState, FileStatus, KnownImport, default_cache_dir
from .dataset import Dataset, load_dataset
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
