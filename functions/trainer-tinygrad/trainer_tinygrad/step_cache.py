"""Captured steps kept on disk, so that a second run of the same shapes skips scheduling and compilation.

A captured TinyJit (its kernels compiled, their buffers planned) pickles, and tinygrad documents that it does. A run
looks its steps up here by a key naming everything the kernels depend on (`key`); a miss compiles as before and
saves the result. The files are pickles: they live in the user's own cache folder, beside tinygrad's kernel cache
(`CACHEDB`), and are never read from anywhere else. `TRAINER_STEP_CACHE` names another folder, or `off`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import platform
from pathlib import Path
from typing import Any

from tinygrad.helpers import CACHEDB

from trainer_tinygrad import files

log = logging.getLogger(__name__)

ENV = "TRAINER_STEP_CACHE"
#: Bumped when what a pickled step holds changes shape.
FORMAT = 1
#: Files kept: the least recently used beyond this are removed when a step is saved (each is 0.2-2 MB).
KEEP = 200


def folder() -> Path | None:
    """The cache folder: `$TRAINER_STEP_CACHE`, else `trainer-tinygrad-steps` beside tinygrad's CACHEDB; None if off."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return None if chosen in ("", "off", "0") else Path(chosen)
    return Path(CACHEDB).parent / "trainer-tinygrad-steps"


def key(**parts: Any) -> str:
    """A file name for everything a step's kernels depend on (shapes, optimizer constants, code, tinygrad, CPU)."""
    described = {**parts, "format": FORMAT, "machine": platform.machine(), "cpu": cpu_model()}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    return f"{parts.get('kind', 'step')}-{digest[:24]}.pkl"


def load(name: str) -> Any | None:
    """The captured TinyJit saved under `name`, or None (absent, off, or unreadable: the caller compiles anew)."""
    root = folder()
    if root is None or not (root / name).is_file():
        return None
    try:
        jit = pickle.loads((root / name).read_bytes())  # our own cache folder, written by save()
        os.utime(root / name)  # recently used: kept by prune()
        return jit
    except Exception as e:  # a file from an older tinygrad, or truncated by a full disk: compile instead
        log.warning("step cache: ignoring %s (%s: %s)", root / name, type(e).__name__, e)
        return None


def save(name: str, jit: Any) -> Path | None:
    """Pickle a captured TinyJit under `name` (atomically); returns the path, or None when the cache is off."""
    root = folder()
    if root is None:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        files.write_atomic(root / name, pickle.dumps(jit, protocol=pickle.HIGHEST_PROTOCOL))
        prune(root)
    except OSError as e:  # a read-only or full cache folder costs the next run its compile time, nothing more
        log.warning("step cache: cannot write %s (%s)", root / name, e)
        return None
    return root / name


def prune(root: Path, keep: int = KEEP) -> None:
    """Remove the least recently used steps beyond `keep` (every code change makes new keys; old ones are dead)."""
    steps = sorted(root.glob("*.pkl"), key=_mtime, reverse=True)
    for stale in steps[keep:]:
        stale.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run's prune
        return 0.0


@functools.cache  # /proc/cpuinfo, read once a process: every key names it
def cpu_model() -> str:
    """The CPU's model name (compiled kernels are built for it: clang -march=native)."""
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        return platform.processor()
