"""A full evidence disk, for real: a small tmpfs the test mounts (as root), filled with a file the test allocates.

What must hold: an event line is whole in metrics.jsonl or absent; a run that hits the full disk ends `failed` with a
reason that says so, and its `end` and manifest still get written (its reserve); a POST that cannot be made durable
is a 507 and leaves nothing behind; the server starts on a full disk and says so in /readyz; earlier evidence still
verifies; and once space is back, runs succeed again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import CONTRACT, ServerFactory, check_problem, start_run, wait_for

from reference_server.evidence import EvidenceStore, EvidenceWriteError
from reference_server.evidence.audit import audit_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability-full-disk")]

DISK_BYTES = 16 << 20
#: /readyz wants this much free space (the server's threshold, set low enough for a 16 MiB disk).
WANTED = 4 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """Allocate a filler file so that about `leave` bytes stay free."""
    filler = disk / "filler"
    with filler.open("ab") as handle:
        grow = free_bytes(disk) - leave
        if grow > 0:
            os.posix_fallocate(handle.fileno(), handle.seek(0, os.SEEK_END), grow)
    return filler


def log_events(folder: Path) -> list[dict]:
    """Every line of metrics.jsonl, which must each be whole JSON ending in a newline, ids 1..N."""
    data = (folder / "metrics.jsonl").read_bytes()
    assert data.endswith(b"\n"), "metrics.jsonl ends in a partial line"
    events = [json.loads(line) for line in data.splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert not CONTRACT.errors("event.schema.json", event), event
    return events


def runs_on_disk(evidence: Path) -> set[str]:
    return {p.name for p in (evidence / "training").iterdir() if p.is_dir()}


def test_an_append_on_a_full_disk_leaves_no_partial_line(disk: Path) -> None:
    store = EvidenceStore(disk / "evidence", CONTRACT)
    store.prepare()
    run_id = "run-0123456789abcdef0123"
    queued = {"id": 1, "run_id": run_id, "type": "status", "time": "2026-01-01T00:00:00Z", "data": {"status": "queued"}}
    config = {
        "run_id": run_id,
        "config": {"dataset": "fashion-mnist", "model": "mlp", "steps": 9, "batch_size": 8, "learning_rate": 0.1,
                   "optimizer": "adam", "seed": 0, "log_every": 1, "checkpoint_every": 9},
        "versions": {"python": "3.11", "tinygrad": "0.14.0", "numpy": "2", "service": "0.1.0"},
        "device": None,
        "created_at": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    provenance = {"run_id": run_id, "datasets": [], "commit": "unknown", "tree_dirty": None, "diff_sha256": None,
                  "host": "h", "seed": 0, "mocks_disabled": "1", "created_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    store.create_run(run_id, config, provenance, queued)
    fill(disk, 0)
    log = store.run_dir(run_id) / "metrics.jsonl"
    failures = 0
    for i in range(2, 5000):
        metric = {"step": i, "loss": 1.0 / i, "accuracy": 0.5, "padding": "x" * 700}
        event = {"id": i, "run_id": run_id, "type": "metric", "time": "2026-01-01T00:00:00Z", "data": metric}
        try:
            store.append_event(run_id, event)
        except EvidenceWriteError as exc:
            assert exc.disk_full and exc.code == "disk_full" and "full" in str(exc)
            failures += 1
            break
    assert failures == 1, "the disk never filled"
    whole = log.read_bytes()
    assert whole.endswith(b"\n") and all(json.loads(line) for line in whole.splitlines())
    # A creation that cannot be made durable leaves no folder behind.
    other = {"run_id": "run-ffffffffffffffffffff"}
    with pytest.raises(EvidenceWriteError):
        store.create_run(other["run_id"], config | other, provenance | other, queued | other)
    assert not store.run_dir(other["run_id"]).exists()
    # The reserve is room for the last words: given back, the end and the manifest fit.
    store.release_reserve(run_id)
    end = {"id": len(whole.splitlines()) + 1, "run_id": run_id, "type": "end", "time": "2026-01-01T00:00:00Z",
           "data": {"status": "failed", "error": {"code": "disk_full", "message": "full"}, "step": 1}}  # fmt: skip
    store.append_event(run_id, end, sync=True)
    store.write_manifest(run_id, "failed", "2026-01-01T00:00:00Z")
    assert audit_run(store.run_dir(run_id)).ok


def test_a_disk_that_fills_mid_run_fails_the_run_cleanly_and_space_coming_back_heals_it(
    disk: Path, server_factory: ServerFactory
) -> None:
    evidence = disk / "evidence"
    server = server_factory(evidence_dir=evidence, env={"TRAINER_MIN_FREE_BYTES": str(WANTED)})
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        # Room for a run's creation (its reserve included) and a few hundred metric lines, not for a checkpoint.
        filler = fill(disk, 400 << 10)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["disk_space"]["ok"], ready.text
        run = start_run(client, steps=100_000, log_every=1, checkpoint_every=50_000, eval_samples=100)
        ended = wait_for(client, run["run_id"], {"succeeded", "failed", "cancelled", "interrupted"}, timeout=180)
        assert ended["status"] == "failed" and ended["error"]["code"] == "disk_full", ended
        assert "full" in ended["error"]["message"]
        folder = evidence / "training" / run["run_id"]
        events = log_events(folder)
        assert events[-1]["type"] == "end" and events[-1]["data"]["status"] == "failed"
        assert sum(e["type"] == "metric" for e in events) > 10, "the run should have logged before the disk filled"
        assert audit_run(folder).ok, [f for f in audit_run(folder).findings if f.state != "ok"]
        assert not [p for p in folder.rglob(".*") if ".tmp" in p.name], "a temporary file was left visible"
        # The server keeps serving, refuses new work with 507, and leaves nothing behind.
        assert client.get("/healthz").status_code == 200
        before = runs_on_disk(evidence)
        listed = {r["run_id"] for r in client.get("/api/training/runs").json()["runs"]}
        refused = client.post("/api/training/runs", json={"steps": 20, "idempotency_key": "after-the-disk-filled"})
        check_problem(refused, 507, "insufficient_storage")
        assert runs_on_disk(evidence) == before
        assert {r["run_id"] for r in client.get("/api/training/runs").json()["runs"]} == listed
        # Space back: ready again, and the same request (same key) now starts a run that succeeds.
        filler.unlink()
        assert client.get("/readyz").status_code == 200
        healed = start_run(client, steps=20, log_every=10, eval_samples=100, idempotency_key="after-the-disk-filled")
        assert wait_for(client, healed["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    assert server.stop() == 0
    again = server_factory(evidence_dir=evidence, env={"TRAINER_MIN_FREE_BYTES": str(WANTED)})
    with again.client() as client:
        recovered = client.get(f"/api/training/runs/{run['run_id']}").json()
        assert recovered["status"] == "failed" and recovered["error"]["code"] == "disk_full"
    for run_dir in (evidence / "training").iterdir():
        if run_dir.is_dir():
            assert audit_run(run_dir).ok, run_dir


def test_the_server_starts_on_a_full_disk_recovers_its_runs_and_says_why_it_is_not_ready(
    disk: Path, server_factory: ServerFactory
) -> None:
    evidence = disk / "evidence"
    first = server_factory(evidence_dir=evidence, env={"TRAINER_MIN_FREE_BYTES": str(WANTED)})
    with first.client() as client:
        run = start_run(client, steps=100_000, log_every=10, checkpoint_every=100_000, eval_samples=100)
        wait_for(client, run["run_id"], {"running"})
        time.sleep(1)
    first.stop(signal.SIGKILL)  # the run is left without its end
    filler = fill(disk, 0)
    assert free_bytes(disk) < 64 << 10
    second = server_factory(evidence_dir=evidence, env={"TRAINER_MIN_FREE_BYTES": str(WANTED)}, wait_ready=False)
    with second.client() as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["disk_space"]["ok"]
        recovered = client.get(f"/api/training/runs/{run['run_id']}").json()
        assert recovered["status"] == "interrupted" and recovered["error"]["code"] == "server_stopped"
        folder = evidence / "training" / run["run_id"]
        assert log_events(folder)[-1]["type"] == "end" and audit_run(folder).ok  # the reserve made room for both
        check_problem(client.post("/api/training/runs", json={"steps": 20}), 507, "insufficient_storage")
        filler.unlink()
        fresh = start_run(client, steps=20, log_every=10, eval_samples=100)
        assert wait_for(client, fresh["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    assert "Traceback" not in second.log()
