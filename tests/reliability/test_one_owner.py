"""One writer per evidence folder, and logs that cannot be mistaken for good ones.

A second server on a live server's folder must refuse to start, name the holder, and touch nothing; a lock left by a
killed server is taken over; a folder whose log breaks the rules (ids not 1..N, two ends in one attempt) is listed
with its problem, never written to, never replayed in a loop, and refused by verify-evidence.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import pytest
from server_harness import ServerFactory, check_problem, read_sse, start_run, wait_for

from reference_server.evidence.audit import audit_run
from tooling.launcher import LaunchError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability-one-owner")]


def digests(root: Path, skip: Path | None = None) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (skip is None or skip not in p.parents)
    }


def test_a_second_server_on_a_live_folder_refuses_to_start_and_touches_nothing(server_factory: ServerFactory) -> None:
    first = server_factory()
    with first.client() as client:
        done = start_run(client, steps=20, log_every=10, eval_samples=100)
        assert wait_for(client, done["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
        live = start_run(client, steps=100_000, log_every=10, checkpoint_every=100_000, eval_samples=100)
        wait_for(client, live["run_id"], {"running"})
        live_folder = first.evidence_dir / "training" / live["run_id"]
        before = digests(first.evidence_dir, skip=live_folder)
        with pytest.raises(LaunchError) as refused:
            server_factory(evidence_dir=first.evidence_dir, wait_ready=False)
        message = str(refused.value)
        assert "exited with 2" in message and "in use by another server" in message
        assert f"pid {first.proc.pid}" in message and "started" in message  # names the holder
        assert "Traceback" not in message
        assert digests(first.evidence_dir, skip=live_folder) == before
        # The live run was not taken for interrupted: no end in its log, and it still trains.
        lines = (live_folder / "metrics.jsonl").read_text().splitlines()
        assert all(json.loads(line)["type"] != "end" for line in lines)
        assert client.get(f"/api/training/runs/{live['run_id']}").json()["status"] == "running"
        assert client.post(f"/api/training/runs/{live['run_id']}/cancel").status_code in (200, 202)
        wait_for(client, live["run_id"], {"cancelled"})


def test_a_lock_left_by_a_killed_server_is_taken_over_and_logged(server_factory: ServerFactory) -> None:
    first = server_factory()
    pid = first.proc.pid
    first.stop(signal.SIGKILL)
    second = server_factory(evidence_dir=first.evidence_dir)
    assert f"took over the evidence folder lock left by pid {pid}" in second.log()
    with second.client() as client:
        assert client.get("/readyz").status_code == 200


def _write_log(folder: Path, events: list[dict]) -> None:
    folder.joinpath("metrics.jsonl").write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events))


def test_a_log_that_breaks_the_rules_is_listed_untouched_and_refused_by_the_audit(
    server_factory: ServerFactory,
) -> None:
    first = server_factory()
    with first.client() as client:
        run = start_run(client, steps=20, log_every=10, eval_samples=100)
        assert wait_for(client, run["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    assert first.stop() == 0
    folder = first.evidence_dir / "training" / run["run_id"]
    events = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    # What two writers on one folder produced: ids repeated, and a second `end` in the same attempt.
    damaged = [*events, *events[-3:]]
    _write_log(folder, damaged)
    before = digests(first.evidence_dir)
    audit = audit_run(folder)
    assert not audit.ok
    problems = " ".join(f.detail for f in audit.findings if f.state == "invalid")
    assert "ids must run 1, 2, 3" in problems and "after the attempt's `end`" in problems

    second = server_factory(evidence_dir=first.evidence_dir)
    with second.client() as client:
        started = time.monotonic()
        gone = check_problem(client.get(f"/api/training/runs/{run['run_id']}"), 409, "evidence_damaged")
        assert "ids must run" in gone["detail"]
        listing = client.get("/api/training/runs").json()
        assert [d["run_id"] for d in listing["damaged"]] == [run["run_id"]]
        assert run["run_id"] not in {r["run_id"] for r in listing["runs"]}
        check_problem(client.get("/api/events/training", params={"run_id": run["run_id"]}), 409, "evidence_damaged")
        # Its files stay downloadable for inspection, and /healthz answers at once (no replay loop anywhere).
        raw = client.get(f"/api/training/runs/{run['run_id']}/evidence/metrics.jsonl")
        assert raw.status_code == 200 and raw.content == (folder / "metrics.jsonl").read_bytes()
        assert client.get("/healthz").elapsed.total_seconds() < 1 and time.monotonic() - started < 10
    assert second.stop() == 0
    assert digests(first.evidence_dir) == before, "the server wrote into a folder it could not trust"


def test_replay_follows_event_ids_and_always_moves_forward(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as client:
        run = start_run(client, steps=30, log_every=10, checkpoint_every=10, eval_samples=100)
        assert wait_for(client, run["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
        _, whole = read_sse(client, {"run_id": run["run_id"]}, seconds=30)
        ids = [int(e.id or 0) for e in whole.events]
        assert ids == list(range(1, len(ids) + 1)) and whole.closed_by_server
        for cursor in (0, 1, len(ids) // 2, len(ids) - 1):
            _, tail = read_sse(client, {"run_id": run["run_id"]}, {"Last-Event-ID": str(cursor)}, seconds=30)
            assert [int(e.id or 0) for e in tail.events] == ids[cursor:]
            assert tail.closed_by_server
        # At the final `end` of a finished run there is nothing left: 204, so an EventSource stops reconnecting.
        ended, _ = read_sse(client, {"run_id": run["run_id"]}, {"Last-Event-ID": str(len(ids))}, seconds=30)
        assert ended.status_code == 204


def test_the_evidence_lock_is_not_inherited_by_trainers(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as client:
        run = start_run(client, steps=100_000, log_every=10, checkpoint_every=100_000, eval_samples=100)
        wait_for(client, run["run_id"], {"running"})
        lock = (server.evidence_dir / "training" / ".lock").resolve()
        holders = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fds = list((proc / "fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    if fd.readlink() == lock:
                        holders.append(int(proc.name))
                except OSError:
                    continue
        assert set(holders) == {server.proc.pid}, holders
        client.post(f"/api/training/runs/{run['run_id']}/cancel")
        wait_for(client, run["run_id"], {"cancelled"})
