"""The dashboard's files (reference_server/static/): read once at start, each with its SHA-256 and content type, the
vendored ones checked against what static/vendor/*/VENDOR.json records, so the server only ever serves (and inlines
into report.html) bytes it has checked. No build step: the files are served as they are in the repository."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    "": "text/plain; charset=utf-8",  # LICENSE
}


class AssetError(Exception):
    """A dashboard file is missing, unreadable, or not the vendored bytes its record names."""


@dataclass(frozen=True)
class Asset:
    """One file of static/: its bytes, SHA-256 (served as the ETag) and content type."""

    path: str
    data: bytes
    sha256: str
    content_type: str

    def text(self) -> str:
        """The file as UTF-8 text."""
        return self.data.decode("utf-8")


class Assets:
    """Every file under a static folder by its relative path."""

    def __init__(self, root: Path = STATIC) -> None:
        self.root = root
        self.files: dict[str, Asset] = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            if any(part.startswith(".") for part in relative.split("/")):
                continue
            if path.suffix not in CONTENT_TYPES:
                raise AssetError(f"static/{relative}: no content type is known for {path.suffix!r} files")
            data = path.read_bytes()
            self.files[relative] = Asset(relative, data, hashlib.sha256(data).hexdigest(), CONTENT_TYPES[path.suffix])
        for record in [p for p in self.files if p.endswith("/VENDOR.json")]:
            self._check_vendored(record)

    def _check_vendored(self, record: str) -> None:
        folder = record.rsplit("/", 1)[0]
        document = json.loads(self.files[record].data)
        for name, entry in document["files"].items():
            asset = self.files.get(f"{folder}/{name}")
            if asset is None:
                raise AssetError(f"static/{folder}/{name} is missing; scripts/vendor_uplot.py --write puts it back")
            if asset.sha256 != entry["sha256"]:
                raise AssetError(
                    f"static/{folder}/{name} has sha256 {asset.sha256}, but {document['package']}@"
                    f"{document['version']} is {entry['sha256']}: run scripts/vendor_uplot.py to see what changed"
                )

    def get(self, path: str) -> Asset | None:
        """A file by its path under static/ (None for anything else, `..` and hidden files included)."""
        return self.files.get(path)

    def __getitem__(self, path: str) -> Asset:
        return self.files[path]


@cache
def bundled() -> Assets:
    """The package's own static files, read and checked once per process."""
    return Assets()
