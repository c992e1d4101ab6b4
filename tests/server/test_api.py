"""Every endpoint over a real socket against a real server whose runs train on the real Fashion-MNIST:
schemas, headers, errors as problem+json, pagination, downloads with digests, evidence, SSE replay."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import load as load_safetensors
from server_harness import (
    CONTRACT,
    ServerProcess,
    SseEvent,
    check_headers,
    check_json,
    check_problem,
    read_sse,
    start_run,
    wait_for,
)
from trainer_conformance.client import tls_context

from reference_server import routes
from reference_server.schemas import iter_refs

pytestmark = pytest.mark.xdist_group("server-api")

SHORT = {"steps": 60, "log_every": 10, "checkpoint_every": 20, "eval_samples": 1000}


@pytest.fixture(scope="module")
def server(scripted_server: ServerProcess) -> ServerProcess:
    """The API is the subject here, not training: the server's trainers are scripted (tests/scripted_trainer.py)."""
    return scripted_server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def finished(client: httpx.Client) -> dict[str, Any]:
    """One short real run (60 steps, 3 checkpoints), trained to the end."""
    run = start_run(client, **SHORT)
    return wait_for(client, run["run_id"], {"succeeded", "failed", "cancelled", "interrupted"})


def run_dir(server: ServerProcess, run_id: str) -> Path:
    return server.evidence_dir / "training" / run_id


# ----- runs -----
def test_create_answers_the_run_with_location_and_links(client: httpx.Client) -> None:
    response = client.post("/api/training/runs", json=SHORT | {"seed": 7})
    run = check_json(response, "run.schema.json")
    assert response.headers["Location"] == f"/api/training/runs/{run['run_id']}"
    assert run["status"] in ("queued", "running") and run["config"]["seed"] == 7
    assert run["config"]["dataset"] == "fashion-mnist"  # the only verified dataset in this cache
    for name, link in run["links"].items():
        if name not in ("cancel", "resume", "events"):  # POSTs, and a stream: each has its own tests
            assert client.get(link).status_code in (200, 409), name
    wait_for(client, run["run_id"], {"succeeded"})


def test_finished_run_has_config_progress_metrics_and_checkpoints(
    client: httpx.Client, finished: dict[str, Any]
) -> None:
    run = check_json(client.get(f"/api/training/runs/{finished['run_id']}"), "run.schema.json")
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"] == {"step": 60, "total_steps": 60, "fraction": 1.0}
    assert run["latest_metrics"]["step"] == 60 and run["latest_eval"]["step"] == 60
    assert [c["step"] for c in run["checkpoints"]] == [20, 40, 60]
    assert run["started_at"] and run["finished_at"] and run["created_at"] <= run["started_at"] <= run["finished_at"]
    assert run["device"] and run["error"] is None


def test_run_ids_are_opaque_and_unique(client: httpx.Client, finished: dict[str, Any]) -> None:
    ids = [r["run_id"] for r in client.get("/api/training/runs", params={"limit": 100}).json()["runs"]]
    assert len(ids) == len(set(ids))
    for run_id in ids:
        assert run_id.startswith("run-") and len(run_id) == 24 and int(run_id[4:], 16) >= 0


def test_list_is_newest_first_and_cursor_pages_cover_it(client: httpx.Client, finished: dict[str, Any]) -> None:
    whole = check_json(client.get("/api/training/runs", params={"limit": 100}), "run-list.schema.json")
    created = [r["created_at"] for r in whole["runs"]]
    assert created == sorted(created, reverse=True) and len(created) >= 2
    paged: list[str] = []
    cursor = None
    while True:
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        page = check_json(client.get("/api/training/runs", params=params), "run-list.schema.json")
        paged += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == [r["run_id"] for r in whole["runs"]]
    succeeded = client.get("/api/training/runs", params={"status": "succeeded"}).json()["runs"]
    assert finished["run_id"] in [r["run_id"] for r in succeeded] and all(r["status"] == "succeeded" for r in succeeded)
    check_problem(client.get("/api/training/runs", params={"cursor": "run-nope-nope-nope"}), 400, "invalid_parameter")
    check_problem(client.get("/api/training/runs", params={"status": "done"}), 400, "invalid_parameter")


