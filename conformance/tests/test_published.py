"""Dataset files: IDX and CIFAR parsing, and matching bytes against the published manifest."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from trainer_conformance.published import (
    DatasetFileError,
    PublishedFile,
    PublishedManifest,
    match_published,
    read_cifar_batch,
    read_idx,
)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_round_trip_plain_and_gzipped() -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(idx_bytes(images)), images)
    assert np.array_equal(read_idx(gzip.compress(idx_bytes(images))), images)


def test_idx_with_wrong_magic_or_truncated_payload_is_refused() -> None:
    data = idx_bytes(np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetFileError, match="magic"):
        read_idx(b"\x01" + data[1:])
    with pytest.raises(DatasetFileError, match="declares"):
        read_idx(data[:-1])


def test_match_published_accepts_archive_or_payload_hash_and_refuses_other_bytes() -> None:
    payload = idx_bytes(np.ones((3, 2), np.uint8))
    archive = gzip.compress(payload, mtime=0)
    regzipped = gzip.compress(payload, compresslevel=1, mtime=1)
    assert archive != regzipped
    pinned = PublishedFile(
        "f.gz", hashlib.sha256(archive).hexdigest(), len(archive), hashlib.sha256(payload).hexdigest()
    )
    assert match_published(archive, pinned) == "archive"
    assert match_published(regzipped, pinned) == "payload"
    tampered = gzip.compress(payload[:-1] + b"\x02")
    with pytest.raises(DatasetFileError, match="matches neither"):
        match_published(tampered, pinned)
    archive_only = PublishedFile("f.gz", pinned.sha256, len(archive), None)
    with pytest.raises(DatasetFileError):
        match_published(regzipped, archive_only)


def cifar_archive(batch: object) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = pickle.dumps(batch, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_cifar_python_batch_is_read_into_nchw() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    archive = cifar_archive({b"data": data, b"labels": [1, 2, 3], b"batch_label": b"testing batch 1 of 1"})
    images, labels = read_cifar_batch(archive, "cifar-10-batches-py/test_batch")
    assert images.shape == (3, 3, 32, 32)
    assert np.array_equal(images.reshape(3, -1), data)
    assert labels.tolist() == [1, 2, 3]


def test_cifar_reader_refuses_pickles_that_build_anything_but_arrays() -> None:
    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    archive = cifar_archive({b"data": Exploit(), b"labels": []})
    with pytest.raises(DatasetFileError, match="refusing"):
        read_cifar_batch(archive, "cifar-10-batches-py/test_batch")


def test_published_manifest_names_every_test_split() -> None:
    manifest = PublishedManifest.load()
    for name in ("mnist", "fashion-mnist", "cifar10"):
        split = manifest.test_split(name)
        assert split["count"] == 10_000
        for file in [split.get("images"), split.get("labels"), split.get("archive")]:
            if file:
                assert manifest.file(name, file) is not None


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_labels_match_the_manifest_by_payload() -> None:
    data = (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()
    manifest = PublishedManifest.load()
    published = manifest.file("fashion-mnist", "t10k-labels-idx1-ubyte.gz")
    assert published is not None
    assert match_published(data, published) == "payload"
    labels = read_idx(data)
    assert labels.shape == (10_000,)
    assert set(np.unique(labels).tolist()) == set(range(10))
