"""/metrics through prometheus-client: the exposition parses with the library's own parser, counters never go
down (across a crash, a resume and a cancel), and steps are counted as they are trained, re-trained ones again."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import ServerFactory, ServerProcess, start_run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server-metrics")]


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, float]]:
    """Every sample by (name, labels): (its family's type, value)."""
    with server.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = (family.type, sample.value)
    return samples


def counters_never_fall(before: dict, after: dict) -> None:  # type: ignore[type-arg]
    for key, (kind, value) in before.items():
        if kind == "counter" and key[0].endswith("_total"):
            assert after[key][1] >= value, f"{key} went down: {value} -> {after[key][1]}"


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), ("", 0.0))[1]


def test_counters_only_go_up_and_steps_count_as_trained(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as client:
        run = start_run(client, steps=200, log_every=10, checkpoint_every=40, eval_samples=100)
        deadline = time.monotonic() + 120
        while True:  # two checkpoints, and steps trained past the last one (they will be trained again)
            now = client.get(f"/api/training/runs/{run['run_id']}").json()
            if len(now["checkpoints"]) >= 2 and now["progress"]["step"] > now["checkpoints"][-1]["step"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = int(re.search(rf"run {run['run_id']}: trainer started, pid (\d+)", server.log()).group(1))  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
        crashed = wait_for(client, run["run_id"], {"failed"})
        first = scrape(server)
        assert client.post(f"/api/training/runs/{run['run_id']}/resume").status_code == 202
        done = wait_for(client, run["run_id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        second = scrape(server)
        long = start_run(client, steps=100_000, log_every=10, eval_samples=100)
        wait_for(client, long["run_id"], {"running"})
        client.post(f"/api/training/runs/{long['run_id']}/cancel")
        wait_for(client, long["run_id"], {"cancelled"})
        third = scrape(server)
    counters_never_fall(first, second)
    counters_never_fall(second, third)
    # Steps as trained: the first attempt up to its crash, then again from the checkpoint it resumed from.
    resumed_from = next(
        json.loads(line)["data"]["step"]
        for line in (server.evidence_dir / "training" / run["run_id"] / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["data"].get("resumed_from")
    )
    assert value(first, "trainer_steps_trained_total") == crashed["progress"]["step"]
    assert value(second, "trainer_steps_trained_total") == crashed["progress"]["step"] + (200 - resumed_from)
    assert value(second, "trainer_steps_trained_total") > 200, "re-trained steps count again"
    assert value(first, "trainer_runs_ended_total", status="failed") == 1
    assert value(second, "trainer_runs_ended_total", status="succeeded") == 1
    assert value(third, "trainer_runs_ended_total", status="cancelled") == 1
    assert value(third, "trainer_runs_started_total") == 3
    assert value(second, "trainer_checkpoints_written_total") >= 5
    assert value(second, "trainer_checkpoint_bytes_written_total") > 0
    assert (
        value(third, "trainer_runs", status="succeeded") == 1 and value(third, "trainer_runs", status="cancelled") == 1
    )
    assert value(third, "process_resident_memory_bytes") > 0 and value(third, "process_open_fds") > 0