def test_metrics_pages_by_step_and_cover_every_record(client: httpx.Client, finished: dict[str, Any]) -> None:
    url = f"/api/training/runs/{finished['run_id']}/metrics"
    whole = check_json(client.get(url), "metrics.schema.json")
    assert [m["step"] for m in whole["metrics"]] == [10, 20, 30, 40, 50, 60]
    assert [e["step"] for e in whole["evals"]] == [20, 40, 60] and whole["next_after_step"] is None
    metrics: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"after_step": str(after)} if after is not None else {})
        page = check_json(client.get(url, params=params), "metrics.schema.json")
        metrics += page["metrics"]
        evals += page["evals"]
        pages += 1
        after = page["next_after_step"]
        if after is None:
            break
    assert (metrics, evals, pages) == (whole["metrics"], whole["evals"], 3)
    assert client.get(url, params={"after_step": "60"}).json()["metrics"] == []
    check_problem(client.get(url, params={"limit": "0"}), 400, "invalid_parameter")
    check_problem(client.get(url, params={"after_step": "x"}), 400, "invalid_parameter")


# ----- checkpoints and evidence -----
def test_checkpoints_download_with_matching_digests(client: httpx.Client, finished: dict[str, Any]) -> None:
    run_id = finished["run_id"]
    listing = check_json(client.get(f"/api/training/runs/{run_id}/checkpoints"), "checkpoint-list.schema.json")
    assert len(listing["checkpoints"]) == 3
    for record in listing["checkpoints"]:
        response = client.get(record["url"])
        assert response.status_code == 200
        check_headers(response, "checkpoint")
        digest = hashlib.sha256(response.content).digest()
        assert response.headers["X-Checksum-SHA256"] == digest.hex() == record["sha256"]
        assert response.headers["Digest"] == "sha-256=" + base64.b64encode(digest).decode()
        assert len(response.content) == record["bytes"]
        tensors = load_safetensors(response.content)
        assert any(name.startswith("model.") for name in tensors)
    head = client.head(listing["checkpoints"][0]["url"])
    assert head.status_code == 200 and head.content == b"" and head.headers["X-Checksum-SHA256"]
    check_problem(client.get(f"/api/training/runs/{run_id}/checkpoints/step-999999.safetensors"), 404)
    for bad in ("..%2Fconfig.json", "%2e%2e%2fmanifest.json", "..%2F..%2F..%2Fetc%2Fpasswd"):
        assert client.get(f"/api/training/runs/{run_id}/checkpoints/{bad}").status_code == 404


