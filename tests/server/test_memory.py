"""Ended runs' logs leave memory beyond the cache and come back, identical, when asked for: streams, metrics pages and
resume read them back from metrics.jsonl."""

from __future__ import annotations

import pytest
from server_harness import ServerFactory, read_sse, start_run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server-memory")]


def every_metrics_page(client, run_id: str) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    metrics, evals, after = [], [], None
    while True:
        params = {"limit": "7"} | ({"after_step": str(after)} if after is not None else {})
        page = client.get(f"/api/training/runs/{run_id}/metrics", params=params).json()
        metrics += page["metrics"]
        evals += page["evals"]
        after = page["next_after_step"]
        if after is None:
            return metrics, evals


def test_logs_beyond_the_cache_are_read_back_the_same(server_factory: ServerFactory) -> None:
    server = server_factory(env={"TRAINER_EVENT_CACHE_RUNS": "1"})
    with server.client() as client:
        first = start_run(client, steps=60, log_every=10, checkpoint_every=20, eval_samples=100)
        first = wait_for(client, first["run_id"], {"succeeded", "failed"})
        before = every_metrics_page(client, first["run_id"])
        _, whole = read_sse(client, {"run_id": first["run_id"]})
        for _ in range(2):  # two more ended runs push the first one's log out of memory
            other = start_run(client, steps=20, log_every=10, eval_samples=100)
            wait_for(client, other["run_id"], {"succeeded", "failed"})
        assert in_memory(client) == 1, "only the cache's worth of ended runs keeps its log in memory"
        again = client.get(f"/api/training/runs/{first['run_id']}").json()
        assert again == first, "the run's body does not depend on its log being in memory"
        assert every_metrics_page(client, first["run_id"]) == before
        _, replay = read_sse(client, {"run_id": first["run_id"]})
        assert [e.data for e in replay.events] == [e.data for e in whole.events] and replay.closed_by_server
        _, tail = read_sse(client, {"run_id": first["run_id"]}, {"Last-Event-ID": "5"})
        assert [e.id for e in tail.events] == [e.id for e in whole.events][5:]
        assert in_memory(client) == 1


def in_memory(client) -> float:  # type: ignore[no-untyped-def]
    metrics = client.get("/metrics").text.splitlines()
    return float(next(line.split()[1] for line in metrics if line.startswith("trainer_event_logs_in_memory ")))
