"""Tampering: a flipped byte in a cached dataset file, and edited evidence files caught by
`python -m reference_server verify-evidence`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from server_harness import ServerProcess, check_json, check_problem, start_run, wait_for
from trainer_tinygrad.datasets import DatasetCache

from reference_server.evidence.audit import main as verify_evidence

pytestmark = pytest.mark.xdist_group("reliability-tampering")

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
LABELS = "t10k-labels-idx1-ubyte.gz"


def flip_byte(path: Path, keep_mtime: bool) -> bytes:
    """Flip one byte in the middle of `path` in place; the original bytes."""
    stat = path.stat()
    original = path.read_bytes()
    middle = len(original) // 2
    path.write_bytes(original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1 :])
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return original


@pytest.fixture
def own_cache(tmp_path: Path) -> Path:
    """A cache of its own (the session's shared one must never be tampered with)."""
    if not FASHION_MNIST.is_dir():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    root = tmp_path / "datasets"
    assert DatasetCache(root).import_dir("fashion-mnist", FASHION_MNIST).verified
    return root


def cached_file(root: Path, name: str) -> Path:
    return Path(DatasetCache(root).file_path("fashion-mnist", name))


def test_a_flipped_byte_in_a_cached_dataset_is_named_by_readyz_and_refuses_runs(
    own_cache: Path, tmp_path: Path
) -> None:
    path = cached_file(own_cache, LABELS)
    server = ServerProcess.in_folder(tmp_path, own_cache).start()
    try:
        with server.client() as client:
            assert client.get("/readyz").status_code == 200
            original = flip_byte(path, keep_mtime=False)
            ready = client.get("/readyz")
            assert ready.status_code == 503
            detail = ready.json()["checks"]["datasets"]["detail"]
            assert "fashion-mnist" in detail and LABELS in detail, detail
            for body in ({"dataset": "fashion-mnist", "steps": 10}, {"steps": 10}):
                check_problem(client.post("/api/training/runs", json=body), 409, "dataset_unavailable")
            check_problem(client.get(f"/api/datasets/fashion-mnist/files/{LABELS}"), 409, "dataset_unavailable")
            listed = {d["name"]: d for d in client.get("/api/datasets").json()["datasets"]}
            assert listed["fashion-mnist"]["verified"] is False
            assert client.get("/api/training/runs").json()["runs"] == []
            # The original bytes back: verified again by hash (the stamp was not trusted, the size or mtime moved).
            path.write_bytes(original)
            assert client.get("/readyz").status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_a_flip_that_keeps_size_and_mtime_is_caught_when_the_trainer_loads_the_bytes(
    own_cache: Path, tmp_path: Path
) -> None:
    """The limit of the cheap check: /readyz trusts a stamp keyed by (size, mtime), so a same-size edit that puts
    the mtime back passes it; the trainer re-hashes every byte it parses and fails the run instead."""
    path = cached_file(own_cache, LABELS)
    flip_byte(path, keep_mtime=True)
    server = ServerProcess.in_folder(tmp_path, own_cache).start()
    try:
        with server.client() as client:
            assert client.get("/readyz").status_code == 200  # the documented limit
            run = start_run(client, steps=10, eval_samples=100)
            failed = wait_for(client, run["run_id"], {"failed", "succeeded"})
            assert failed["status"] == "failed" and failed["error"]["code"] == "checksum_mismatch", failed["error"]
            assert failed["checkpoints"] == []
    finally:
        assert server.stop() == 0
    # The forced re-hash of the CLI catches it too.
    verify = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from trainer_tinygrad.datasets.cli import main; sys.exit(main())",
            "--data-dir",
            str(own_cache),
            "verify",
            "--force",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode != 0, verify.stdout + verify.stderr


# ----- evidence -----
def audit(*paths: Path) -> tuple[int, str]:
    """`verify-evidence --json` in this process: (exit status, output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = verify_evidence(["--json", *map(str, paths)])
    return code, out.getvalue()


def audit_command(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, `python -m reference_server verify-evidence ...`."""
    return subprocess.run(
        [sys.executable, "-m", "reference_server", "verify-evidence", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def server(scripted_server: ServerProcess) -> ServerProcess:
    """The server is the subject here, not training: its trainers are scripted (tests/scripted_trainer.py)."""
    return scripted_server


@pytest.fixture(scope="module")
def finished_run(server: ServerProcess) -> Path:
    """The folder of one finished run (two checkpoints) of the module's server."""
    with server.client() as client:
        run = start_run(client, steps=20, log_every=10, checkpoint_every=10, eval_samples=100)
        assert wait_for(client, run["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
        check_json(client.get(f"/api/training/runs/{run['run_id']}/evidence"), "evidence-manifest.schema.json")
    return server.evidence_dir / "training" / run["run_id"]


def _flip(relative: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        flip_byte(folder / relative, keep_mtime=True)

    return edit


def _append_metric(folder: Path) -> None:
    with (folder / "metrics.jsonl").open("ab") as handle:
        handle.write(b'{"id":999,"type":"metric"}\n')


def _add_file(folder: Path) -> None:
    (folder / "checkpoints" / "extra.safetensors").write_bytes(b"x")


def _forge_manifest_entry(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _forge_checkpoint_and_manifest(folder: Path) -> None:
    """Change a checkpoint and rewrite its manifest entry to match: the checkpoint event still disagrees."""
    target = folder / "checkpoints" / "step-000010.safetensors"
    flip_byte(target, keep_mtime=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "checkpoints/step-000010.safetensors":
            entry["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


EDITS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "checkpoint-byte": (_flip("checkpoints/step-000020.safetensors"), "checkpoints/step-000020.safetensors", "changed"),
    "config-byte": (_flip("config.json"), "config.json", "changed"),
    "metrics-line-added": (_append_metric, "metrics.jsonl", "changed"),
    "trainer-log-deleted": (lambda f: (f / "trainer.log").unlink(), "trainer.log", "missing"),
    "file-added": (_add_file, "checkpoints/extra.safetensors", "unlisted"),
    "manifest-entry-forged": (_forge_manifest_entry, "", "changed"),
    "checkpoint-and-manifest-forged": (_forge_checkpoint_and_manifest, "metrics.jsonl line", "changed"),
    "manifest-deleted": (lambda f: (f / "manifest.json").unlink(), "manifest.json", "missing"),
    "manifest-garbled": (lambda f: (f / "manifest.json").write_text("{"), "manifest.json", "invalid"),
}


def test_an_untouched_run_folder_verifies(finished_run: Path) -> None:
    result = audit_command("--json", str(finished_run))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    findings = report["runs"][0]["findings"]
    assert report["ok"] and {f["state"] for f in findings} == {"ok"}
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert {f["path"] for f in findings} >= {e["path"] for e in manifest["files"]}
    # An evidence root checks every run under it.
    assert audit(finished_run.parents[1])[0] == 0


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_evidence_file_is_caught(edit: str, finished_run: Path, tmp_path: Path) -> None:
    change, path, state = EDITS[edit]
    folder = tmp_path / finished_run.name
    shutil.copytree(finished_run, folder)
    assert audit(folder)[0] == 0
    change(folder)
    code, output = audit(folder)
    assert code == 1, output
    findings = json.loads(output)["runs"][0]["findings"]
    bad = [f for f in findings if f["state"] != "ok"]
    assert any(f["state"] == state and f["path"].startswith(path) for f in bad), bad
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert verify_evidence([str(folder)]) == 1
    assert out.getvalue().startswith("MISMATCH")


def test_a_path_that_is_no_run_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = audit_command(str(tmp_path / "nope"))
    assert result.returncode == 2 and "not a run folder" in result.stderr