def test_evidence_files_are_valid_and_manifest_hashes_match(
    client: httpx.Client, server: ServerProcess, finished: dict[str, Any]
) -> None:
    run_id = finished["run_id"]
    manifest = check_json(client.get(f"/api/training/runs/{run_id}/evidence"), "evidence-manifest.schema.json")
    assert manifest["status"] == "succeeded"
    paths = {f["path"] for f in manifest["files"]}
    assert {"config.json", "provenance.json", "metrics.jsonl", "trainer.log"} <= paths
    assert {f"checkpoints/step-{s:06d}.safetensors" for s in (20, 40, 60)} <= paths
    for entry in manifest["files"]:
        on_disk = (run_dir(server, run_id) / entry["path"]).read_bytes()
        served = client.get(f"/api/training/runs/{run_id}/evidence/{entry['path']}")
        assert served.status_code == 200
        assert served.content == on_disk
        assert hashlib.sha256(on_disk).hexdigest() == entry["sha256"] == served.headers["X-Checksum-SHA256"]
        assert len(on_disk) == entry["bytes"]
    config = json.loads((run_dir(server, run_id) / "config.json").read_bytes())
    assert not CONTRACT.errors("evidence-config.schema.json", config)
    # What the trainer reported when it started (the scripted one says so: tests/scripted_trainer.py).
    assert config["device"] == "SCRIPTED" and config["versions"]["tinygrad"] == "scripted"
    assert "convolution_kernels" in config and config["convolution_kernels"] is None  # an mlp has no convolution
    provenance = json.loads((run_dir(server, run_id) / "provenance.json").read_bytes())
    assert not CONTRACT.errors("evidence-provenance.schema.json", provenance)
    assert provenance["datasets"][0]["name"] == "fashion-mnist" and provenance["mocks_disabled"] == "1"
    lines = (run_dir(server, run_id) / "metrics.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert all(not CONTRACT.errors("event.schema.json", e) for e in events)
    assert events[-1]["type"] == "end" and events[-1]["data"]["status"] == "succeeded"
    for bad in (
        "..%2F..%2Fserver.log",
        "checkpoints%2F..%2Fconfig.json",
        "nope.json",
        "%2Fetc%2Fpasswd",
        "checkpoints/x",
    ):
        check_problem(client.get(f"/api/training/runs/{run_id}/evidence/{bad}"), 404)


def test_evidence_manifest_waits_for_the_end(client: httpx.Client) -> None:
    run = start_run(client, steps=100_000, log_every=50, eval_samples=100)
    try:
        check_problem(client.get(f"/api/training/runs/{run['run_id']}/evidence"), 409, "evidence_not_ready")
        config = client.get(f"/api/training/runs/{run['run_id']}/evidence/config.json")
        assert config.status_code == 200 and config.json()["run_id"] == run["run_id"]
    finally:
        client.post(f"/api/training/runs/{run['run_id']}/cancel")
        wait_for(client, run["run_id"], {"cancelled"})


# ----- SSE -----
def test_stream_replays_the_log_then_ends_and_closes(
    client: httpx.Client, finished: dict[str, Any], server: ServerProcess
) -> None:
    response, stream = read_sse(client, {"run_id": finished["run_id"]})
    assert response.status_code == 200
    check_headers(response, "sse")
    assert "gzip" not in response.headers.get("Content-Encoding", "")
    assert stream.closed_by_server and stream.retry and stream.retry > 0
    lines = (run_dir(server, finished["run_id"]) / "metrics.jsonl").read_text().splitlines()
    assert [e.data for e in stream.events] == lines  # the data is exactly the metrics.jsonl line
    assert [e.id for e in stream.events] == [str(i) for i in range(1, len(lines) + 1)]
    assert [e.event for e in stream.events] == [json.loads(line)["type"] for line in lines]
    kinds = [e.event for e in stream.events]
    assert kinds[0] == "status" and kinds[-1] == "end" and {"metric", "checkpoint"} <= set(kinds)


def test_last_event_id_replays_exactly_the_events_after_it(client: httpx.Client, finished: dict[str, Any]) -> None:
    _, everything = read_sse(client, {"run_id": finished["run_id"]})
    ids = [int(e.id or 0) for e in everything.events]
    for cursor in (0, 3, ids[-2]):
        _, after = read_sse(client, {"run_id": finished["run_id"]}, {"Last-Event-ID": str(cursor)})
        assert [int(e.id or 0) for e in after.events] == [i for i in ids if i > cursor]
        assert after.closed_by_server
    _, by_query = read_sse(client, {"run_id": finished["run_id"], "last_event_id": "5"})
    assert [int(e.id or 0) for e in by_query.events] == [i for i in ids if i > 5]


def test_a_reconnect_after_the_final_end_gets_204_so_a_browser_stops(
    client: httpx.Client, finished: dict[str, Any]
) -> None:
    _, everything = read_sse(client, {"run_id": finished["run_id"]})
    end = everything.events[-1]
    assert end.event == "end" and end.json()["data"]["status"] == "succeeded"
    for params, headers in (({}, {"Last-Event-ID": end.id}), ({"last_event_id": end.id}, {})):
        response, stream = read_sse(client, {"run_id": finished["run_id"], **params}, headers)
        assert response.status_code == 204 and not response.content and not stream.events
        check_headers(response, "all")
    head = client.head("/api/events/training", params={"run_id": finished["run_id"], "last_event_id": end.id})
    assert head.status_code == 204


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "99999", "run-other0000000000000000:3"])
def test_bogus_last_event_id_is_refused(client: httpx.Client, finished: dict[str, Any], bad: str) -> None:
    response, _ = read_sse(client, {"run_id": finished["run_id"]}, {"Last-Event-ID": bad})
    check_problem(response, 400, "invalid_last_event_id")


def test_stream_of_unknown_run_is_404(client: httpx.Client) -> None:
    response, _ = read_sse(client, {"run_id": "run-00000000000000000000"})
    check_problem(response, 404, "run_not_found")


