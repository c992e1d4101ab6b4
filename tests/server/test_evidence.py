"""The evidence writer on its own: validation before writing, whole files only, checkpoint adoption by hash,
manifests that match the bytes, and torn logs cut off on read."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from server_harness import CONTRACT

from reference_server.evidence import CheckpointRejected, EvidenceError, EvidenceStore
from reference_server.schemas import ContractViolation

RUN = "run-0123456789abcdef0123"
NOW = "2025-01-01T00:00:00.000000Z"


def _config() -> dict[str, Any]:
    config = {"dataset": "fashion-mnist", "model": "mlp", "steps": 10, "batch_size": 8, "learning_rate": 0.001}
    config |= {"optimizer": "adam", "seed": 0, "log_every": 5, "checkpoint_every": 5}
    versions = {"python": "3.11", "tinygrad": "0.14.0", "numpy": "2", "service": "0.1.0"}
    return {"run_id": RUN, "config": config, "versions": versions, "device": "CPU", "created_at": NOW}


def _provenance() -> dict[str, Any]:
    return {
        "run_id": RUN,
        "datasets": [],
        "commit": "unknown",
        "tree_dirty": None,
        "diff_sha256": None,
        "host": "h",
        "seed": 0,
        "mocks_disabled": "1",
        "created_at": NOW,
    }


def _event(i: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": i, "run_id": RUN, "type": type_, "time": NOW, "data": data}


QUEUED = _event(1, "status", {"status": "queued"})


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    store = EvidenceStore(tmp_path / "evidence", CONTRACT)
    store.prepare()
    store.create_run(RUN, _config(), _provenance(), QUEUED)
    return store


def _opener(path: Path) -> Any:
    return lambda: path.open("rb")


def _checkpoint(path: Path) -> tuple[str, int]:
    """A real safetensors file (the trainer's format: model.* tensors, float32)."""
    weights = {"model.l1.weight": np.arange(12, dtype=np.float32).reshape(3, 4)}
    save_file(weights, str(path), metadata={"format": "trainer-tinygrad/1", "step": "5"})
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def test_an_invalid_document_is_never_written(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence", CONTRACT)
    store.prepare()
    bad = _provenance() | {"mocks_disabled": "0"}
    with pytest.raises(ContractViolation, match="mocks_disabled"):
        store.create_run(RUN, _config(), bad, QUEUED)
    assert not (tmp_path / "evidence" / "training" / RUN).exists()


def test_an_invalid_event_is_not_appended(store: EvidenceStore) -> None:
    with pytest.raises(ContractViolation):
        store.append_event(RUN, _event(2, "metric", {"step": 1, "loss": 0.5, "accuracy": 1.5}))
    store.close()
    assert len(store.read_run(RUN).events) == 1


def test_paths_outside_the_run_are_refused(store: EvidenceStore) -> None:
    for bad in ("../x", "..", "a/b", ".hidden", ""):
        with pytest.raises(EvidenceError):
            store.run_dir(bad)
    for relative in ("../config.json", "checkpoints/../config.json", "checkpoints/.x.safetensors", "/etc/passwd"):
        with pytest.raises(FileNotFoundError):
            store.file(RUN, relative)


def test_a_checkpoint_is_adopted_only_when_its_hash_matches(store: EvidenceStore, tmp_path: Path) -> None:
    source = tmp_path / "step-000005.safetensors"
    sha, size = _checkpoint(source)
    with pytest.raises(CheckpointRejected, match="sha256"):
        store.adopt_checkpoint(RUN, source.name, "0" * 64, size, _opener(source))
    folder = store.run_dir(RUN) / "checkpoints"
    assert list(folder.iterdir()) == []  # no half-adopted or temporary file left
    adopted = store.adopt_checkpoint(RUN, source.name, sha, size, _opener(source))
    assert adopted.read_bytes() == source.read_bytes()
    with pytest.raises(CheckpointRejected):
        store.adopt_checkpoint(RUN, "../escape.safetensors", sha, size, _opener(source))


def test_the_manifest_lists_every_file_with_its_hash(store: EvidenceStore, tmp_path: Path) -> None:
    source = tmp_path / "step-000005.safetensors"
    sha, size = _checkpoint(source)
    store.adopt_checkpoint(RUN, source.name, sha, size, _opener(source))
    store.append_event(RUN, _event(2, "end", {"status": "cancelled", "error": None}))
    manifest = store.write_manifest(RUN, "cancelled", NOW)
    folder = store.run_dir(RUN)
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    paths = [f["path"] for f in manifest["files"]]
    assert paths == [
        "checkpoints/step-000005.safetensors",
        "config.json",
        "metrics.jsonl",
        "provenance.json",
        "report.html",
    ]
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"])


def test_a_torn_last_line_is_reported_then_cut_off_and_the_cut_recorded(store: EvidenceStore) -> None:
    store.close()
    log = store.run_dir(RUN) / "metrics.jsonl"
    whole = log.read_bytes()
    torn = b'{"id": 2, "run_id": "run-01'  # a write cut short by a power failure
    with log.open("ab") as handle:
        handle.write(torn)
    stored = store.read_run(RUN)
    assert stored.torn_tail == torn and [e["id"] for e in stored.events] == [1] and stored.log_bytes == len(whole)
    store.cut_torn_tail(RUN, stored.log_bytes, stored.torn_tail)
    assert log.read_bytes() == whole and not store.read_run(RUN).torn_tail
    (repair,) = [json.loads(line) for line in (store.run_dir(RUN) / "repairs.jsonl").read_text().splitlines()]
    assert not CONTRACT.errors("evidence-repair.schema.json", repair)
    assert repair["cut_sha256"] == hashlib.sha256(torn).hexdigest() and repair["kept_bytes"] == len(whole)


def test_no_temporary_files_survive_writes(store: EvidenceStore) -> None:
    store.write_config(RUN, _config() | {"device": "CPU"})
    assert [p.name for p in store.run_dir(RUN).iterdir() if p.name.startswith(".")] == [".reserve"]


def test_report_html_embeds_the_events_as_written_and_escapes_what_a_request_named(
    store: EvidenceStore, tmp_path: Path
) -> None:
    hostile = "</script><script>alert(1)</script><!--"
    config = _config() | {"request": {"name": hostile, "tags": ["x"]}}
    store.write_config(RUN, config)
    store.append_event(RUN, _event(2, "status", {"status": "running", "step": 0}))
    store.append_event(RUN, _event(3, "metric", {"step": 5, "loss": 1.5, "accuracy": 0.5}))
    store.append_event(RUN, _event(4, "end", {"status": "failed", "error": {"code": "x", "message": hostile}}))
    manifest = store.write_manifest(RUN, "failed", NOW)
    page = (store.run_dir(RUN) / "report.html").read_text()
    assert "report.html" in [f["path"] for f in manifest["files"]]
    assert hostile not in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert page.count("</script>") == 3  # the data block, uPlot, the charts: nothing a name could add
    data = page.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    events = [json.loads(line) for line in (store.run_dir(RUN) / "metrics.jsonl").read_text().splitlines()]
    assert json.loads(data) == {"run_id": RUN, "events": events}
    # Nothing to fetch: no element loads anything, and every link is a sibling file of the run folder.
    assert "src=" not in page
    links = re.findall(r'href="([^"]+)"', page)
    assert links and all(":" not in link and not link.startswith("/") for link in links), links


def test_a_report_that_cannot_be_rendered_costs_only_the_report(store: EvidenceStore, tmp_path: Path) -> None:
    (store.run_dir(RUN) / "provenance.json").write_text("{not json")  # the report reads it; the manifest does not
    store.append_event(RUN, _event(2, "end", {"status": "cancelled", "error": None}))
    manifest = store.write_manifest(RUN, "cancelled", NOW)
    assert "report.html" not in [f["path"] for f in manifest["files"]]
    assert not (store.run_dir(RUN) / "report.html").exists()
    assert json.loads((store.run_dir(RUN) / "manifest.json").read_text()) == manifest


def test_a_resumed_run_loses_its_old_report_with_its_manifest(store: EvidenceStore) -> None:
    store.append_event(RUN, _event(2, "end", {"status": "interrupted", "error": None}))
    store.write_manifest(RUN, "interrupted", NOW)
    assert (store.run_dir(RUN) / "report.html").is_file()
    store.reopen_run(RUN)
    assert not (store.run_dir(RUN) / "report.html").exists() and not (store.run_dir(RUN) / "manifest.json").exists()


def test_on_a_nearly_full_disk_the_report_gives_way_to_the_manifest(store: EvidenceStore) -> None:
    store.append_event(RUN, _event(2, "end", {"status": "failed", "error": {"code": "disk_full", "message": "full"}}))
    store.free_bytes = lambda: 300 << 10  # type: ignore[method-assign]  # a disk with about a reserve left
    manifest = store.write_manifest(RUN, "failed", NOW)
    assert "report.html" not in [f["path"] for f in manifest["files"]]
    assert (store.run_dir(RUN) / "manifest.json").is_file() and not (store.run_dir(RUN) / "report.html").exists()
