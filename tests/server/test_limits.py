"""Access control and limits on a real server: bearer token on mutating endpoints (compared in constant time,
never logged), a bounded run queue (429 + Retry-After), a cap on event-stream subscribers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_harness import ServerFactory, ServerProcess, check_json, check_problem, start_run, wait_for

pytestmark = pytest.mark.xdist_group("server-limits")

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def limited(server_factory: ServerFactory) -> Iterator[ServerProcess]:
    env: dict[str, str | None] = {
        "TRAINER_API_TOKEN": TOKEN,
        "TRAINER_MAX_QUEUED_RUNS": "1",
        "TRAINER_MAX_SSE_SUBSCRIBERS": "2",
    }
    yield server_factory(env=env, scripted=True)


def test_mutating_endpoints_need_the_bearer_token(limited: ServerProcess) -> None:
    with limited.client() as client:
        missing = check_problem(client.post("/api/training/runs", json={"steps": 10}), 401, "unauthorized")
        assert "Bearer" in missing["detail"]
        assert client.post("/api/training/runs", json={}).headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
        check_problem(client.post("/api/training/runs", json={"steps": 10}, headers=wrong), 403, "forbidden")
        check_problem(client.post("/api/training/runs", json={}, headers={"Authorization": "Basic " + TOKEN}), 401)
        # Reads stay open unless TRAINER_PROTECT_READS=1; health and metrics always are.
        assert client.get("/api/training/runs").status_code == 200
        assert client.get("/readyz").status_code == 200
        good = {"Authorization": "Bearer " + TOKEN}
        run = check_json(client.post("/api/training/runs", json={"steps": 10, "eval_samples": 100}, headers=good),
                         "run.schema.json")  # fmt: skip
        check_problem(client.post(f"/api/training/runs/{run['run_id']}/cancel"), 401)
        wait_for(client, run["run_id"], {"succeeded"})
    assert TOKEN not in limited.log() and TOKEN[:-1] not in limited.log()


def test_queue_beyond_its_limit_is_429_with_retry_after(limited: ServerProcess) -> None:
    auth = {"Authorization": "Bearer " + TOKEN}
    with limited.client(headers=auth) as client:
        running = start_run(client, steps=100_000, log_every=50, eval_samples=100)
        wait_for(client, running["run_id"], {"running"})
        waiting = start_run(client, steps=10)
        assert waiting["status"] == "queued"
        refused = client.post("/api/training/runs", json={"steps": 10})
        check_problem(refused, 429, "queue_full")
        assert int(refused.headers["Retry-After"]) > 0
        for run in (waiting, running):
            client.post(f"/api/training/runs/{run['run_id']}/cancel")
            wait_for(client, run["run_id"], {"cancelled"})


def test_event_stream_subscribers_are_capped(limited: ServerProcess) -> None:
    auth = {"Authorization": "Bearer " + TOKEN}
    with limited.client(headers=auth) as client:
        run = start_run(client, steps=20_000, log_every=50, eval_samples=100)
        wait_for(client, run["run_id"], {"running"})
        params = {"run_id": run["run_id"]}
        a = limited.client()
        b = limited.client()
        with a, b, a.stream("GET", "/api/events/training", params=params) as first:
            first_lines = first.iter_lines()  # kept: a dropped iterator closes its stream
            next(first_lines)
            with b.stream("GET", "/api/events/training", params=params) as second:
                second_lines = second.iter_lines()
                next(second_lines)
                with client.stream("GET", "/api/events/training", params=params) as refused:
                    refused.read()
                    check_problem(refused, 503, "too_many_subscribers")
                    assert int(refused.headers["Retry-After"]) > 0
                assert "trainer_sse_subscribers 2" in client.get("/metrics").text
        client.post(f"/api/training/runs/{run['run_id']}/cancel")
        wait_for(client, run["run_id"], {"cancelled"})
