"""The pinned dataset manifest (`functions/trainer-tinygrad/datasets/checksums.json`), parsed into typed records.

The JSON Schema `schemas/dataset-manifest.schema.json` is the full contract (checked by the tests); parsing here
checks what the code relies on, with the standard library only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError, UnknownDataset

_HERE = Path(__file__).resolve()
#: The source tree's manifest first; the copy the wheel force-includes as trainer_tinygrad/_data/ second.
MANIFEST_CANDIDATES = (
    _HERE.parents[2] / "datasets" / "checksums.json",
    _HERE.parents[1] / "_data" / "checksums.json",
)


@dataclass(frozen=True)
class Mirror:
    """A URL serving a file, and the key of the source that published it."""

    url: str
    source: str


@dataclass(frozen=True)
class FileEntry:
    """One pinned file: the archive's size and hash, the decompressed payload's hash when it is a single gzip."""

    name: str
    bytes: int
    sha256: str
    payload_name: str | None
    payload_bytes: int | None
    payload_sha256: str | None
    mirrors: tuple[Mirror, ...]

    @property
    def accepted_names(self) -> tuple[str, ...]:
        """File names this entry may be stored under: the archive, or the raw payload when its hash is known."""
        if self.payload_name and self.payload_sha256:
            return (self.name, self.payload_name)
        return (self.name,)


@dataclass(frozen=True)
class Split:
    """A split's expected size and where its arrays live (IDX image/label files or archive members)."""

    count: int
    images: str | None = None
    labels: str | None = None
    archive: str | None = None
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetEntry:
    """Everything the manifest says about one dataset."""

    name: str
    title: str
    format: str
    image_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    license: str
    citation: str
    splits: dict[str, Split]
    files: tuple[FileEntry, ...]
    meta_member: str | None = None

    @property
    def num_classes(self) -> int:
        """Number of label values; labels range over 0..num_classes-1."""
        return len(self.classes)

    def file(self, name: str) -> FileEntry:
        """The entry for a file, by its manifest name or its raw payload name."""
        for entry in self.files:
            if name in entry.accepted_names:
                return entry
        raise UnknownDataset(f"dataset {self.name!r} has no file {name!r}; it has {[f.name for f in self.files]}")


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest; `sha256` is the hash of the manifest file's bytes (recorded in provenance)."""

    datasets: dict[str, DatasetEntry]
    sha256: str
    path: Path | None
    sources: dict[str, dict[str, str]]

    @classmethod
    def load(cls, path: Path | None = None) -> Manifest:
        """Read the manifest at `path`, else the source tree's, else the wheel's copy."""
        if path is None:
            path = next((p for p in MANIFEST_CANDIDATES if p.is_file()), MANIFEST_CANDIDATES[0])
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read the dataset manifest {path}: {exc.strerror}") from exc
        return cls.from_bytes(raw, Path(path))

    @classmethod
    def from_bytes(cls, raw: bytes, path: Path | None = None) -> Manifest:
        """Parse manifest JSON bytes."""
        try:
            doc = json.loads(raw)
            datasets = {name: _dataset(name, body) for name, body in doc["datasets"].items()}
            sources = dict(doc.get("sources", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"malformed dataset manifest {path or '<bytes>'}: {exc!r}") from exc
        return cls(datasets=datasets, sha256=hashlib.sha256(raw).hexdigest(), path=path, sources=sources)

    @property
    def names(self) -> list[str]:
        """Dataset names in manifest order."""
        return list(self.datasets)

    def dataset(self, name: str) -> DatasetEntry:
        """The entry of a dataset; UnknownDataset names the known ones."""
        try:
            return self.datasets[name]
        except KeyError:
            raise UnknownDataset(f"unknown dataset {name!r}; the manifest lists {self.names}") from None


def _dataset(name: str, body: dict[str, Any]) -> DatasetEntry:
    files = tuple(
        FileEntry(
            name=f["name"],
            bytes=int(f["bytes"]),
            sha256=f["sha256"],
            payload_name=f.get("payload_name"),
            payload_bytes=f.get("payload_bytes"),
            payload_sha256=f.get("payload_sha256"),
            mirrors=tuple(Mirror(m["url"], m["source"]) for m in f["mirrors"]),
        )
        for f in body["files"]
    )
    splits = {
        key: Split(
            count=int(s["count"]),
            images=s.get("images"),
            labels=s.get("labels"),
            archive=s.get("archive"),
            members=tuple(s.get("members", ())),
        )
        for key, s in body["splits"].items()
    }
    names = {f.name for f in files}
    for key, split in splits.items():
        for ref in (split.images, split.labels, split.archive):
            if ref is not None and ref not in names:
                raise ValueError(f"{name}: split {key!r} names {ref!r}, which is not in files")
    c, h, w = body["image_shape"]
    return DatasetEntry(
        name=name,
        title=body["title"],
        format=body["format"],
        image_shape=(int(c), int(h), int(w)),
        classes=tuple(body["classes"]),
        license=body["license"],
        citation=body["citation"],
        splits=splits,
        files=files,
        meta_member=body.get("meta_member"),
    )
