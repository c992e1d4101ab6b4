"""The cache: verification stamps, states, import by archive or payload hash, flipped bytes caught."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from dataset_formats import gz, idx_arrays, idx_dataset, schema_validator, write_idx_dataset, write_manifest
from trainer_tinygrad.datasets import (
    ChecksumMismatch,
    DatasetCache,
    DatasetNotAvailable,
    FileState,
    Manifest,
    UnknownDataset,
    load_dataset,
)
from trainer_tinygrad.datasets import cache as cache_module
from trainer_tinygrad.datasets.cli import main

LABELS = "train-labels-idx1-ubyte.gz"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[DatasetCache, Path, dict[str, bytes]]:
    """A manifest pinning four small IDX files, the files in a source dir, and an empty cache."""
    files = write_idx_dataset(tmp_path / "src", idx_arrays(30, 8))
    manifest = write_manifest(tmp_path / "manifest.json", {"mnist": idx_dataset(files, 30, 8)})
    return DatasetCache(tmp_path / "cache", Manifest.load(manifest)), tmp_path / "src", files


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every file the cache re-hashes (the real verification still runs)."""
    calls: list[str] = []
    real = cache_module.verify_file

    def counting(path, spec):
        calls.append(path.name)
        return real(path, spec)

    monkeypatch.setattr(cache_module, "verify_file", counting)
    return calls


def flip_byte(path: Path, offset: int, keep_mtime: bool) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_empty_cache_reports_missing_and_writes_nothing(setup):
    cache, _, _ = setup
    status = cache.status("mnist")
    assert not status.present and not status.verified and status.source is None
    assert {f.state for f in status.files} == {FileState.MISSING}
    assert not cache.root.exists()
    with pytest.raises(DatasetNotAvailable, match="trainer-datasets fetch mnist"):
        cache.file_path("mnist", LABELS)
    with pytest.raises(DatasetNotAvailable):
        load_dataset("mnist", cache)
    with pytest.raises(UnknownDataset, match="the manifest lists"):
        cache.status("imagenet")


def test_status_trusts_a_valid_stamp_and_rehashes_when_size_or_mtime_change(setup, monkeypatch):
    cache, src, _ = setup
    cache.import_dir("mnist", src)
    calls = count_hashes(monkeypatch)
    assert cache.status("mnist").verified
    assert calls == []  # stamps only: a stat per file
    path = cache.file_path("mnist", LABELS)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.status("mnist").verified
    assert calls == [LABELS]  # only the touched file, and the new stamp is trusted after that
    assert cache.status("mnist").verified and calls == [LABELS]
    assert cache.verify("mnist", force=True)[0].verified
    assert len(calls) == 5


def test_status_without_rehash_reports_a_stale_file_unverified(setup):
    cache, src, _ = setup
    cache.import_dir("mnist", src)
    path = cache.file_path("mnist", LABELS)
    os.utime(path, ns=(0, 0))
    states = {f.name: f.state for f in cache.status("mnist", rehash=False).files}
    assert states[LABELS] is FileState.UNVERIFIED
    assert cache.status("mnist").verified


def test_a_changed_manifest_hash_invalidates_stamps(setup, tmp_path):
    cache, src, _ = setup
    cache.import_dir("mnist", src)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    doc["datasets"]["mnist"]["files"][1]["sha256"] = "0" * 64
    doc["datasets"]["mnist"]["files"][1]["payload_sha256"] = "1" * 64
    (tmp_path / "m2.json").write_text(json.dumps(doc))
    status = DatasetCache(cache.root, Manifest.load(tmp_path / "m2.json")).status("mnist")
    assert {f.name: f.state for f in status.files}[LABELS] is FileState.MISMATCH


def test_a_flipped_byte_is_caught_by_verify_and_refused_by_load(setup, capsys):
    cache, src, _ = setup
    cache.import_dir("mnist", src)
    flip_byte(cache.file_path("mnist", LABELS), 40, keep_mtime=False)
    args = ["--data-dir", str(cache.root), "--manifest", str(cache.manifest.path)]
    assert main([*args, "verify", "mnist"]) == 1
    out = capsys.readouterr().out
    assert f"mnist/{LABELS}: mismatch: sha256 " in out
    with pytest.raises(ChecksumMismatch, match=f"cached mnist/{LABELS} does not match the manifest"):
        load_dataset("mnist", cache)
    with pytest.raises(ChecksumMismatch):
        cache.file_path("mnist", LABELS)


def test_a_flipped_byte_with_its_mtime_restored_is_refused_by_load_and_found_by_force(setup, capsys):
    cache, src, _ = setup
    cache.import_dir("mnist", src)
    flip_byte(cache.file_path("mnist", LABELS), 40, keep_mtime=True)
    # The documented limit of stamps: same size and mtime look unchanged to a status check.
    assert cache.status("mnist").verified
    # The loader hashes the bytes it parses, so it refuses them anyway and drops the stale stamp.
    with pytest.raises(ChecksumMismatch, match="changed after it was verified"):
        load_dataset("mnist", cache)
    assert not cache.status("mnist").verified
    cache.import_dir("mnist", src)  # repair, then break it again: --force finds it without the loader
    flip_byte(cache.file_path("mnist", LABELS), 40, keep_mtime=True)
    args = ["--data-dir", str(cache.root), "--manifest", str(cache.manifest.path)]
    assert main([*args, "verify"]) == 0
    assert main([*args, "verify", "--force"]) == 1
    assert f"mnist/{LABELS}: mismatch" in capsys.readouterr().out


