"""Crash recovery and resume with real processes: `kill -9` of the server mid-run, a torn last line repaired at
restart, every checkpoint opening, then POST .../resume continuing the same run from its last checkpoint with step
numbering carrying on to a normal finish; and `kill -9` of a trainer, then resume of the failed run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import safetensors
import safetensors.numpy
from server_harness import CONTRACT, ServerFactory, ServerProcess, check_json, check_problem, read_sse, start_run
from server_harness import wait_for as wait_status

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability-resume")]

STEPS, LOG_EVERY, CHECKPOINT_EVERY = 160, 10, 40
SPEC = {"steps": STEPS, "log_every": LOG_EVERY, "checkpoint_every": CHECKPOINT_EVERY, "eval_samples": 100}


def trainer_pid(server: ServerProcess, run_id: str) -> int:
    matches = re.findall(rf"run {run_id}: trainer started, pid (\d+)", server.log())
    assert matches, server.log()[-2000:]
    return int(matches[-1])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def wait_checkpoints(client: httpx.Client, run_id: str, count: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/training/runs/{run_id}").json()
        if len(run["checkpoints"]) >= count or run["status"] not in ("queued", "running"):
            return dict(run)
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id} has fewer than {count} checkpoints after {timeout} s")


def log_lines(folder: Path) -> list[bytes]:
    data = (folder / "metrics.jsonl").read_bytes()
    assert data.endswith(b"\n"), "metrics.jsonl ends in a torn line"
    return data.splitlines()


def check_checkpoints_open(folder: Path, run: dict[str, Any]) -> None:
    """Every recorded checkpoint is on disk, hashes as recorded, and opens as safetensors with its step."""
    for record in run["checkpoints"]:
        path = folder / "checkpoints" / record["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
        tensors = safetensors.numpy.load_file(str(path))
        assert any(k.startswith("model.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            assert int(handle.metadata()["step"]) == record["step"]


def verify_evidence(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reference_server", "verify-evidence", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_resumed_log(folder: Path, resumed_at: int) -> list[dict[str, Any]]:
    """The whole log: ids 1..N, valid events, one earlier `end` followed by the resume, the final `end` last, and
    metric steps that carry on from the checkpoint."""
    events = [json.loads(line) for line in log_lines(folder)]
    for event in events:
        assert not CONTRACT.errors("event.schema.json", event), event
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    ends = [i for i, e in enumerate(events) if e["type"] == "end"]
    assert len(ends) == 2 and ends[-1] == len(events) - 1
    reopening = events[ends[0] + 1]
    assert reopening["type"] == "status" and reopening["data"]["status"] == "queued"
    assert reopening["data"]["resumed_from"] == f"step-{resumed_at:06d}.safetensors"
    assert reopening["data"]["step"] == resumed_at
    after = events[ends[0] + 1 :]
    running = [e for e in after if e["type"] == "status" and e["data"]["status"] == "running"]
    assert len(running) == 1 and running[0]["data"]["step"] == resumed_at
    steps = [e["data"]["step"] for e in after if e["type"] == "metric"]
    assert steps == list(range(resumed_at + LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert events[-1]["data"] == {"status": "succeeded", "error": None, "step": STEPS}
    return events


def test_kill_9_mid_run_then_restart_repair_and_resume_to_a_normal_finish(server_factory: ServerFactory) -> None:
    first = server_factory()
    with first.client() as client:
        run_id = start_run(client, **SPEC)["run_id"]
        live = wait_checkpoints(client, run_id, 2)
        assert live["status"] == "running", live
        check_problem(client.post(f"/api/training/runs/{run_id}/resume"), 409, "run_not_resumable")
    pid = trainer_pid(first, run_id)
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), "the trainer outlived its server"

    folder = first.evidence_dir / "training" / run_id
    # kill -9 leaves whole lines only: every line is a complete, valid event.
    before = log_lines(folder)
    for line in before:
        assert not CONTRACT.errors("event.schema.json", json.loads(line))
    # A power cut could still tear the last write: simulate one, and recovery must cut it off.
    with (folder / "metrics.jsonl").open("ab") as handle:
        handle.write(b'{"id": ' + str(len(before) + 1).encode() + b', "run_id": "' + run_id.encode() + b'", "ty')

    second = server_factory(evidence_dir=first.evidence_dir)
    assert f"run {run_id}: metrics.jsonl ended in a torn line" in second.log()
    assert json.loads((folder / "repairs.jsonl").read_text())["action"] == "cut_torn_tail"
    after_restart = log_lines(folder)
    assert after_restart[:-1] == before and json.loads(after_restart[-1])["data"]["status"] == "interrupted"
    with second.client() as client:
        run = check_json(client.get(f"/api/training/runs/{run_id}"), "run.schema.json")
        assert run["status"] == "interrupted" and run["error"]["code"] == "server_stopped"
        check_checkpoints_open(folder, run)
        last = run["checkpoints"][-1]
        assert verify_evidence(folder).returncode == 0
        # It can still be resumed: a reconnect at its `end` gets the empty stream (not 204), so a browser keeps
        # reconnecting and follows the resume.
        response, empty = read_sse(client, {"run_id": run_id}, {"Last-Event-ID": str(len(after_restart))})
        assert response.status_code == 200 and empty.closed_by_server and not empty.events

        # A changed checkpoint is not resumed from; put back, it is.
        path = folder / "checkpoints" / last["name"]
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        refused = check_problem(client.post(f"/api/training/runs/{run_id}/resume"), 409, "run_not_resumable")
        assert "sha256" in refused["detail"]
        path.write_bytes(original)

        # Two resumes at once: exactly one wins.
        answers: list[int] = []

        def resume() -> None:
            with second.client() as c:
                answers.append(c.post(f"/api/training/runs/{run_id}/resume").status_code)

        threads = [threading.Thread(target=resume) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [202, 409], answers
        assert not (folder / "manifest.json").exists()

        # A live subscriber from the interruption's `end` sees the resume through to the final `end`.
        _, stream = read_sse(client, {"run_id": run_id}, {"Last-Event-ID": str(len(after_restart))})
        assert stream.closed_by_server and stream.events[-1].json()["data"]["status"] == "succeeded"
        done = wait_status(client, run_id, {"succeeded", "failed"})
        assert done["status"] == "succeeded" and done["progress"]["step"] == STEPS and done["error"] is None
        # The run's view keeps one lineage: each step once, although the log holds the steps logged after the
        # checkpoint by the attempt that was killed.
        metrics = client.get(f"/api/training/runs/{run_id}/metrics", params={"limit": 1000}).json()["metrics"]
        assert [m["step"] for m in metrics] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
        assert [c["step"] for c in done["checkpoints"]] == list(range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY))
        events = check_resumed_log(folder, last["step"])
        assert [int(e.id or 0) for e in stream.events] == [e["id"] for e in events[len(after_restart) :]]
        # A replay from the start delivers both ends and closes only after the final one.
        _, replay = read_sse(client, {"run_id": run_id})
        assert [e.json() for e in replay.events] == events and replay.closed_by_server
        check_checkpoints_open(folder, done)
        manifest = check_json(client.get(f"/api/training/runs/{run_id}/evidence"), "evidence-manifest.schema.json")
        assert manifest["status"] == "succeeded"
        check_problem(client.post(f"/api/training/runs/{run_id}/resume"), 409, "run_not_resumable")
    audit = verify_evidence(folder)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_trainer_killed_mid_run_fails_its_run_which_then_resumes(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as client:
        early = start_run(client, **SPEC)["run_id"]
        wait_status(client, early, {"running"})
        os.kill(trainer_pid(server, early), signal.SIGKILL)
        failed = wait_status(client, early, {"failed", "succeeded"})
        assert failed["status"] == "failed" and failed["error"]["code"] == "trainer_crashed"
        if not failed["checkpoints"]:  # killed before its first checkpoint: nothing to resume from
            check_problem(client.post(f"/api/training/runs/{early}/resume"), 409, "run_not_resumable")

        run_id = start_run(client, **SPEC)["run_id"]
        wait_checkpoints(client, run_id, 1)
        os.kill(trainer_pid(server, run_id), signal.SIGKILL)
        failed = wait_status(client, run_id, {"failed", "succeeded"})
        assert failed["status"] == "failed" and "SIGKILL" in failed["error"]["message"]
        last = failed["checkpoints"][-1]["step"]
        resumed = client.post(f"/api/training/runs/{run_id}/resume")
        assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
        assert resumed.json()["progress"]["step"] == last and resumed.json()["error"] is None
        done = wait_status(client, run_id, {"succeeded", "failed"})
        assert done["status"] == "succeeded" and done["progress"]["step"] == STEPS
    folder = server.evidence_dir / "training" / run_id
    check_resumed_log(folder, last)
    trainer_log = (folder / "trainer.log").read_text()
    assert trainer_log.count("$ ") == 2 and "--resume" in trainer_log  # both attempts' command lines, in order
    assert verify_evidence(folder).returncode == 0
