"""What this server is: its version, the commit it runs, whether the tree was dirty, and library versions.

Read once at start. Versions come from package metadata, so tinygrad is never imported by the server.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

COMMIT_PATTERN = re.compile(r"^([0-9a-f]{7,40}|unknown)$")
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_version(name: str) -> str:
    """An installed distribution's version, or "unknown"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


SERVICE_VERSION = package_version("trainer-tinygrad-server")


def _git(args: list[str], cwd: Path) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True)
class ServiceProvenance:
    """The identity stamped on every response (X-Commit-SHA) and every run's provenance.json."""

    commit: str
    tree_dirty: bool | None
    diff_sha256: str | None
    host: str
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None, repo: Path = REPO_ROOT) -> ServiceProvenance:
        """`git rev-parse HEAD` (TRAINER_COMMIT overrides, in either case; "unknown" when neither), the dirty flag
        and the sha256 of `git diff HEAD`. Raises ValueError for a TRAINER_COMMIT that is not 7-40 hex digits."""
        env = os.environ if env is None else env
        head = _git(["rev-parse", "HEAD"], repo)
        commit = (env.get("TRAINER_COMMIT") or (head.decode().strip() if head else "unknown")).strip().lower()
        if not COMMIT_PATTERN.match(commit):
            raise ValueError(f"TRAINER_COMMIT={commit!r} is not a commit: give 7-40 hex digits")
        dirty: bool | None = None
        diff_sha: str | None = None
        if head is not None:
            diff = _git(["diff", "HEAD"], repo)
            status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
            if diff is not None and status is not None:
                dirty = bool(status.strip())
                diff_sha = hashlib.sha256(diff).hexdigest()
        versions = {
            "python": platform.python_version(),
            "tinygrad": package_version("tinygrad"),
            "numpy": package_version("numpy"),
            "service": SERVICE_VERSION,
        }
        return cls(commit=commit, tree_dirty=dirty, diff_sha256=diff_sha, host=socket.gethostname(), versions=versions)