def test_stream_without_run_id_carries_every_runs_live_events(client: httpx.Client) -> None:
    received: list[SseEvent] = []
    started: list[str] = []

    def is_end_of_started_run(event: SseEvent) -> bool:
        return bool(started) and event.event == "end" and (event.id or "").startswith(started[0] + ":")

    def listen() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60, verify=tls_context()) as c:
            _, stream = read_sse(c, {}, seconds=60, stop=is_end_of_started_run)
            received.extend(stream.events)

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(1.0)
    run = start_run(client, steps=40, log_every=10, checkpoint_every=20, eval_samples=500)
    started.append(run["run_id"])
    listener.join(90)
    mine = [e for e in received if (e.id or "").startswith(run["run_id"] + ":")]
    assert mine[0].event == "status" and mine[-1].event == "end"
    assert [int((e.id or "").split(":")[1]) for e in mine] == list(range(1, len(mine) + 1))


# ----- cancel and idempotency -----
def test_cancel_stops_a_training_run(client: httpx.Client, server: ServerProcess) -> None:
    run = start_run(client, steps=100_000, log_every=10, eval_samples=100)
    wait_for(client, run["run_id"], {"running"})
    response = client.post(f"/api/training/runs/{run['run_id']}/cancel")
    assert response.status_code in (200, 202)
    check_json(response, "run.schema.json", response.status_code)
    _, stream = read_sse(client, {"run_id": run["run_id"]})
    assert stream.events[-1].event == "end" and stream.events[-1].json()["data"]["status"] == "cancelled"
    ended = check_json(client.get(f"/api/training/runs/{run['run_id']}"), "run.schema.json")
    assert ended["status"] == "cancelled" and ended["progress"]["step"] < 100_000
    assert json.loads((run_dir(server, run["run_id"]) / "manifest.json").read_text())["status"] == "cancelled"
    assert client.post(f"/api/training/runs/{run['run_id']}/cancel").status_code == 200  # cancelling again is fine


def test_cancel_of_a_queued_run_ends_it_at_once(client: httpx.Client) -> None:
    blocker = start_run(client, steps=100_000, log_every=50, eval_samples=100)
    queued = start_run(client, steps=50)
    assert queued["status"] == "queued"  # one run trains at a time by default
    response = client.post(f"/api/training/runs/{queued['run_id']}/cancel")
    assert check_json(response, "run.schema.json")["status"] == "cancelled"
    _, stream = read_sse(client, {"run_id": queued["run_id"]})
    assert [e.event for e in stream.events] == ["status", "end"]
    client.post(f"/api/training/runs/{blocker['run_id']}/cancel")
    wait_for(client, blocker["run_id"], {"cancelled"})


def test_cancel_of_a_finished_run_is_409(client: httpx.Client, finished: dict[str, Any]) -> None:
    check_problem(client.post(f"/api/training/runs/{finished['run_id']}/cancel"), 409, "run_not_cancellable")


