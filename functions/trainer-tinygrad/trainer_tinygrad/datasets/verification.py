"""Hashing one file against its manifest entry: the archive hash, else the decompressed payload hash."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..files import sha256_file
from .manifest import FileEntry

_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
Matched = Literal["archive", "payload"]


@dataclass(frozen=True)
class FileVerification:
    """The outcome of hashing one file: `matched` is None when neither hash matched (`reason` says why)."""

    sha256: str
    bytes: int
    matched: Matched | None
    payload_sha256: str | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file is an accepted copy of its manifest entry."""
        return self.matched is not None


def _payload_sha256(path: Path) -> tuple[str | None, str | None]:
    """(sha256 of the gunzipped content, None) or (None, why it could not be decompressed)."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        return None, f"not a complete gzip stream ({exc})"
    return digest.hexdigest(), None


def describe_content(path: Path) -> str:
    """A hint about what a rejected file holds, e.g. an HTML error page served with status 200."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError:
        return ""
    if b"<html" in head.lower() or b"<!doctype" in head.lower():
        return "; it looks like an HTML page"
    return ""


def verify_file(path: Path, entry: FileEntry) -> FileVerification:
    """Accept a file whose archive hash matches, or (single-file gzip or the raw payload) whose payload hash does."""
    sha, size = sha256_file(path)
    if sha == entry.sha256 and size == entry.bytes:
        return FileVerification(sha, size, "archive", entry.payload_sha256)
    expected = f"expected sha256 {entry.sha256} ({entry.bytes} bytes)"
    if entry.payload_sha256 is None:
        reason = f"sha256 {sha} ({size} bytes), {expected}{describe_content(path)}"
        return FileVerification(sha, size, None, None, reason)
    with path.open("rb") as fh:
        is_gzip = fh.read(2) == GZIP_MAGIC
    payload, why = _payload_sha256(path) if is_gzip else (sha, None)
    if payload == entry.payload_sha256:
        return FileVerification(sha, size, "payload", payload)
    got = f"payload sha256 {payload}" if payload else why
    reason = (
        f"sha256 {sha} ({size} bytes), {got}; {expected} or payload sha256 {entry.payload_sha256}"
        f"{describe_content(path)}"
    )
    return FileVerification(sha, size, None, payload, reason)