def test_import_accepts_a_regzipped_copy_by_payload_hash(setup, tmp_path):
    cache, _, files = setup
    regz = tmp_path / "regz"
    regz.mkdir()
    for name, data in files.items():
        (regz / name).write_bytes(gz(gzip.decompress(data), mtime=1234567))  # other header: other archive hash
    status = cache.import_dir("mnist", regz)
    assert status.verified and {f.matched for f in status.files} == {"payload"}
    assert status.source == str(regz.resolve())
    assert load_dataset("mnist", cache).x_train.shape == (30, 1, 28, 28)


def test_import_refuses_a_wrong_file_and_leaves_nothing(setup, tmp_path):
    cache, src, _ = setup
    flip_byte(src / LABELS, 30, keep_mtime=False)
    with pytest.raises(ChecksumMismatch, match=rf"{LABELS} is not an accepted copy of mnist/{LABELS}"):
        cache.import_dir("mnist", src)
    names = {p.name for p in (cache.root / "mnist").iterdir()}
    assert LABELS not in names and not any(n.endswith(".tmp") for n in names)


def test_import_from_a_directory_without_the_files_says_what_it_looked_for(setup, tmp_path):
    cache, _, _ = setup
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotAvailable, match="holds no file of mnist"):
        cache.import_dir("mnist", tmp_path / "empty")


def test_a_partial_import_is_reported_by_the_cli(setup, tmp_path, capsys):
    cache, src, _ = setup
    (src / LABELS).unlink()
    args = ["--data-dir", str(cache.root), "--manifest", str(cache.manifest.path)]
    assert main([*args, "import", "mnist", str(src)]) == 1
    assert f"not verified: {LABELS}" in capsys.readouterr().err
    assert cache.status("mnist").present is False


def test_verify_without_a_name_fails_on_an_empty_cache_and_on_an_incomplete_dataset(setup, capsys):
    cache, src, _ = setup
    args = ["--data-dir", str(cache.root), "--manifest", str(cache.manifest.path)]
    assert main([*args, "verify"]) == 1
    captured = capsys.readouterr()
    assert "mnist: not in the cache (not checked" in captured.out
    assert "no dataset in" in captured.err and "is verified" in captured.err
    cache.import_dir("mnist", src)
    assert main([*args, "verify"]) == 0
    cache.file_path("mnist", LABELS).unlink()
    assert main([*args, "verify"]) == 1
    captured = capsys.readouterr()
    assert f"mnist/{LABELS}: missing" in captured.out and "not verified: mnist" in captured.err


def test_verify_of_a_named_dataset_that_is_absent_fails(setup, capsys):
    cache, _, _ = setup
    args = ["--data-dir", str(cache.root), "--manifest", str(cache.manifest.path)]
    assert main([*args, "verify", "mnist"]) == 1
    captured = capsys.readouterr()
    assert f"mnist/{LABELS}: missing" in captured.out and "not verified: mnist" in captured.err


@pytest.mark.parametrize("command", ["list", "verify", "fetch", "import", "import-known"])
def test_every_command_answers_help_without_running(setup, capsys, command):
    cache, _, _ = setup
    with pytest.raises(SystemExit) as exited:
        main(["--data-dir", str(cache.root), command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: trainer-datasets {command}") and "cache:" not in out
    assert not cache.root.exists()


def test_the_help_names_the_data_dir_variable(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "TRAINER_DATA_DIR" in capsys.readouterr().out


def test_status_and_list_json_match_the_dataset_list_schema(setup, capsys):
    cache, src, _ = setup
    cache.import_dir("mnist", src)
    doc = {"datasets": [s.to_json() for s in cache.statuses()]}
    schema_validator("dataset-list.schema.json").validate(doc)
    assert doc["datasets"][0]["verified"] and doc["datasets"][0]["source"] == str(src.resolve())
    args = ["--data-dir", str(cache.root), "--manifest", str(cache.manifest.path)]
    assert main([*args, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    schema_validator("dataset-list.schema.json").validate(listed)
    assert listed["datasets"][0]["files"][0]["state"] == "verified"
    assert main([*args, "list"]) == 0
    assert "mnist          verified" in capsys.readouterr().out


def test_data_dir_defaults_to_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINER_DATA_DIR", str(tmp_path / "env-cache"))
    assert DatasetCache().root == tmp_path / "env-cache"
    monkeypatch.delenv("TRAINER_DATA_DIR")
    assert DatasetCache().root == Path.home() / ".cache" / "trainer-tinygrad" / "datasets"