def test_idempotency_key_returns_the_same_run(client: httpx.Client, server: ServerProcess) -> None:
    body = {"steps": 20, "log_every": 10, "eval_samples": 100, "idempotency_key": "test-key-0001"}
    first = client.post("/api/training/runs", json=body)
    second = client.post("/api/training/runs", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["run_id"] == second.json()["run_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    config = json.loads((run_dir(server, first.json()["run_id"]) / "config.json").read_text())
    assert config["idempotency_key"] == "test-key-0001"  # durable: survives a restart
    check_problem(client.post("/api/training/runs", json=body | {"steps": 21}), 409, "idempotency_key_conflict")
    wait_for(client, first.json()["run_id"], {"succeeded"})


def test_the_idempotency_key_header_works_like_the_body_field(client: httpx.Client) -> None:
    body = {"steps": 20, "log_every": 10, "eval_samples": 100}
    header = {"Idempotency-Key": "header-key-0001"}
    answers = [client.post("/api/training/runs", json=body, headers=header) for _ in range(5)]
    assert {a.status_code for a in answers} == {200} and len({a.json()["run_id"] for a in answers}) == 1
    assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true", "true", "true"]
    run = answers[0].json()
    assert run["idempotency_key"] == "header-key-0001"
    # The same key in both places is one key; the body alone finds the run the header started.
    both = client.post("/api/training/runs", json=body | {"idempotency_key": "header-key-0001"}, headers=header)
    alone = client.post("/api/training/runs", json=body | {"idempotency_key": "header-key-0001"})
    assert both.json()["run_id"] == alone.json()["run_id"] == run["run_id"]
    wait_for(client, run["run_id"], {"succeeded"})


def test_name_and_tags_label_a_run_and_filter_the_list(client: httpx.Client, server: ServerProcess) -> None:
    labels = {"name": "baseline ünïcode run", "tags": ["sweep-1", "lr.high"]}
    first = check_json(client.post("/api/training/runs", json=SHORT | labels), "run.schema.json")
    other = check_json(client.post("/api/training/runs", json=SHORT | {"tags": ["sweep-2"]}), "run.schema.json")
    plain = check_json(client.post("/api/training/runs", json=SHORT), "run.schema.json")
    for run in (first, other, plain):
        client.post(f"/api/training/runs/{run['run_id']}/cancel")
    for run in (first, other, plain):
        wait_for(client, run["run_id"], {"cancelled"})
    assert (first["name"], first["tags"]) == (labels["name"], labels["tags"])
    assert (plain["name"], plain["tags"]) == (None, [])
    # Labels are not training configuration: the same config hashes the same whatever a run is called.
    assert "name" not in first["config"] and "tags" not in first["config"]
    assert first["config"] == plain["config"]
    stored = json.loads((run_dir(server, first["run_id"]) / "config.json").read_text())
    assert {k: stored["request"][k] for k in labels} == labels  # durable: read back after a restart
    tagged = check_json(
        client.get("/api/training/runs", params={"tag": "sweep-1", "limit": 100}), "run-list.schema.json"
    )
    assert [r["run_id"] for r in tagged["runs"]] == [first["run_id"]]
    page = client.get("/api/training/runs", params={"tag": "lr.high", "status": "cancelled", "limit": 1}).json()
    assert [r["run_id"] for r in page["runs"]] == [first["run_id"]] and page["next_cursor"] is None
    check_problem(client.get("/api/training/runs", params={"tag": "not a tag"}), 400, "invalid_parameter")


# ----- errors -----
BAD_BODIES: list[tuple[str, bytes, str, int, str | None]] = [
    ("malformed json", b'{"steps": ', "application/json", 400, None),
    ("NaN", b'{"learning_rate": NaN}', "application/json", 400, None),
    ("not an object", b"[1, 2]", "application/json", 422, "(body)"),
    ("zero steps", b'{"steps": 0}', "application/json", 422, "steps"),
    ("negative learning rate", b'{"learning_rate": -1}', "application/json", 422, "learning_rate"),
    ("string batch size", b'{"batch_size": "big"}', "application/json", 422, "batch_size"),
    ("absurd batch size", b'{"batch_size": 100000}', "application/json", 422, "batch_size"),
    ("unknown field", b'{"stepz": 5}', "application/json", 422, "stepz"),
    ("unknown dataset", b'{"dataset": "imagenet"}', "application/json", 422, "dataset"),
    ("unknown model", b'{"model": "gpt"}', "application/json", 422, "model"),
    ("steps and epochs", b'{"steps": 5, "epochs": 1}', "application/json", 422, "steps"),
    ("form body", b"steps=5", "application/x-www-form-urlencoded", 415, None),
    ("empty name", b'{"name": ""}', "application/json", 422, "name"),
    ("name with a newline", b'{"name": "a\\nb"}', "application/json", 422, "name"),
    ("name too long", b'{"name": "' + b"n" * 101 + b'"}', "application/json", 422, "name"),
    ("tags not a list", b'{"tags": "a"}', "application/json", 422, "tags"),
    ("tag with a space", b'{"tags": ["a b"]}', "application/json", 422, "tags.0"),
    ("repeated tag", b'{"tags": ["a", "a"]}', "application/json", 422, "tags"),
    (
        "seventeen tags",
        b'{"tags": [' + b",".join(b'"t%d"' % i for i in range(17)) + b"]}",
        "application/json",
        422,
        "tags",
    ),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_problems_naming_the_field(
    client: httpx.Client, server: ServerProcess, case: tuple[str, bytes, str, int, str | None]
) -> None:
    _, body, content_type, status, field = case
    before = sorted((server.evidence_dir / "training").iterdir())
    response = client.post("/api/training/runs", content=body, headers={"Content-Type": content_type})
    problem = check_problem(response, status)
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
        assert field in problem["detail"]
    assert sorted((server.evidence_dir / "training").iterdir()) == before  # nothing started


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    body = json.dumps({"idempotency_key": "x" * 100_000}).encode()
    check_problem(client.post("/api/training/runs", content=body, headers={"Content-Type": "application/json"}), 413)


def test_unavailable_dataset_is_409_and_starts_nothing(client: httpx.Client, server: ServerProcess) -> None:
    before = sorted((server.evidence_dir / "training").iterdir())
    problem = check_problem(client.post("/api/training/runs", json={"dataset": "mnist"}), 409, "dataset_unavailable")
    assert "mnist" in problem["detail"]
    # The hint names commands that work for MNIST: import-known only knows Fashion-MNIST (Debian's package).
    assert (
        "`trainer-datasets fetch mnist`" in problem["detail"]
        and "`trainer-datasets import mnist DIR`" in problem["detail"]
    )
    assert "import-known" not in problem["detail"]
    assert sorted((server.evidence_dir / "training").iterdir()) == before


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/training/runs/run-00000000000000000000", 404, "run_not_found"),
        ("GET", "/api/training/runs/not a run", 404, "run_not_found"),
        ("GET", "/api/training/runs/run-00000000000000000000/metrics", 404, "run_not_found"),
        ("POST", "/api/training/runs/run-00000000000000000000/cancel", 404, "run_not_found"),
        ("GET", "/api/training/runs/run-00000000000000000000/checkpoints", 404, "run_not_found"),
        ("GET", "/api/training/runs/run-00000000000000000000/evidence", 404, "run_not_found"),
        ("GET", "/api/nothing-here", 404, "not_found"),
        ("DELETE", "/api/training/runs", 405, "method_not_allowed"),
        ("PUT", "/api/training/runs/run-00000000000000000000", 405, "method_not_allowed"),
        ("GET", "/api/training/runs/run-00000000000000000000/cancel", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("PATCH", "/api/datasets", 405, "method_not_allowed"),
        ("GET", "/api/datasets/fashion-mnist/files/nope.gz", 404, "dataset_file_not_found"),
        ("GET", "/api/datasets/imagenet/files/train.gz", 404, "dataset_file_not_found"),
        ("GET", "/api/datasets/mnist/files/t10k-labels-idx1-ubyte.gz", 409, "dataset_unavailable"),
    ],
)
def test_errors_are_problem_json(client: httpx.Client, method: str, path: str, status: int, code: str) -> None:
    response = client.request(method, path)
    check_problem(response, status, code)
    if status == 405:
        assert response.headers["Allow"]


def test_without_cors_origins_there_is_no_cors_and_no_preflight(client: httpx.Client) -> None:
    origin = {"Origin": "http://app.example"}
    answer = client.get("/api/training/runs", headers=origin)
    assert answer.status_code == 200 and not any(h.lower().startswith("access-control-") for h in answer.headers)
    preflight = client.options("/api/training/runs", headers=origin | {"Access-Control-Request-Method": "POST"})
    # What the path allows, and no CORS grant: the browser refuses the cross-origin request itself.
    assert preflight.status_code == 204 and preflight.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert not any(h.lower().startswith("access-control-") for h in preflight.headers)
    # Without a token mutations are open, yet not to other sites' pages.
    check_problem(
        client.post("/api/training/runs", json={"steps": 0}, headers={"Sec-Fetch-Site": "cross-site"}),
        403,
        "cross_site_request",
    )
    check_problem(client.post("/api/session", json={"token": "x" * 16}), 409, "no_token_configured")
    check_json(client.get("/api/session"), "session.schema.json")


def test_request_id_is_echoed_when_well_formed(client: httpx.Client) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "trace-1234:abcd"}).headers["X-Request-ID"] == "trace-1234:abcd"
    )
    replaced = client.get("/healthz", headers={"X-Request-ID": "no spaces allowed"}).headers["X-Request-ID"]
    assert replaced != "no spaces allowed" and len(replaced) >= 8
    problem = client.get("/api/nothing", headers={"X-Request-ID": "trace-99999999"})
    assert problem.headers["X-Request-ID"] == problem.json()["request_id"] == "trace-99999999"


