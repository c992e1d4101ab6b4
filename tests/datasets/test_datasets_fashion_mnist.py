"""The real Fashion-MNIST from Debian's dataset-fashion-mnist: imported by payload hash, loaded, guarded."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dataset_formats import schema_validator
from dataset_mirror import DEBIAN_FASHION
from trainer_tinygrad.datasets import ChecksumMismatch, DatasetCache, Manifest, load_dataset
from trainer_tinygrad.datasets import cache as cache_module
from trainer_tinygrad.datasets import cli as cli_module
from trainer_tinygrad.datasets.cli import main
from trainer_tinygrad.datasets.sources import KnownSource

pytestmark = pytest.mark.xdist_group("real-fashion-mnist")


def test_debian_copy_verifies_by_payload_hash(real_fashion_cache):
    status = real_fashion_cache.status("fashion-mnist")
    assert status.verified
    spec = real_fashion_cache.manifest.dataset("fashion-mnist")
    for f in status.files:
        entry = spec.file(f.name)
        assert f.matched == "payload" and f.sha256 != entry.sha256  # re-gzipped: archive hash differs
        assert f.payload_sha256 == entry.payload_sha256
        assert f.source == str(DEBIAN_FASHION / f.name)


def test_real_fashion_mnist_loads_60000_and_10000_images_of_28x28(real_fashion_cache):
    data = load_dataset("fashion-mnist", real_fashion_cache)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.uint8
    assert set(np.unique(data.y_train)) == set(range(10)) and set(np.unique(data.y_test)) == set(range(10))
    # Fashion-MNIST is balanced: 6000 and 1000 images per class.
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.classes[9] == "Ankle boot"
    schema_validator("dataset-provenance.schema.json").validate(data.provenance)
    assert {f["matched"] for f in data.provenance["files"]} == {"payload"}


def test_a_flipped_byte_in_the_real_cache_is_caught(real_fashion_cache, tmp_path, capsys):
    copy = tmp_path / "cache"
    shutil.copytree(real_fashion_cache.root, copy)
    cache = DatasetCache(copy, real_fashion_cache.manifest)
    target = copy / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert main(["--data-dir", str(copy), "verify", "fashion-mnist"]) == 1
    assert "fashion-mnist/t10k-labels-idx1-ubyte.gz: mismatch" in capsys.readouterr().out
    with pytest.raises(ChecksumMismatch):
        load_dataset("fashion-mnist", cache)


def test_import_known_imports_once_then_is_fast_and_changes_nothing(tmp_path, capsys, monkeypatch):
    if not DEBIAN_FASHION.is_dir():
        pytest.skip(f"{DEBIAN_FASHION} missing")
    data_dir = tmp_path / "cache"
    assert main(["--data-dir", str(data_dir), "import-known"]) == 0
    assert "fashion-mnist: imported from /usr/share/datasets/fashion-mnist" in capsys.readouterr().out
    before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*")}
    hashed: list[Path] = []
    monkeypatch.setattr(cache_module, "verify_file", lambda path, spec: hashed.append(path))
    started = time.perf_counter()
    assert main(["--data-dir", str(data_dir), "import-known"]) == 0
    elapsed = time.perf_counter() - started
    assert "fashion-mnist: already verified" in capsys.readouterr().out
    assert hashed == [], "a second import-known must trust the stamps, not re-hash"
    assert elapsed < 0.5, f"a second import-known took {elapsed:.3f} s"
    assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*")} == before
    # The module entry point in a fresh interpreter (what `make setup` runs through the console script).
    run = subprocess.run(
        [sys.executable, "-m", "trainer_tinygrad.datasets", "--data-dir", str(data_dir), "import-known"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and "already verified" in run.stdout, run.stderr


def test_import_known_with_no_source_says_so_and_exits_0(tmp_path, monkeypatch, capsys):
    nowhere = (KnownSource("fashion-mnist", tmp_path / "absent", "nothing"),)
    monkeypatch.setattr(cache_module, "KNOWN_SOURCES", nowhere)
    monkeypatch.setattr(cli_module, "KNOWN_SOURCES", nowhere)
    assert main(["--data-dir", str(tmp_path / "cache"), "import-known"]) == 0
    assert f"no well-known local dataset source found (looked in {tmp_path / 'absent'})" in capsys.readouterr().out


def test_the_shipped_manifest_pins_the_debian_payloads(real_fashion_cache):
    manifest = Manifest.load()
    source = Path(__file__).resolve().parents[2] / "functions/trainer-tinygrad/datasets/checksums.json"
    # The source tree's file, or (installed alone) the wheel's copy of exactly its bytes.
    assert manifest.path == source or manifest.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest.sha256 == real_fashion_cache.manifest.sha256
