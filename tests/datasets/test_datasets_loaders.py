"""Loaders on small files written in the exact real layouts: IDX (gzip and raw), CIFAR-10 python tar.gz."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from dataset_formats import (
    CIFAR_ARCHIVE,
    IDX_FILES,
    cifar_archive,
    cifar_batches,
    cifar_dataset,
    gz,
    idx_arrays,
    idx_bytes,
    idx_dataset,
    py2_pickle,
    schema_validator,
    write_idx_dataset,
    write_manifest,
)
from trainer_tinygrad.datasets import DatasetCache, DatasetFormatError, Manifest, load_dataset
from trainer_tinygrad.datasets.loaders import parse_idx


def imported(tmp_path: Path, name: str, dataset: dict, src: Path) -> DatasetCache:
    manifest = write_manifest(tmp_path / "manifest.json", {name: dataset})
    cache = DatasetCache(tmp_path / "cache", Manifest.load(manifest))
    assert cache.import_dir(name, src).verified
    return cache


def test_parse_idx_reads_gzip_and_raw_with_the_header_shape():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(arr)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    assert np.array_equal(parse_idx(raw, "raw"), arr)
    assert np.array_equal(parse_idx(gz(raw), "gz"), arr)


def flipped(data: bytes, at: int) -> bytes:
    """`data` with the byte at `at` inverted."""
    changed = bytearray(data)
    changed[at] ^= 0xFF
    return bytes(changed)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-1], "truncated or padded"),
        (idx_bytes(np.zeros((5, 28, 28), np.uint8)) + b"\0", "truncated or padded"),
        (b"\x00\x00\x0d\x03" + idx_bytes(np.zeros((5, 28, 28), np.uint8))[4:], "bad IDX magic"),
        (gz(idx_bytes(np.zeros((5, 28, 28), np.uint8)))[:-10], "not a complete gzip stream"),
        (flipped(gz(idx_bytes(np.arange(3920, dtype=np.uint8).reshape(5, 28, 28))), 12), "not a complete gzip stream"),
        (flipped(gz(idx_bytes(np.zeros((5, 28, 28), np.uint8))), -8), "not a complete gzip stream"),  # its CRC
        (b"\x00\x00", "too short"),
    ],
)
def test_parse_idx_refuses_malformed_files(data, message):
    with pytest.raises(DatasetFormatError, match=message):
        parse_idx(data, "x")


def test_idx_dataset_loads_as_nchw_uint8_with_provenance(tmp_path):
    arrays = idx_arrays(40, 10)
    files = write_idx_dataset(tmp_path / "src", arrays)
    cache = imported(tmp_path, "mnist", idx_dataset(files, 40, 10), tmp_path / "src")
    data = load_dataset("mnist", cache)
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.shape == (40,) and data.y_train.dtype == np.uint8
    assert np.array_equal(data.x_train[:, 0], arrays["train"][0])
    assert np.array_equal(data.y_test, arrays["test"][1])
    assert data.num_classes == 10 and not data.x_train.flags.writeable
    schema_validator("dataset-provenance.schema.json").validate(data.provenance)
    assert [f["name"] for f in data.provenance["files"]] == list(files)
    assert data.provenance["manifest_sha256"] == cache.manifest.sha256


def test_a_raw_idx_payload_is_imported_by_payload_hash_and_loads(tmp_path):
    arrays = idx_arrays(20, 5)
    files = write_idx_dataset(tmp_path / "gz", arrays)
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for name, data in files.items():
        (raw_dir / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    cache = imported(tmp_path, "mnist", idx_dataset(files, 20, 5), raw_dir)
    status = cache.status("mnist")
    assert {f.matched for f in status.files} == {"payload"}
    assert {f.stored_as for f in status.files} == {n.removesuffix(".gz") for n in files}
    data = load_dataset("mnist", cache)
    assert np.array_equal(data.x_test[:, 0], arrays["test"][0])
    assert {f["stored_as"] for f in data.provenance["files"]} == {n.removesuffix(".gz") for n in files}


@pytest.mark.parametrize(
    ("train", "labels_max", "message"),
    [(39, 9, "39 images shaped .* the manifest says 40"), (40, 10, "label 10 outside 0..9")],
)
def test_idx_content_that_disagrees_with_the_manifest_is_an_error(tmp_path, train, labels_max, message):
    # The hashes pin these very bytes, so only the content checks can catch them: a short file is not a smaller
    # dataset, and an out-of-range label is not a new class.
    arrays = idx_arrays(train, 10)
    arrays["train"][1][0] = labels_max
    files = write_idx_dataset(tmp_path / "src", arrays)
    cache = imported(tmp_path, "mnist", idx_dataset(files, 40, 10), tmp_path / "src")
    with pytest.raises(DatasetFormatError, match=message):
        load_dataset("mnist", cache)


def test_idx_images_of_the_wrong_size_are_refused(tmp_path):
    arrays = idx_arrays(4, 2)
    src = tmp_path / "src"
    files = write_idx_dataset(src, arrays)
    bad = gz(idx_bytes(np.zeros((4, 32, 32), np.uint8)))
    (src / IDX_FILES["train"][0]).write_bytes(bad)
    files[IDX_FILES["train"][0]] = bad
    cache = imported(tmp_path, "mnist", idx_dataset(files, 4, 2), src)
    with pytest.raises(DatasetFormatError, match=r"images are \[4, 32, 32\], expected \[N, 28, 28\]"):
        load_dataset("mnist", cache)


def cifar_cache(tmp_path: Path, archive: bytes, per_batch: int = 6, test: int = 4) -> DatasetCache:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / CIFAR_ARCHIVE).write_bytes(archive)
    return imported(tmp_path, "cifar10", cifar_dataset(archive, per_batch, test), src)


def test_cifar10_python_archive_loads_planes_as_channels(tmp_path):
    batches = cifar_batches(6, 4)
    data = load_dataset("cifar10", cifar_cache(tmp_path, cifar_archive(batches)))
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.uint8
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major 32x32.
    first = batches["data_batch_1"][0][0]
    assert np.array_equal(data.x_train[0, 0], first[:1024].reshape(32, 32))
    assert np.array_equal(data.x_train[0, 2], first[2048:].reshape(32, 32))
    assert np.array_equal(data.x_train[6], batches["data_batch_2"][0][0].reshape(3, 32, 32))
    want_train = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert np.array_equal(data.y_train, want_train)
    assert np.array_equal(data.y_test, batches["test_batch"][1])
    assert data.classes[0] == "airplane"
    schema_validator("dataset-provenance.schema.json").validate(data.provenance)


def test_cifar10_archive_missing_a_member_is_refused(tmp_path):
    archive = cifar_archive(cifar_batches(6, 4), drop="data_batch_5")
    with pytest.raises(DatasetFormatError, match="no member 'cifar-10-batches-py/data_batch_5'"):
        load_dataset("cifar10", cifar_cache(tmp_path, archive))


def test_cifar10_split_size_is_checked_against_the_manifest(tmp_path):
    archive = cifar_archive(cifar_batches(6, 4))
    with pytest.raises(DatasetFormatError, match=r"30 images .* the manifest says 35"):
        load_dataset("cifar10", cifar_cache(tmp_path, archive, per_batch=7))


class Reduces:
    """Unpickles as a call to os.system: what a crafted batch could do if unpickled freely."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_naming_anything_but_numpy_arrays_is_not_unpickled(tmp_path):
    batches = cifar_batches(6, 4)
    archive = cifar_archive(batches)
    evil = py2_pickle({b"data": Reduces(), b"labels": []})
    buf = io.BytesIO()

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for member in src.getmembers():
            body = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("data_batch_3"):
                body = evil
                member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    with pytest.raises(DatasetFormatError, match=r"refusing to unpickle posix\.system"):
        load_dataset("cifar10", cifar_cache(tmp_path, buf.getvalue()))


def test_py2_style_pickles_are_what_the_loader_reads():
    # The helper writes bytes as Python 2 str opcodes and names numpy.core, like the real batches.
    raw = py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]})
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"U\x04data" in raw