# ----- service endpoints -----
def test_health_and_readiness(client: httpx.Client) -> None:
    health = check_json(client.get("/healthz"), "health.schema.json")
    assert health["status"] == "ok" and health["mocks"] is False and health["phase"] == "stage1"
    ready = check_json(client.get("/readyz"), "health.schema.json")
    assert ready["status"] == "ready" and all(c["ok"] for c in ready["checks"].values())
    assert set(ready["checks"]) == {"evidence_dir", "disk_space", "device", "datasets"}
    assert "fashion-mnist" in ready["checks"]["datasets"]["detail"]


def test_datasets_list_and_raw_file_download(client: httpx.Client, server: ServerProcess) -> None:
    datasets = check_json(client.get("/api/datasets"), "dataset-list.schema.json")["datasets"]
    fashion = next(d for d in datasets if d["name"] == "fashion-mnist")
    assert fashion["present"] and fashion["verified"] and fashion["source"]
    assert not next(d for d in datasets if d["name"] == "mnist")["verified"]
    labels = next(f for f in fashion["files"] if f["name"] == "t10k-labels-idx1-ubyte.gz")
    response = client.get("/api/datasets/fashion-mnist/files/t10k-labels-idx1-ubyte.gz")
    assert response.status_code == 200
    check_headers(response, "checkpoint")  # same download headers: octet-stream, Digest, X-Checksum-SHA256
    assert hashlib.sha256(response.content).hexdigest() == labels["sha256"] == response.headers["X-Checksum-SHA256"]
    assert response.content == (server.data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_prometheus_metrics(client: httpx.Client, finished: dict[str, Any]) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain; version=")
    check_headers(response, "all")
    # Parsed with prometheus-client's own parser: the exposition is valid, whatever order its labels come in.
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("trainer_runs", frozenset({("status", "succeeded")}))] >= 1
    assert ("trainer_sse_subscribers", frozenset()) in samples
    run_gets = frozenset({("route", "Run"), ("method", "GET"), ("status", "200"), ("le", "+Inf")})
    assert samples[("trainer_http_request_duration_seconds_bucket", run_gets)] >= 1
    assert samples[("trainer_steps_trained_total", frozenset())] >= 60


