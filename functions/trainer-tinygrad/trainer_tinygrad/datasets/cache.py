"""The local dataset cache: files per dataset, their verification stamps, and the state of each file.

Layout: `<root>/<dataset>/<file>` plus `<root>/<dataset>/.stamps.json`. A stamp records the hash result of a file
keyed by (name, size, mtime_ns, the manifest's expected hashes); while all of those are unchanged the result is
trusted, so a status check costs a `stat` per file. Anything changed means a re-hash. A byte changed in place with
its mtime restored is not noticed by a stamp (`verify --force` re-hashes); `load_dataset` still refuses it because
it hashes the bytes it parses.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..clock import utc_now
from ..files import copy_atomic_tmp, publish, write_atomic
from . import download
from .errors import ChecksumMismatch, DatasetNotAvailable
from .manifest import FileEntry, Manifest
from .sources import KNOWN_SOURCES, KnownSource
from .verification import FileVerification, verify_file

ENV_DATA_DIR = "TRAINER_DATA_DIR"
STAMPS = ".stamps.json"


def default_cache_dir() -> Path:
    """`$TRAINER_DATA_DIR`, else `~/.cache/trainer-tinygrad/datasets`."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trainer-tinygrad" / "datasets"


class FileState(StrEnum):
    """What the cache knows about one manifest file."""

    VERIFIED = "verified"  # present, and its archive or payload hash matches the manifest
    MISSING = "missing"  # not in the cache
    MISMATCH = "mismatch"  # present, and neither hash matches
    UNVERIFIED = "unverified"  # present, stamp stale, and the caller asked not to re-hash


@dataclass(frozen=True)
class FileStatus:
    """One manifest file in the cache. `sha256`/`bytes` describe the cached file as stored (None when missing)."""

    name: str
    state: FileState
    path: Path | None = None
    stored_as: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    payload_sha256: str | None = None
    matched: str | None = None
    source: str | None = None
    verified_at: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The `files[]` item of schemas/dataset-list.schema.json."""
        out: dict[str, Any] = {"name": self.name, "state": self.state.value, "sha256": self.sha256, "bytes": self.bytes}
        out.update(payload_sha256=self.payload_sha256, matched=self.matched, source=self.source)
        out.update(verified_at=self.verified_at)
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class DatasetStatus:
    """A dataset's files in the cache: present when every file is there, verified when every file matched."""

    name: str
    files: list[FileStatus] = field(default_factory=list)

    @property
    def present(self) -> bool:
        """Every manifest file is in the cache (verified or not)."""
        return all(f.state is not FileState.MISSING for f in self.files)

    @property
    def verified(self) -> bool:
        """Every manifest file is in the cache and matched the manifest."""
        return all(f.state is FileState.VERIFIED for f in self.files)

    @property
    def source(self) -> str | None:
        """Where the files came from: the directory or base URL of each distinct origin, comma-separated."""
        origins: list[str] = []
        for f in self.files:
            if f.source:
                origin = f.source.rsplit("/", 1)[0] + "/" if "://" in f.source else str(Path(f.source).parent)
                if origin not in origins:
                    origins.append(origin)
        return ", ".join(origins) or None

    def to_json(self) -> dict[str, Any]:
        """The `datasets[]` item of schemas/dataset-list.schema.json."""
        return {
            "name": self.name,
            "present": self.present,
            "verified": self.verified,
            "source": self.source,
            "files": [f.to_json() for f in self.files],
        }


@dataclass(frozen=True)
class KnownImport:
    """What `import_known` did with one well-known source: imported it, or found it already verified."""

    source: KnownSource
    status: DatasetStatus
    imported: bool


