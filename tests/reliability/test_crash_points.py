"""Crash consistency, tried many times: the server is killed (SIGKILL) at 20 points spread over runs' lives, and
after each restart every run folder verifies (`verify-evidence`) or is listed as damaged with the reason, never
silently wrong.

The points: while a trainer loads, while it trains (checkpoints every 20 steps, so kills land before, during and
after checkpoint adoption: the copy into checkpoints/, its rename, the event), and right after a cancel (so kills
land in the end of an attempt: the `end` line, trainer.log, the manifest). Between kills the interrupted run is
resumed from its last checkpoint, so one run's life holds many crashes.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from server_harness import ServerFactory, ServerProcess, start_run

from reference_server.evidence.audit import audit_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability-crash-points")]

POINTS = 20
ENDED = {"succeeded", "failed", "cancelled", "interrupted"}


def status_of(server: ServerProcess, run_id: str) -> dict:  # type: ignore[type-arg]
    with server.client() as client:
        return dict(client.get(f"/api/training/runs/{run_id}").json())


def wait_running(server: ServerProcess, run_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while status_of(server, run_id)["status"] != "running":
        assert time.monotonic() < deadline, "the run never started training"
        time.sleep(0.05)


def check_every_folder(server: ServerProcess) -> tuple[int, int]:
    """Each run folder verifies, or the server lists it as damaged: (verified, damaged)."""
    with server.client() as client:
        listing = client.get("/api/training/runs", params={"limit": "100"}).json()
    damaged = {d["run_id"]: d["problem"] for d in listing.get("damaged", [])}
    verified = 0
    for folder in sorted((server.evidence_dir / "training").iterdir()):
        if not folder.is_dir():
            continue
        assert not [p for p in folder.rglob(".*") if ".tmp" in p.name], f"{folder.name}: a temporary file is left"
        if folder.name in damaged:
            assert damaged[folder.name], "a damaged folder is listed with its reason"
            continue
        audit = audit_run(folder)
        assert audit.ok, (folder.name, [(f.path, f.state, f.detail) for f in audit.findings if f.state != "ok"])
        lines = (folder / "metrics.jsonl").read_bytes().splitlines()
        assert [json.loads(line)["id"] for line in lines] == list(range(1, len(lines) + 1))
        verified += 1
    return verified, len(damaged)


def test_twenty_kills_over_runs_lives_leave_every_folder_verifiable(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence"
    server = server_factory(evidence_dir=evidence)
    run_id: str | None = None
    kills = []
    for point in range(POINTS):
        with server.client() as client:
            run = status_of(server, run_id) if run_id else None
            if run and run["status"] == "interrupted" and run["checkpoints"]:
                assert client.post(f"/api/training/runs/{run_id}/resume").status_code == 202
            else:
                run_id = start_run(client, steps=600, log_every=5, checkpoint_every=20, eval_samples=100)["run_id"]
            assert run_id is not None
            kind = ("loading", "training", "training", "ending")[point % 4]
            if kind != "loading":
                wait_running(server, run_id)
                time.sleep(0.15 * (point % 7))
            if kind == "ending":
                client.post(f"/api/training/runs/{run_id}/cancel")
                time.sleep(0.01 * (point % 5))
        server.stop(signal.SIGKILL)
        kills.append(kind)
        server = server_factory(evidence_dir=evidence, wait_ready=False)  # recovery is done once it listens
        verified, damaged = check_every_folder(server)
        assert damaged == 0, "a SIGKILL alone never damages a folder"
        assert status_of(server, run_id)["status"] in ENDED
    assert verified >= 1 and kills.count("ending") == POINTS // 4
    assert server.stop() == 0
