"""Writers for small dataset files in the exact real layouts, and manifests that pin them (test helpers)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def idx_bytes(arr: np.ndarray) -> bytes:
    """Raw IDX: magic 0 0 0x08 ndim, big-endian uint32 sizes, then the uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def gz(data: bytes, mtime: int = 0) -> bytes:
    """gzip with a fixed header mtime (so a different mtime re-gzips to different archive bytes, same payload)."""
    return gzip.compress(data, mtime=mtime)


def sha(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def idx_arrays(train: int, test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random 28x28 images and labels 0..9 per split."""
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
        for split, n in (("train", train), ("test", test))
    }


def write_idx_dataset(directory: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bytes]:
    """Write the four gzip IDX files as MNIST names them; returns {file name: archive bytes}."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        x, y = arrays[split]
        for name, arr in ((images_name, x), (labels_name, y)):
            data = gz(idx_bytes(arr))
            (directory / name).write_bytes(data)
            out[name] = data
    return out


class Py2Pickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    """Pickles bytes as Python 2 `str` opcodes, as the real CIFAR-10 batches (cPickle, protocol 2) do."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    """A protocol-2 pickle naming numpy as numpy 1 did (`numpy.core.multiarray`), like the real files."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_batches(per_batch: int, test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """{member base name: (data (n, 3072) uint8, labels)} for data_batch_1..5 and test_batch."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: (
            rng.integers(0, 256, (test if name == "test_batch" else per_batch, 3072), dtype=np.uint8),
            [int(v) for v in rng.integers(0, 10, test if name == "test_batch" else per_batch)],
        )
        for name in names
    }


def cifar_archive(batches: dict[str, tuple[np.ndarray, list[int]]], *, drop: str | None = None) -> bytes:
    """The CIFAR-10 python tar.gz: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta,readme.html}."""
    members: dict[str, bytes] = {}
    for name, (data, labels) in batches.items():
        label = b"testing batch 1 of 1" if name == "test_batch" else f"training batch {name[-1]} of 5".encode()
        files = [f"img_{i}.png".encode() for i in range(len(labels))]
        members[name] = py2_pickle({b"batch_label": label, b"labels": labels, b"data": data, b"filenames": files})
    members["batches.meta"] = py2_pickle(
        {b"num_cases_per_batch": len(batches["data_batch_1"][1]), b"label_names": [c.encode() for c in CIFAR_CLASSES]}
    )
    members["readme.html"] = b"<meta HTTP-EQUIV='REFRESH' content='0; url=http://www.cs.toronto.edu/~kriz/cifar.html'>"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            if name == drop:
                continue
            info = tarfile.TarInfo(f"{CIFAR_DIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def file_entry(name: str, data: bytes, mirrors: list[str], *, payload: bytes | None = None) -> dict[str, Any]:
    """A manifest file entry pinning `data` (and, for a single gzip, its payload), served by `mirrors` bases."""
    return {
        "name": name,
        "bytes": len(data),
        "sha256": sha(data),
        "payload_name": name.removesuffix(".gz") if payload is not None else None,
        "payload_bytes": len(payload) if payload is not None else None,
        "payload_sha256": sha(payload) if payload is not None else None,
        "mirrors": [{"url": base + name, "source": "test"} for base in mirrors],
        "published": {"bytes": "test", "sha256": "test", "payload_sha256": "test" if payload else None},
    }


def idx_dataset(files: dict[str, bytes], train: int, test: int, mirrors: list[str] | None = None) -> dict[str, Any]:
    """A manifest dataset entry for gzip IDX files (payload hashes pinned too)."""
    return {
        "title": "test IDX",
        "format": "idx-gzip",
        "image_shape": [1, 28, 28],
        "classes": [str(i) for i in range(10)],
        "license": "test",
        "citation": "test",
        "homepage": "test",
        "splits": {
            split: {"count": n, "images": IDX_FILES[split][0], "labels": IDX_FILES[split][1]}
            for split, n in (("train", train), ("test", test))
        },
        "files": [file_entry(n, d, mirrors or [], payload=gzip.decompress(d)) for n, d in files.items()],
    }


def cifar_dataset(archive: bytes, per_batch: int, test: int, mirrors: list[str] | None = None) -> dict[str, Any]:
    """A manifest dataset entry for the CIFAR-10 python archive."""
    return {
        "title": "test CIFAR",
        "format": "cifar10-python",
        "image_shape": [3, 32, 32],
        "classes": CIFAR_CLASSES,
        "license": "test",
        "citation": "test",
        "homepage": "test",
        "splits": {
            "train": {
                "count": 5 * per_batch,
                "archive": CIFAR_ARCHIVE,
                "members": [f"{CIFAR_DIR}/data_batch_{i}" for i in range(1, 6)],
            },
            "test": {"count": test, "archive": CIFAR_ARCHIVE, "members": [f"{CIFAR_DIR}/test_batch"]},
        },
        "meta_member": f"{CIFAR_DIR}/batches.meta",
        "files": [file_entry(CIFAR_ARCHIVE, archive, mirrors or [])],
    }


def write_manifest(path: Path, datasets: dict[str, Any]) -> Path:
    """Write a manifest, checked against schemas/dataset-manifest.schema.json like the shipped one."""
    doc = {"manifest_version": 1, "sources": {"test": {"url": "tests", "published": "written by the test"}}}
    doc["datasets"] = datasets
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / "dataset-manifest.schema.json").read_text())).validate(doc)
    path.write_text(json.dumps(doc, indent=1))
    return path


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one schema of schemas/, resolving its references to the sibling files."""
    from referencing import Registry, Resource

    registry: Registry = Registry()
    for file in SCHEMAS.glob("*.schema.json"):
        doc = json.loads(file.read_text())
        registry = registry.with_resource(doc["$id"], Resource.from_contents(doc))
        registry = registry.with_resource(file.name, Resource.from_contents(doc))
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
