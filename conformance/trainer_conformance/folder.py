"""The verification folder: every file the suite writes goes through here, whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SUMS_NAME = "SHA256SUMS"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder: fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sums(text: str) -> dict[str, str]:
    """Parse `sha256sum` output (`<hex>  <path>` or `<hex> *<path>`) into {path: hex}."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        sums[name.lstrip(" *")] = digest
    return sums


class VerifyFolder:
    """One verification folder (`<out>/<commit>/`), built under a hidden sibling and renamed into place at the end.

    A reader (the gate, a person) therefore never sees a folder that mixes two runs of the suite.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))

    def path(self, relative: str) -> Path:
        """Absolute path of a file inside the folder (while it is being built)."""
        return self.root / relative

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write a file atomically; returns its path relative to the folder (what evidence lists cite)."""
        write_atomic(self.root / relative, data)
        return relative

    def write_text(self, relative: str, text: str) -> str:
        """Write UTF-8 text atomically."""
        return self.write_bytes(relative, text.encode())

    def write_json(self, relative: str, value: Any) -> str:
        """Write indented JSON atomically."""
        return self.write_text(relative, json.dumps(value, indent=2, sort_keys=False, allow_nan=False) + "\n")

    def write_sums(self) -> str:
        """Write SHA256SUMS over every other file in the folder, sorted by path, in `sha256sum -c` format."""
        lines = []
        for file in sorted(p for p in self.root.rglob("*") if p.is_file()):
            relative = file.relative_to(self.root).as_posix()
            if relative == SUMS_NAME or file.name.endswith(".tmp"):
                continue
            lines.append(f"{sha256_file(file)}  {relative}\n")
        return self.write_text(SUMS_NAME, "".join(lines))

    def publish(self) -> Path:
        """Replace `<out>/<commit>/` with the finished folder and return its final path."""
        if self.final.exists():
            shutil.rmtree(self.final)
        self.root.replace(self.final)
        self.root = self.final
        return self.final

    def discard(self) -> None:
        """Remove a folder that will not be published (the suite could not run)."""
        shutil.rmtree(self.root, ignore_errors=True)
