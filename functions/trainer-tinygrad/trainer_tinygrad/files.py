"""Files written whole or not at all, and hashed as streams: shared by the dataset cache, checkpoints and the
server's evidence writer. A reader never sees half a file (temp file in the same dir, fsync, rename).

Standard library only: the reference server imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

_CHUNK = 1 << 20


def fsync_dir(directory: Path) -> None:
    """Persist a rename: fsync the directory entry (a no-op where the platform cannot)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, dest: Path) -> None:
    """Move a complete, fsynced temp file into place in one step."""
    tmp.replace(dest)
    fsync_dir(dest.parent)


def temp_file(directory: Path, stem: str) -> Path:
    """A new empty temp file in `directory` (same filesystem as its destination, so the rename is atomic)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=directory)
    os.close(fd)
    # mkstemp makes 0600 files; datasets, checkpoints and evidence are read by other processes and users.
    path = Path(name)
    path.chmod(0o644)
    return path


def write_atomic(dest: Path, data: bytes) -> None:
    """Replace `dest` with `data` atomically."""
    tmp = temp_file(dest.parent, dest.name)
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_atomic_tmp(src: Path, directory: Path) -> Path:
    """Copy `src` into a fsynced temp file in `directory`; the caller verifies it, then publishes or deletes it."""
    tmp = temp_file(directory, src.name)
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def sha256_fd(fd: int, size: int | None = None, chunk_bytes: int = _CHUNK) -> tuple[str, int]:
    """SHA-256 (hex) and byte count of an open file from its start, up to `size` bytes (all of it when None),
    read in chunks (1 MiB unless told) without moving the file's offset."""
    digest = hashlib.sha256()
    offset = 0
    while size is None or offset < size:
        chunk = os.pread(fd, chunk_bytes if size is None else min(chunk_bytes, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest(), offset


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, streamed in 1 MiB chunks."""
    with path.open("rb") as fh:
        return sha256_fd(fh.fileno())
