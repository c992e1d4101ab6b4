"""The Ray executor on a real local cluster: runs placed on different nodes, live streams through Ray, a lost node
with automatic resume on the node that remains, a server restart that no longer stops training, and the conformance
suite against a server on the cluster.

Placement and streaming, node loss and the restart are about the executor, not learning: their trainers are the
scripted one (tests/scripted_trainer.py, the training function's protocol without tinygrad), started on the nodes
through `TRAINER_COMMAND` as the real one would be, and paced so that runs are still training when the test
subscribes, kills a node or restarts the server. That saves a real trainer's load and compile (~7-8 CPU-s) for each
of their six trainers, and tinygrad's import for each of their four servers' device probes on a node. Their own
assertions check that the scripted trainer is what ran (its device is `SCRIPTED`). The conformance suite checks that
loss falls and re-evaluates checkpoints, so its runs train for real.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_harness import (
    CONTRACT,
    SCRIPTED,
    ServerFactory,
    ServerProcess,
    check_problem,
    read_sse,
    start_run,
    wait_for,
)

from reference_server.evidence.audit import audit_run
from tooling.ray_local import LocalRayCluster

pytestmark = [pytest.mark.slow]

ENDED = {"succeeded", "failed", "cancelled", "interrupted"}


def scripted(steps_per_s: int) -> dict[str, str]:
    """The server's environment for scripted trainers at `steps_per_s` on the Ray nodes.

    The Ray executor hands a node only DEV, CACHEDB, BEAM and NUM_CPU_THREADS of the server's environment (and the
    nodes' own environment is the one the session's cluster started with), so the pace travels in the command:
    `env SCRIPTED_STEPS_PER_S=N python tests/scripted_trainer.py`."""
    return {"TRAINER_COMMAND": f"env SCRIPTED_STEPS_PER_S={steps_per_s} {SCRIPTED['TRAINER_COMMAND']}"}


def ray_server(server_factory: ServerFactory, cluster: LocalRayCluster, *args: str, **kwargs: object) -> ServerProcess:
    return server_factory(
        extra_args=["--executor", "ray", "--ray-address", cluster.address, "--max-concurrent-runs", "2", *args],
        **kwargs,
    )


def events_of(server: ServerProcess, run_id: str) -> list[dict]:
    lines = (server.evidence_dir / "training" / run_id / "metrics.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1)), "ids must run 1..N"
    return events


def wait_for_step(client, run_id: str, step: int, timeout: float = 120) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/training/runs/{run_id}").json()
        if run["progress"]["step"] >= step or run["status"] in ENDED:
            return dict(run)
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} did not reach step {step}")


def test_two_runs_train_at_once_on_different_nodes_and_stream_live(
    ray_cluster: LocalRayCluster, server_factory: ServerFactory
) -> None:
    """Scripted trainers at 50 steps/s: a 300-step run trains for 6 s, so both are still running when the test has
    seen both start (well under a second apart here) and subscribes (10 more events need 50 steps, 1 s)."""
    server = ray_server(server_factory, ray_cluster, env=scripted(50))
    with server.client() as client:
        ready = client.get("/readyz").json()
        # The device probe ran the trainer command on a node, as the runs do.
        detail = ready["checks"]["device"]["detail"]
        assert "SCRIPTED on" in detail and "Ray node" in detail, detail
        runs = [start_run(client, steps=300, log_every=5, checkpoint_every=100, eval_samples=200) for _ in range(2)]
        live = [wait_for(client, r["run_id"], {"running"}, timeout=120) for r in runs]
        assert [r["device"] for r in live] == ["SCRIPTED", "SCRIPTED"], "the trainer command ran on the nodes"
        # Both train at the same time, each on its own node.
        statuses = {client.get(f"/api/training/runs/{r['run_id']}").json()["status"] for r in runs}
        assert statuses == {"running"}
        nodes = {r["placement"]["node_id"] for r in live}
        assert len(nodes) == 2 and all(r["placement"]["executor"] == "ray" for r in live)
        workers = {n.node_id() for n in ray_cluster.nodes[1:]}
        assert nodes == workers, "each run is on one of the worker nodes"
        # SSE stays live through Ray: at least 10 new events within 10 s of subscribing, to the run least far along
        # (with a real trainer the other could be nearly done by then: 300 steps train in ~2 s, 8 events were left).
        seen = {r["run_id"]: len(events_of(server, r["run_id"])) for r in runs}
        watched = min(seen, key=lambda run_id: seen[run_id])
        _, stream = read_sse(client, {"run_id": watched}, {"Last-Event-ID": str(seen[watched])}, seconds=10)
        assert len(stream.events) >= 10, (len(stream.events), seen)
        done = [wait_for(client, r["run_id"], ENDED, timeout=300) for r in runs]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    for run in done:
        folder = server.evidence_dir / "training" / run["run_id"]
        assert audit_run(folder).ok
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["placement"]["node_id"] == run["placement"]["node_id"]
        assert provenance["placement"]["hostname"] and provenance["datasets"], "verified on the node that trained"
        assert [e for e in events_of(server, run["run_id"]) if e["type"] == "metric"][-1]["data"]["step"] == 300


def test_a_lost_node_interrupts_its_run_which_resumes_by_itself_on_the_node_that_remains(
    ray_cluster: LocalRayCluster, server_factory: ServerFactory
) -> None:
    """Scripted trainers at 300 steps/s: the run is killed past step 150 (at 160 here) with ~6 s of its 2000 steps
    still to go."""
    server = ray_server(server_factory, ray_cluster, "--auto-resume", env=scripted(300))
    with server.client() as client:
        other = start_run(client, steps=100_000, log_every=10, checkpoint_every=100_000, eval_samples=100)
        # Long enough that the node dies mid-run: ~7 s at this pace (a step of the real mlp takes a few milliseconds).
        run = start_run(client, steps=2000, log_every=10, checkpoint_every=100, eval_samples=100)
        assert run["auto_resume"] is True
        wait_for(client, other["run_id"], {"running"}, timeout=120)
        wait_for(client, run["run_id"], {"running"}, timeout=120)
        at = wait_for_step(client, run["run_id"], 150)
        assert at["status"] == "running" and at["checkpoints"] and at["device"] == "SCRIPTED", at
        node = next(n for n in ray_cluster.nodes if n.node_id() == at["placement"]["node_id"])
        assert not node.head
        killed_at = time.monotonic()
        node.kill()
        while not any(e["type"] == "end" for e in events_of(server, run["run_id"])):
            assert time.monotonic() - killed_at < 60, "the lost node was never noticed"
            time.sleep(0.1)
        detected_s = time.monotonic() - killed_at
        # The node that remains is busy with the other run: the resumed attempt waits, queued, until it is free.
        queued = wait_for(client, run["run_id"], {"queued"}, timeout=30)
        assert queued["placement"] is None and queued["error"] is None
        events = events_of(server, run["run_id"])
        ends = [e for e in events if e["type"] == "end"]
        assert ends and ends[0]["data"]["status"] == "interrupted" and ends[0]["data"]["error"]["code"] == "node_lost"
        resumed = [e for e in events if e["type"] == "status" and e["data"].get("auto_resume")]
        assert resumed and resumed[0]["data"]["auto_resume"] == {"attempt": 1, "max": 3, "after": "node_lost"}
        checkpoint_step = resumed[0]["data"]["step"]
        assert client.post(f"/api/training/runs/{other['run_id']}/cancel").status_code in (200, 202)
        done = wait_for(client, run["run_id"], ENDED, timeout=300)
    assert done["status"] == "succeeded", done
    assert done["placement"]["node_id"] != at["placement"]["node_id"]
    print(f"node loss noticed {detected_s:.1f} s after the kill")  # shown with -s
    assert detected_s < 30
    events = events_of(server, run["run_id"])
    resume_at = next(i for i, e in enumerate(events) if e["data"].get("auto_resume"))
    after = [e["data"]["step"] for e in events[resume_at:] if e["type"] == "metric"]
    assert after == list(range(checkpoint_step + 10, 2001, 10)), "the resumed attempt carries on from the checkpoint"
    assert audit_run(server.evidence_dir / "training" / run["run_id"]).ok


def test_a_server_restart_does_not_stop_training_and_the_log_has_no_gap(
    ray_cluster: LocalRayCluster, server_factory: ServerFactory
) -> None:
    """Scripted trainers at 200 steps/s: the 1500-step run, stopped at step ~100, trains ~7 s more, through the
    server's stop, its 3 s away and the next server's start (3.7 s in all here), and on with the next server."""
    first = ray_server(server_factory, ray_cluster, env=scripted(200))
    with first.client() as client:
        run = start_run(client, steps=1500, log_every=10, checkpoint_every=300, eval_samples=200)
        wait_for_step(client, run["run_id"], 100)
    assert first.stop(signal.SIGTERM) == 0
    assert "left training without this server" in first.log()
    time.sleep(3)  # the trainer goes on meanwhile; what it reports waits in its actor
    second = ray_server(server_factory, ray_cluster, evidence_dir=first.evidence_dir, env=scripted(200))
    assert f"run {run['run_id']}: its trainer went on training without the server" in second.log()
    with second.client() as client:
        done = wait_for(client, run["run_id"], ENDED, timeout=300)
    assert done["status"] == "succeeded" and done["device"] == "SCRIPTED", done
    events = events_of(second, run["run_id"])
    assert sum(e["type"] == "end" for e in events) == 1
    steps = [e["data"]["step"] for e in events if e["type"] == "metric"]
    assert steps == list(range(10, 1501, 10)), "every logged step exactly once"
    seqs = [e["data"]["trainer_seq"] for e in events if "trainer_seq" in e["data"]]
    assert seqs == sorted(set(seqs))
    for event in events:
        assert not CONTRACT.errors("event.schema.json", event)
    assert audit_run(second.evidence_dir / "training" / run["run_id"]).ok


def test_the_conformance_suite_passes_a_server_on_the_ray_executor(
    ray_cluster: LocalRayCluster, server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The real trainer: the suite checks that loss falls and re-evaluates the checkpoints."""
    server = ray_server(server_factory, ray_cluster)
    done = subprocess.run(
        [sys.executable, "-m", "trainer_conformance", "--base-url", server.url, "--out", str(tmp_path / "verify")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])


def test_an_unreachable_cluster_is_not_ready_and_refuses_runs_with_a_clear_503(server_factory: ServerFactory) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket is closed
    server = server_factory(extra_args=["--executor", "ray", "--ray-address", f"127.0.0.1:{port}"], wait_ready=False)
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 60
        ready = client.get("/readyz")
        while "unreachable" not in ready.text and time.monotonic() < deadline:
            time.sleep(0.5)
            ready = client.get("/readyz")
        assert ready.status_code == 503 and "unreachable" in ready.json()["checks"]["device"]["detail"], ready.text
        refused = check_problem(client.post("/api/training/runs", json={"steps": 10}), 503, "executor_unavailable")
        assert "unreachable" in refused["detail"]
