"""Downloading one manifest file: mirrors in order, resume by HTTP Range, verify every attempt, then rename.

A mirror can answer 200 with an HTML error page, a truncated body, a 404, a reset connection or other bytes, so
nothing is trusted until the whole file hashes to the manifest. The download streams into
`<dataset>/.partial/<file>.part`; a connection dropped mid-body is resumed with `Range` (same mirror first), a
partial left by a killed process is resumed by the next fetch. When every mirror fails, the partial is deleted.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from ..files import fsync_dir, publish
from .errors import FetchFailed
from .manifest import FileEntry
from .verification import FileVerification, verify_file

#: Tries per mirror: the first, then resumes after a connection that dropped mid-body.
ATTEMPTS_PER_MIRROR = 3
TIMEOUT_S = 30.0
USER_AGENT = "trainer-tinygrad-datasets/1"
_CHUNK = 1 << 16


class ProgressBar:
    """A one-line progress bar on stderr (when it is a terminal, or when forced); no dependency."""

    def __init__(self, label: str, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, done: int) -> None:
        """Show `done` bytes of `total`, at most ten times a second."""
        self.done = done
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or done >= self.total):
            self._last = now
            pct = 100.0 * done / self.total if self.total else 0.0
            width = 30
            filled = min(width, int(width * pct / 100))
            rate = done / max(now - self._start, 1e-6) / 1e6
            bar = "#" * filled + "-" * (width - filled)
            mb = f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
            self.stream.write(f"\r{self.label} [{bar}] {pct:5.1f}% {mb} {rate:.1f} MB/s")
            self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _Interrupted(Exception):
    """A transfer that failed; `progressed` says whether bytes arrived (so a Range resume may help)."""

    def __init__(self, reason: str, progressed: bool) -> None:
        super().__init__(reason)
        self.progressed = progressed


def fetch_file(
    fspec: FileEntry, directory: Path, dataset: str, *, progress: bool | None = None
) -> tuple[Path, FileVerification, str]:
    """Download and verify one file into `directory`; returns (path, verification, the URL that served it)."""
    show = sys.stderr.isatty() if progress is None else progress
    partial_dir = directory / ".partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{fspec.name}.part"
    tried: list[str] = []
    for mirror in fspec.mirrors:
        for _ in range(ATTEMPTS_PER_MIRROR):
            resumed = part.exists() and part.stat().st_size > 0
            if not resumed or part.stat().st_size < fspec.bytes:
                try:
                    _download(mirror.url, part, fspec, ProgressBar(f"{dataset}/{fspec.name}", fspec.bytes, show))
                except _Interrupted as exc:
                    tried.append(f"{mirror.url}: {exc}")
                    if exc.progressed:
                        continue  # resume from this mirror with Range
                    break
            verification = verify_file(part, fspec)
            if verification.ok:
                dest = directory / fspec.name
                publish(part, dest)
                _remove_empty(partial_dir)
                return dest, verification, mirror.url
            tried.append(f"{mirror.url}: {verification.reason}")
            part.unlink(missing_ok=True)
            if not resumed:
                break
            # The bytes kept from an earlier attempt may be the bad ones: try this mirror once more from zero.
    part.unlink(missing_ok=True)
    _remove_empty(partial_dir)
    payload = f" or payload sha256 {fspec.payload_sha256}" if fspec.payload_sha256 else ""
    lines = "\n".join(f"  - {t}" for t in tried) or "  (the manifest lists no mirror)"
    raise FetchFailed(
        f"could not fetch {dataset}/{fspec.name}: expected sha256 {fspec.sha256} ({fspec.bytes} bytes){payload}; "
        f"tried {len(fspec.mirrors)} mirror(s), no partial file kept:\n{lines}"
    )


def _download(url: str, part: Path, fspec: FileEntry, bar: ProgressBar) -> None:
    """Stream `url` into `part`, continuing an existing partial with Range when the server honours it."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    # A generous cap: a re-gzipped mirror may differ in size a little; an endless stream must still end.
    limit = 2 * fspec.bytes + (1 << 20)
    received = 0
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
            if offset and resp.status == 206:
                content_range = resp.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {offset}-"):
                    raise _Interrupted(f"bad Content-Range {content_range!r} for a resume at {offset}", False)
                mode = "ab"
            else:
                offset, mode = 0, "wb"  # the server sent the whole file
            with part.open(mode) as fh:
                bar.update(offset)
                while chunk := resp.read(_CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    if offset + received > limit:
                        raise _Interrupted(f"body exceeds {limit} bytes", False)
                    bar.update(offset + received)
                fh.flush()
                os.fsync(fh.fileno())
            # http.client's read(n) returns b"" at a premature EOF instead of raising: check the length ourselves.
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and received < int(length):
                raise _Interrupted(f"connection closed after {received} of {length} bytes", received > 0)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            part.unlink(missing_ok=True)  # our partial is longer than the file: start again
        raise _Interrupted(f"HTTP {exc.code} {exc.reason}", exc.code == 416) from None
    except urllib.error.URLError as exc:
        raise _Interrupted(f"cannot connect ({exc.reason})", False) from None
    except (http.client.HTTPException, OSError) as exc:
        reason = f"transfer failed after {received} bytes ({type(exc).__name__}: {exc})"
        raise _Interrupted(reason, received > 0) from None
    finally:
        bar.close()
    fsync_dir(part.parent)


def _remove_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (another file's partial) or already gone
        directory.rmdir()
