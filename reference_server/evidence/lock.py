"""One owner per evidence folder: an exclusive lock a server holds on `<evidence>/training/.lock` while it runs.

Two servers writing one folder would each take the other's live runs for `interrupted` and append to the same logs.
`flock` is released by the kernel when its holder dies, however it dies, so a lock left by a killed server is simply
free again: the next server takes it and logs whose it was. The file names the holder (pid, host, start time) so a
refused server can say who has the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_tinygrad.clock import utc_now

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class FolderLocked(Exception):
    """Another live server holds the evidence folder; the message names it."""


@dataclass
class FolderLock:
    """The lock of one evidence folder's `training/` directory (held from `acquire` until `release`)."""

    directory: Path
    _fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.directory / LOCK_FILE

    def acquire(self, commit: str) -> None:
        """Take the lock or raise FolderLocked naming the holder. Touches no other file: a refused server leaves the
        folder exactly as it found it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise FolderLocked(
                f"the evidence folder {self.directory} is in use by another server ({holder}); stop it, or give this "
                "server its own --evidence-dir"
            ) from None
        previous = _read_holder(fd)
        if previous:
            log.warning("took over the evidence folder lock left by %s (no longer running)", _describe(previous))
        label = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now(), "commit": commit}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(label) + "\n").encode(), 0)
        except OSError as exc:  # a full disk: the lock still holds, only its label is missing
            log.warning("holding the evidence folder lock, but could not label it: %s", exc)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the kernel does so too if the process dies)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        if text:
            holder = json.loads(text)
            if isinstance(holder, dict):
                return holder
    return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a server that did not say who it is"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started_at')}"
