"""The provenance record of a dataset load: which bytes, from where, verified when (schemas/dataset-provenance)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import FileStatus
    from .manifest import DatasetSpec, Manifest


def utc_timestamp() -> str:
    """Now as RFC 3339 UTC with a `Z` and milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_provenance(spec: DatasetSpec, manifest: Manifest, files: Iterable[FileStatus]) -> dict[str, Any]:
    """A dict valid against schemas/dataset-provenance.schema.json for verified `files` of `spec`."""
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
        "name": spec.name,
        "format": spec.format,
        "files": records,
        "manifest_sha256": manifest.sha256,
        "loaded_at": utc_timestamp(),
    }
