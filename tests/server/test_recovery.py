"""Restart recovery with real processes: the server killed (-9) or stopped (SIGTERM) while a run trains, then
started again on the same evidence directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from server_harness import CONTRACT, ServerFactory, check_json, read_sse, start_run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server-recovery")]


def _trainer_pid(log: str, run_id: str) -> int:
    match = re.search(rf"run {run_id}: trainer started, pid (\d+)", log)
    assert match, log[-2000:]
    return int(match.group(1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: the server that would reap it is gone.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_kill_9_then_restart_marks_the_run_interrupted_and_replays_its_log(server_factory: ServerFactory) -> None:
    first = server_factory(scripted=True)
    with first.client() as client:
        run = start_run(client, steps=100_000, log_every=10, checkpoint_every=100, eval_samples=200)
        run_id = run["run_id"]
        deadline = time.monotonic() + 60
        while client.get(f"/api/training/runs/{run_id}").json()["checkpoints"] == [] and time.monotonic() < deadline:
            time.sleep(0.2)
    pid = _trainer_pid(first.log(), run_id)
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the trainer outlived its server"
    folder = first.evidence_dir / "training" / run_id
    logged = folder.joinpath("metrics.jsonl").read_text().splitlines()
    assert not (folder / "manifest.json").exists() and json.loads(logged[-1])["type"] != "end"

    second = server_factory(evidence_dir=first.evidence_dir, scripted=True)
    with second.client() as client:
        recovered = check_json(client.get(f"/api/training/runs/{run_id}"), "run.schema.json")
        assert recovered["status"] == "interrupted" and recovered["error"]["code"] == "server_stopped"
        assert recovered["checkpoints"] and recovered["progress"]["step"] >= 100
        # The log is the old one plus exactly one `end`; replay works after the restart, from any cursor.
        lines = folder.joinpath("metrics.jsonl").read_text().splitlines()
        assert lines[:-1] == logged and json.loads(lines[-1])["data"]["status"] == "interrupted"
        _, stream = read_sse(client, {"run_id": run_id})
        assert [e.data for e in stream.events] == lines and stream.closed_by_server
        _, tail = read_sse(client, {"run_id": run_id}, {"Last-Event-ID": str(len(lines) - 2)})
        assert [e.id for e in tail.events] == [str(len(lines) - 1), str(len(lines))]
        manifest = check_json(client.get(f"/api/training/runs/{run_id}/evidence"), "evidence-manifest.schema.json")
        assert manifest["status"] == "interrupted"
        for entry in manifest["files"]:
            data = (folder / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        # The server still trains after recovery.
        fresh = start_run(client, steps=20, log_every=10, eval_samples=100)
        assert wait_for(client, fresh["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    assert "now interrupted: " + run_id in second.log()


def test_sigterm_ends_active_runs_interrupted_with_a_manifest(server_factory: ServerFactory) -> None:
    server = server_factory(scripted=True)
    with server.client() as client:
        run = start_run(client, steps=100_000, log_every=10, eval_samples=100)
        queued = start_run(client, steps=10)
        wait_for(client, run["run_id"], {"running"})
    assert server.stop(signal.SIGTERM) == 0
    for run_id in (run["run_id"], queued["run_id"]):
        folder = server.evidence_dir / "training" / run_id
        manifest = json.loads((folder / "manifest.json").read_text())
        assert not CONTRACT.errors("evidence-manifest.schema.json", manifest)
        assert manifest["status"] == "interrupted"
        end = json.loads(folder.joinpath("metrics.jsonl").read_text().splitlines()[-1])
        assert end["type"] == "end" and end["data"]["status"] == "interrupted"
    again = server_factory(evidence_dir=server.evidence_dir, scripted=True)
    with again.client() as client:
        statuses = {r["run_id"]: r["status"] for r in client.get("/api/training/runs").json()["runs"]}
        assert statuses == {run["run_id"]: "interrupted", queued["run_id"]: "interrupted"}
        key_run = start_run(client, steps=10, eval_samples=100, idempotency_key="survives-restart")
    again.stop()
    third = server_factory(evidence_dir=server.evidence_dir, scripted=True)
    with third.client() as client:
        same = client.post(
            "/api/training/runs", json={"steps": 10, "eval_samples": 100, "idempotency_key": "survives-restart"}
        )
        assert same.status_code == 200 and same.json()["run_id"] == key_run["run_id"]


def test_a_killed_trainer_fails_its_run_and_the_server_keeps_serving(server_factory: ServerFactory) -> None:
    server = server_factory(scripted=True)
    with server.client() as client:
        run = start_run(client, steps=100_000, log_every=10, eval_samples=100)
        wait_for(client, run["run_id"], {"running"})
        os.kill(_trainer_pid(server.log(), run["run_id"]), signal.SIGKILL)
        failed = wait_for(client, run["run_id"], {"failed", "succeeded", "cancelled"})
        assert failed["status"] == "failed" and failed["error"]["code"] == "trainer_crashed"
        assert "SIGKILL" in failed["error"]["message"]
        _, stream = read_sse(client, {"run_id": run["run_id"]})
        assert stream.events[-1].json()["data"]["status"] == "failed"
        manifest = check_json(
            client.get(f"/api/training/runs/{run['run_id']}/evidence"), "evidence-manifest.schema.json"
        )
        assert manifest["status"] == "failed"
        after = start_run(client, steps=20, log_every=10, eval_samples=100)
        assert wait_for(client, after["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
