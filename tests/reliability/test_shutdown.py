"""SIGTERM finishes its sentences: no new work is taken, every stream (per run and all runs) gets each run's final
events before it closes, even while trainers are still loading; and recovery sweeps away temporary files."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_harness import ServerFactory, ServerProcess, SseStream, check_problem, read_sse, start_run, wait_for

from reference_server.evidence.audit import audit_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability-shutdown")]

#: The scripted trainer takes as long to load as a real one does to load its data and compile (a few seconds).
LOADING = {"SCRIPTED_LOAD_S": "3"}


def subscribe(pool: ThreadPoolExecutor, server: ServerProcess, params: dict[str, str]) -> Future[SseStream]:
    """Read a stream to its end in a thread (the client never gives up first)."""
    connected = threading.Event()

    def read() -> SseStream:
        with server.client(timeout=60) as client:
            response, stream = read_sse(client, params, seconds=60, on_open=connected.set)
            assert response.status_code == 200
            return stream

    future = pool.submit(read)
    assert connected.wait(10), "the stream did not open"
    return future


def ends(stream: SseStream) -> dict[str, str]:
    """Each run's last `end` status in a stream."""
    found = {}
    for event in stream.events:
        data = event.json()
        if data["type"] == "end":
            found[data["run_id"]] = data["data"]["status"]
    return found


def test_sigterm_delivers_every_runs_end_to_every_stream(server_factory: ServerFactory) -> None:
    server = server_factory(scripted=True)
    with server.client() as client, ThreadPoolExecutor(4) as pool:
        training = start_run(client, steps=100_000, log_every=10, checkpoint_every=100_000, eval_samples=100)
        waiting = start_run(client, steps=100)  # queued behind it: one run at a time
        wait_for(client, training["run_id"], {"running"})
        feed = subscribe(pool, server, {})
        per_run = [subscribe(pool, server, {"run_id": r["run_id"]}) for r in (training, waiting)]
        assert server.stop(signal.SIGTERM) == 0
        expected = {training["run_id"]: "interrupted", waiting["run_id"]: "interrupted"}
        assert ends(feed.result(30)) == expected
        for future, run in zip(per_run, (training, waiting), strict=True):
            stream = future.result(30)
            assert ends(stream) == {run["run_id"]: "interrupted"} and stream.closed_by_server
            assert stream.events[-1].event == "end"


def test_sigterm_while_a_trainer_loads_still_ends_its_streams_and_refuses_new_work(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(scripted=True, env=LOADING)
    with server.client() as client, ThreadPoolExecutor(4) as pool:
        loading = start_run(client, steps=100_000, log_every=10, eval_samples=100)
        assert loading["status"] == "queued"
        feed = subscribe(pool, server, {})
        per_run = subscribe(pool, server, {"run_id": loading["run_id"]})
        client.get("/healthz")  # a kept-alive connection, opened before the signal
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            late = client.post("/api/training/runs", json={"steps": 10})
        except httpx.TransportError:
            late = None  # the server had already closed the connection: refused either way
        if late is not None:
            check_problem(late, 503, "shutting_down")
            assert late.headers["Retry-After"]
        assert server.proc.wait(60) == 0
        assert ends(feed.result(30)) == {loading["run_id"]: "interrupted"}
        assert ends(per_run.result(30)) == {loading["run_id"]: "interrupted"}
    folders = [p for p in (server.evidence_dir / "training").iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [loading["run_id"]], "a run was created after SIGTERM"


def test_recovery_removes_temporary_files_a_killed_writer_left(server_factory: ServerFactory) -> None:
    first = server_factory(scripted=True)
    with first.client() as client:
        run = start_run(client, steps=20, log_every=10, checkpoint_every=10, eval_samples=100)
        assert wait_for(client, run["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    first.stop(signal.SIGKILL)
    folder = first.evidence_dir / "training" / run["run_id"]
    leftovers = [
        folder / "checkpoints" / ".step-000020.safetensors.tmp-0badf00d",
        folder / ".provenance.json.k3j4h5.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a file")
    second = server_factory(evidence_dir=first.evidence_dir, scripted=True)
    assert not any(path.exists() for path in leftovers)
    assert "removed temporary files a killed writer left" in second.log()
    assert audit_run(folder).ok
    manifest = json.loads((folder / "manifest.json").read_text())
    assert not any(".tmp" in f["path"] for f in manifest["files"])


def test_cancelling_a_queued_run_ends_it_at_once_even_while_its_trainer_loads(server_factory: ServerFactory) -> None:
    server = server_factory(scripted=True, env=LOADING)
    with server.client() as client:
        run = start_run(client, steps=100_000, log_every=10, eval_samples=100)
        assert run["status"] == "queued"
        cancelled = client.post(f"/api/training/runs/{run['run_id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        time.sleep(5)  # long enough for the trainer to have finished loading, had it not been stopped
        assert client.get(f"/api/training/runs/{run['run_id']}").json()["status"] == "cancelled"
        _, stream = read_sse(client, {"run_id": run["run_id"]}, seconds=10)
        assert [e.json()["data"]["status"] for e in stream.events] == ["queued", "cancelled"]
        assert _trainer_gone(server, run["run_id"])
        after = start_run(client, steps=20, log_every=10, eval_samples=100)
        assert wait_for(client, after["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    folder = Path(server.evidence_dir) / "training" / run["run_id"]
    assert audit_run(folder).ok


def _trainer_gone(server: ServerProcess, run_id: str) -> bool:
    """True when the run's trainer never started or has exited (and was reaped by its supervisor)."""
    match = re.search(rf"run {run_id}: trainer started, pid (\d+)", server.log())
    if not match:
        return True
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    return False