def test_openapi_documents_every_route_with_bundled_schemas(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    check_headers(response, "json")
    document = response.json()
    assert document["openapi"].startswith("3.1")
    # Every named route of the server, and nothing else (routes.PATHS is the one home of a URL).
    assert set(document["paths"]) == {template.replace(":path", "") for template in routes.PATHS.values()}
    refs = [r for r in iter_refs(document)]
    assert refs and all(r.startswith("#/") for r in refs)  # every $ref points inside the document
    assert document["components"]["schemas"]["run"]["required"] == CONTRACT.documents["run.schema.json"]["required"]


# ----- HTTP details -----
def test_options_answers_204_with_allow_on_every_route_and_for_the_server(
    client: httpx.Client, server: ServerProcess, finished: dict[str, Any]
) -> None:
    samples = {"run_id": finished["run_id"], "name": "step-000010.safetensors", "file": "config.json",
               "asset": "js/api.js", "commit": "abc1234", "path": "report.json"}  # fmt: skip
    for name, template in routes.PATHS.items():
        path = re.sub(r"\{(\w+)(?::path)?\}", lambda m: samples.get(m.group(1), "x"), template)
        answer = client.options(path)
        assert answer.status_code == 204, (name, answer.status_code, answer.text[:200])
        allowed = [m.strip() for m in answer.headers["Allow"].split(",")]
        assert "OPTIONS" in allowed and ("GET" in allowed) == ("HEAD" in allowed), (name, allowed)
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    conn.putrequest("OPTIONS", "*", skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    whole = conn.getresponse()
    assert whole.status == 204 and set(whole.headers["Allow"].split(", ")) >= {"GET", "HEAD", "POST", "OPTIONS"}
    conn.close()


def test_head_on_the_stream_sends_no_length(client: httpx.Client, finished: dict[str, Any]) -> None:
    for params in ({}, {"run_id": finished["run_id"]}):
        answer = client.head("/api/events/training", params=params)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Length" not in answer.headers and "Transfer-Encoding" not in answer.headers
