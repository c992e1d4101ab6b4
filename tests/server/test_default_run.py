"""A run with the default settings on the real Fashion-MNIST: the SSE rate a client sees while it trains, and the
evaluation loss falling over its checkpoints."""

from __future__ import annotations

import time

import httpx
import pytest
from server_harness import ServerFactory, check_headers, check_json, read_sse, start_run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server-default-run")]


def test_default_run_streams_ten_new_events_in_ten_seconds_and_eval_loss_falls(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    with server.client(timeout=120) as client:
        run = start_run(client)  # every field defaulted
        assert run["config"]["steps"] >= 1000 and run["config"]["log_every"] == 10
        wait_for(client, run["run_id"], {"running"}, timeout=60)
        # Subscribe from the newest event: everything received is new training state, not replay.
        log_len = _log_length(client, run["run_id"])
        subscribed = time.monotonic()
        response, stream = read_sse(client, {"run_id": run["run_id"]}, {"Last-Event-ID": str(log_len)}, seconds=10.5)
        check_headers(response, "sse")
        in_ten = [e for e in stream.events if e.received - subscribed <= 10.0]
        ids = [int(e.id or 0) for e in in_ten]
        assert ids == sorted(set(ids)) and all(i > log_len for i in ids)
        new_state = [e for e in in_ten if e.event in ("metric", "checkpoint", "status", "end")]
        assert len(new_state) >= 10, f"only {len(new_state)} events in 10 s: {[e.event for e in in_ten]}"
        steps = [e.json()["data"]["step"] for e in in_ten if e.event == "metric"]
        assert steps == sorted(set(steps))  # each metric is a new step: no repeats
        final = wait_for(client, run["run_id"], {"succeeded", "failed", "cancelled", "interrupted"}, timeout=300)
        assert final["status"] == "succeeded", final["error"]
        metrics = check_json(
            client.get(f"/api/training/runs/{run['run_id']}/metrics", params={"limit": 1000}), "metrics.schema.json"
        )
        losses = [e["eval_loss"] for e in metrics["evals"]]
        assert len(losses) >= 3, losses
        assert losses[-1] < losses[0] and min(losses[1:]) < losses[0], losses
        assert metrics["evals"][-1]["eval_accuracy"] > 0.8
        assert metrics["evals"][-1].get("eval_samples") in (None, 10_000)


def _log_length(client: httpx.Client, run_id: str) -> int:
    """How many events the run has logged now (read from its durable log through the evidence endpoint)."""
    response = client.get(f"/api/training/runs/{run_id}/evidence/metrics.jsonl")
    return len(response.text.splitlines())