class DatasetCache:
    """Dataset files under `root` (default `default_cache_dir()`), checked against `manifest`."""

    def __init__(self, root: Path | None = None, manifest: Manifest | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.manifest = manifest if manifest is not None else Manifest.load()

    # -- state -------------------------------------------------------------------------------------------------

    def status(self, name: str, *, rehash: bool = True, force: bool = False) -> DatasetStatus:
        """Each file's state, trusting valid stamps; stale ones are re-hashed (or reported unverified if not rehash)."""
        entry = self.manifest.dataset(name)
        directory = self.root / name
        stamps = _read_stamps(directory)
        changed = False
        files = []
        for fspec in entry.files:
            status, record = self._file_status(directory, fspec, stamps, rehash=rehash, force=force)
            if record is not None:
                stamps[record["stored_as"]] = record
                changed = True
            files.append(status)
        if changed:
            _write_stamps(directory, stamps)
        return DatasetStatus(name, files)

    def statuses(self, *, rehash: bool = True) -> list[DatasetStatus]:
        """The status of every dataset in the manifest."""
        return [self.status(name, rehash=rehash) for name in self.manifest.names]

    def verify(self, name: str | None = None, force: bool = False) -> list[DatasetStatus]:
        """Re-check one dataset or all; `force` re-hashes every present file even when its stamp is valid."""
        names = [name] if name is not None else self.manifest.names
        return [self.status(n, rehash=True, force=force) for n in names]

    def file_status(self, name: str, filename: str) -> FileStatus:
        """The status of one file, by manifest name or stored (raw payload) name."""
        fspec = self.manifest.dataset(name).file(filename)
        return next(f for f in self.status(name).files if f.name == fspec.name)

    def file_path(self, name: str, filename: str) -> Path:
        """The path of a verified cached file; DatasetNotAvailable or ChecksumMismatch otherwise."""
        status = self.file_status(name, filename)
        return require_verified(name, status)

    def _file_status(
        self, directory: Path, fspec: FileEntry, stamps: dict[str, Any], *, rehash: bool, force: bool
    ) -> tuple[FileStatus, dict[str, Any] | None]:
        """The file's status, plus a new stamp record when it was re-hashed."""
        for stored in fspec.accepted_names:
            path = directory / stored
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            old = stamps.get(stored)
            if not force and old is not None and _stamp_valid(old, st, fspec):
                return _status_from(fspec, path, old), None
            if not rehash:
                return FileStatus(fspec.name, FileState.UNVERIFIED, path, stored, bytes=st.st_size), None
            source = old.get("source") if old else None
            record = _record(fspec, path, verify_file(path, fspec), source)
            return _status_from(fspec, path, record), record
        return FileStatus(fspec.name, FileState.MISSING), None

    def record(self, name: str, path: Path, verification: FileVerification, source: str) -> None:
        """Stamp a file just placed in the cache, with where it came from (no re-hash needed)."""
        fspec = self.manifest.dataset(name).file(path.name)
        directory = self.root / name
        stamps = _read_stamps(directory)
        stamps[path.name] = _record(fspec, path, verification, source)
        _write_stamps(directory, stamps)

    def forget(self, name: str, stored_as: str) -> None:
        """Drop a file's stamp, so the next status re-hashes it (the loader calls this on a hash mismatch)."""
        directory = self.root / name
        stamps = _read_stamps(directory)
        if stamps.pop(stored_as, None) is not None:
            _write_stamps(directory, stamps)

    # -- ingestion ---------------------------------------------------------------------------------------------

    def fetch(self, name: str, *, progress: bool | None = None) -> DatasetStatus:
        """Download every file not yet verified, mirror by mirror; FetchFailed names each attempt."""
        entry = self.manifest.dataset(name)
        directory = self.root / name
        for status in self.status(name).files:
            if status.state is FileState.VERIFIED:
                continue
            fspec = entry.file(status.name)
            path, verification, url = download.fetch_file(fspec, directory, name, progress=progress)
            self._drop_other_forms(directory, fspec, keep=path.name)
            self.record(name, path, verification, url)
        return self.status(name)

    def import_dir(self, name: str, directory: Path) -> DatasetStatus:
        """Copy a dataset's files from a local directory; each copy must match its archive or payload hash.

        Files already verified in the cache are left alone. A file that matches neither hash raises
        ChecksumMismatch and leaves nothing behind; a directory holding none of the files raises DatasetNotAvailable.
        """
        entry = self.manifest.dataset(name)
        directory = Path(directory)
        target = self.root / name
        found = 0
        for status in self.status(name).files:
            fspec = entry.file(status.name)
            src = next((directory / n for n in fspec.accepted_names if (directory / n).is_file()), None)
            if src is None:
                continue
            found += 1
            if status.state is FileState.VERIFIED:
                continue
            try:
                tmp = copy_atomic_tmp(src, target)
            except OSError as exc:
                raise DatasetNotAvailable(f"cannot copy {src} into {target}: {exc.strerror}") from exc
            verification = verify_file(tmp, fspec)
            if not verification.ok:
                tmp.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{src} is not an accepted copy of {name}/{fspec.name}: {verification.reason}")
            dest = target / src.name
            publish(tmp, dest)
            self._drop_other_forms(target, fspec, keep=dest.name)
            self.record(name, dest, verification, str(src.resolve()))
        if found == 0:
            wanted = [n for f in entry.files for n in f.accepted_names]
            raise DatasetNotAvailable(f"{directory} holds no file of {name}: looked for {wanted}")
        return self.status(name)

    def import_known(self) -> list[KnownImport]:
        """Import every dataset found at a well-known local source; a verified dataset is left as it is (stamps)."""
        done = []
        for source in KNOWN_SOURCES:
            if source.dataset not in self.manifest.datasets or not source.directory.is_dir():
                continue
            status = self.status(source.dataset)
            if status.verified:
                done.append(KnownImport(source, status, imported=False))
                continue
            done.append(KnownImport(source, self.import_dir(source.dataset, source.directory), imported=True))
        return done

    def _drop_other_forms(self, directory: Path, fspec: FileEntry, keep: str) -> None:
        """Remove the other stored form of a file (raw vs gzip), so exactly one copy is cached."""
        for other in fspec.accepted_names:
            if other != keep:
                (directory / other).unlink(missing_ok=True)
                self.forget(directory.name, other)


def require_verified(name: str, status: FileStatus) -> Path:
    """The path of a verified file status; ChecksumMismatch or DatasetNotAvailable otherwise."""
    if status.state is FileState.VERIFIED and status.path is not None:
        return status.path
    if status.state is FileState.MISMATCH:
        raise ChecksumMismatch(f"cached {name}/{status.name} does not match the manifest: {status.reason}")
    raise DatasetNotAvailable(
        f"{name}/{status.name} is {status.state.value} in the cache; "
        f"run `trainer-datasets fetch {name}` or `trainer-datasets import {name} DIR`"
    )


def _record(fspec: FileEntry, path: Path, v: FileVerification, source: str | None) -> dict[str, Any]:
    st = path.stat()
    return {
        "stored_as": path.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "expected": [fspec.sha256, fspec.payload_sha256],
        "sha256": v.sha256,
        "payload_sha256": v.payload_sha256,
        "matched": v.matched,
        "reason": v.reason,
        "source": source,
        "verified_at": utc_now(),
    }


def _stamp_valid(record: dict[str, Any], st: os.stat_result, fspec: FileEntry) -> bool:
    return (
        record.get("size") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
        and record.get("expected") == [fspec.sha256, fspec.payload_sha256]
    )


def _status_from(fspec: FileEntry, path: Path, record: dict[str, Any]) -> FileStatus:
    state = FileState.VERIFIED if record.get("matched") else FileState.MISMATCH
    return FileStatus(
        name=fspec.name,
        state=state,
        path=path,
        stored_as=path.name,
        sha256=record.get("sha256"),
        bytes=record.get("size"),
        payload_sha256=record.get("payload_sha256"),
        matched=record.get("matched"),
        source=record.get("source"),
        verified_at=record.get("verified_at") if state is FileState.VERIFIED else None,
        reason=record.get("reason"),
    )


def _read_stamps(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / STAMPS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamps(directory: Path, stamps: dict[str, Any]) -> None:
    # Stamps only save time: a read-only cache still works, it re-hashes on every status.
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / STAMPS, json.dumps(stamps, indent=1, sort_keys=True).encode())
        return
    print(f"warning: cannot write verification stamps in {directory}", file=sys.stderr)
