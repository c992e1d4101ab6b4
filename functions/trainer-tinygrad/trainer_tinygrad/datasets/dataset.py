"""`load_dataset`: verified bytes in, checked numpy arrays and a provenance record out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..clock import utc_now
from .cache import DatasetCache, FileStatus, require_verified
from .errors import ChecksumMismatch, DatasetFormatError
from .loaders import load_cifar10_python, load_idx_split
from .manifest import DatasetEntry, Manifest


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: uint8 images (N, C, H, W), uint8 labels (N,) in 0..num_classes-1, all read-only."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    classes: tuple[str, ...]
    provenance: dict[str, Any]


def load_dataset(name: str, cache: DatasetCache | None = None) -> Dataset:
    """Load a verified dataset from the cache (default: `DatasetCache()`).

    Every file must be verified (stamp or re-hash); the bytes actually parsed are hashed again and must equal the
    verified hash, so a file changed after its stamp is refused (ChecksumMismatch) even if its mtime was kept.
    """
    cache = cache if cache is not None else DatasetCache()
    entry = cache.manifest.dataset(name)
    status = cache.status(name)
    blobs: dict[str, bytes] = {}
    for f in status.files:
        path = require_verified(name, f)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != f.sha256:
            cache.forget(name, f.stored_as or f.name)
            raise ChecksumMismatch(
                f"{path} changed after it was verified: sha256 {actual}, verified as {f.sha256}; "
                f"run `trainer-datasets verify {name}` and re-import or re-fetch it"
            )
        blobs[f.name] = data
    if entry.format == "idx-gzip":
        splits = {}
        for key, split in entry.splits.items():
            assert split.images is not None and split.labels is not None  # the manifest schema requires both
            splits[key] = load_idx_split(blobs[split.images], blobs[split.labels], entry, key)
    elif entry.format == "cifar10-python":
        archive = next(s.archive for s in entry.splits.values() if s.archive)
        splits = load_cifar10_python(blobs[archive], entry)
    else:
        raise DatasetFormatError(f"{name}: no loader for format {entry.format!r}")
    for x, y in splits.values():
        x.flags.writeable = False
        y.flags.writeable = False
    return Dataset(
        name=name,
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        num_classes=entry.num_classes,
        classes=entry.classes,
        provenance=build_provenance(entry, cache.manifest, status.files),
    )


def build_provenance(entry: DatasetEntry, manifest: Manifest, files: Iterable[FileStatus]) -> dict[str, Any]:
    """A dict valid against schemas/dataset-provenance.schema.json for verified `files` of `entry`."""
    records = []
    for f in files:
        record = {
            "name": f.name,
            "bytes": f.bytes,
            "sha256": f.sha256,
            "payload_sha256": f.payload_sha256,
            "source": f.source or "unknown",
            "verified_at": f.verified_at,
            "matched": f.matched,
        }
        if f.stored_as and f.stored_as != f.name:
            record["stored_as"] = f.stored_as  # the raw payload was imported, not the archive
        records.append(record)
    return {
        "name": entry.name,
        "format": entry.format,
        "files": records,
        "manifest_sha256": manifest.sha256,
        "loaded_at": utc_now(),
    }
