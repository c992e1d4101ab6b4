"""The published dataset manifest and the test split a verifier rebuilds from the target's dataset files.

The manifest (`functions/trainer-tinygrad/datasets/checksums.json`) pins each file's archive SHA-256 and, for a
single-file gzip, the SHA-256 of its decompressed payload; a file is genuine when either matches. The suite reads
it from the copy shipped in the package, or from the source checkout. Test images are parsed here with numpy only:
IDX (MNIST, Fashion-MNIST) and CIFAR-10's python batches (through an unpickler that admits numpy arrays only).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_PACKAGE = Path(__file__).resolve().parent
_IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetFileError(ValueError):
    """A dataset file that does not match the manifest or cannot be parsed."""


def manifest_path() -> Path:
    """The packaged copy of the manifest when present, else the source checkout's."""
    shipped = _PACKAGE / "_data" / "checksums.json"
    if shipped.is_file():
        return shipped
    return _PACKAGE.parents[1] / "functions" / "trainer-tinygrad" / "datasets" / "checksums.json"


@dataclass(frozen=True)
class PublishedFile:
    """One pinned file: its name, archive hash and size, and payload hash when the publisher gives one."""

    name: str
    sha256: str
    bytes: int
    payload_sha256: str | None


class PublishedManifest:
    """The dataset manifest, read-only."""

    def __init__(self, document: dict[str, Any], path: Path | None = None) -> None:
        self.document = document
        self.path = path
        self.datasets: dict[str, Any] = document.get("datasets", {})

    @classmethod
    def load(cls, path: Path | None = None) -> PublishedManifest:
        """Read the manifest (default: `manifest_path()`)."""
        path = path or manifest_path()
        return cls(json.loads(path.read_bytes()), path)

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the manifest file's bytes (what a run's provenance records as `manifest_sha256`)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path else None

    def file(self, dataset: str, name: str) -> PublishedFile | None:
        """The pinned entry for `name` in `dataset`, or None when the manifest does not list it."""
        for entry in self.datasets.get(dataset, {}).get("files", []):
            if entry["name"] == name:
                return PublishedFile(entry["name"], entry["sha256"], entry["bytes"], entry.get("payload_sha256"))
        return None

    def test_split(self, dataset: str) -> dict[str, Any]:
        """The manifest's `splits.test` entry for `dataset` (file names, or archive and members)."""
        try:
            return dict(self.datasets[dataset]["splits"]["test"])
        except KeyError as exc:
            raise DatasetFileError(f"the published manifest has no test split for {dataset!r}") from exc

    def image_shape(self, dataset: str) -> tuple[int, int, int]:
        """(C, H, W) of the dataset's images."""
        c, h, w = self.datasets[dataset]["image_shape"]
        return int(c), int(h), int(w)


def match_published(data: bytes, published: PublishedFile) -> str:
    """`archive` or `payload`: which pinned hash `data` matches. Raises DatasetFileError when neither does."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == published.sha256:
        return "archive"
    if published.payload_sha256 and data[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DatasetFileError(f"{published.name}: not a readable gzip ({exc})") from exc
        if hashlib.sha256(payload).hexdigest() == published.payload_sha256:
            return "payload"
    raise DatasetFileError(
        f"{published.name}: sha256 {digest} matches neither the published archive hash {published.sha256}"
        + (f" nor the payload hash {published.payload_sha256}" if published.payload_sha256 else "")
    )


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (gzipped or not) into a numpy array of its declared shape."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetFileError("not an IDX file (bad magic number)")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetFileError(f"IDX payload is {len(data) - header} bytes, its header declares {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    # CIFAR's python batches are pickles of dicts holding numpy arrays; nothing else may be constructed from bytes
    # served by the target under test.
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1"): harmless.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def read_cifar_batch(archive: bytes, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) from one pickled batch inside cifar-10-python.tar.gz."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise DatasetFileError(f"{member} is not a file in the archive")
            batch = _NumpyOnlyUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except (tarfile.TarError, KeyError, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DatasetFileError(f"cannot read {member}: {exc}") from exc
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[b"labels"], dtype=np.uint8)
    return images, labels
