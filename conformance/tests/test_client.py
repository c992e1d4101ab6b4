"""TrainerClient against the scripted server: runs, pages, a stream that drops and resumes, verified checkpoints."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from scripted_target import Breakage, ScriptedTarget
from trainer_conformance import APIError, ChecksumMismatch, TargetUnreachable, TrainerClient


def test_create_get_list_wait_and_cancel_a_run() -> None:
    with ScriptedTarget(Breakage(create_status=201)) as target, TrainerClient(target.url) as client:
        run = client.create_run(steps=200, seed=3)
        assert run.run_id.startswith("run-") and run.config["seed"] == 3 and not run.finished
        assert client.get_run(run.run_id).run_id == run.run_id
        other = client.create_run()
        assert [r.run_id for r in client.list_runs()] == [other.run_id, run.run_id]
        done = client.wait(run.run_id, timeout=20, poll_s=0.05)
        assert done.status == "succeeded" and done.finished and done.finished_at
        assert client.cancel(other.run_id).run_id == other.run_id


def test_metrics_come_in_pages_and_join() -> None:
    with ScriptedTarget() as target, TrainerClient(target.url) as client:
        run = client.create_run()
        client.wait(run.run_id, timeout=20, poll_s=0.05)
        pages = list(client.metrics_pages(run.run_id, limit=7))
        assert len(pages) == 3 and pages[-1].next_after_step is None
        steps = [m["step"] for m in client.metrics(run.run_id)]
        assert steps == [10 * k for k in range(1, 21)] == [m["step"] for p in pages for m in p.metrics]


def test_events_reconnect_with_last_event_id_and_lose_nothing() -> None:
    with ScriptedTarget(Breakage(drop_stream_after=5)) as target, TrainerClient(target.url) as client:
        run = client.create_run()
        events = list(client.events(run.run_id))
        ids = [e.id for e in events]
        assert ids == list(range(1, len(ids) + 1)) and events[-1].type == "end"
        assert [e.type for e in events].count("metric") == 20
        # Starting after an id the caller already has gives only what follows it.
        assert [e.id for e in client.events(run.run_id, last_event_id="20")] == ids[20:]


def test_a_stream_that_keeps_dropping_gives_up_after_the_reconnects() -> None:
    breakage = Breakage(drop_stream_after=0, drop_every_stream=True)
    with ScriptedTarget(breakage) as target, TrainerClient(target.url) as client:
        run = client.create_run()
        started = time.monotonic()
        with pytest.raises(TargetUnreachable, match="closed before its end event"):
            list(client.events(run.run_id, reconnects=2))
        assert 2.0 <= time.monotonic() - started < 10, "two reconnections, each after the server's retry of 1 s"


def test_checkpoints_download_verified_and_load_as_numpy(tmp_path: Path) -> None:
    with ScriptedTarget() as target, TrainerClient(target.url) as client:
        run = client.create_run()
        client.wait(run.run_id, timeout=20, poll_s=0.05)
        listed = client.checkpoints(run.run_id)
        assert [c.step for c in listed] == sorted(c.step for c in listed) and listed
        path = client.download_checkpoint(run.run_id, listed[-1].name, tmp_path)
        assert path == tmp_path / listed[-1].name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed[-1].sha256
        weights = client.load_checkpoint(run.run_id, listed[-1].name)
        assert weights["model.l1.weight"].shape == (4, 3) and weights["model.l1.weight"].dtype == np.float32


def test_a_corrupt_checkpoint_is_refused_and_not_written(tmp_path: Path) -> None:
    with ScriptedTarget(Breakage(corrupt_checkpoint=True)) as target, TrainerClient(target.url) as client:
        run = client.create_run()
        client.wait(run.run_id, timeout=20, poll_s=0.05)
        name = client.checkpoints(run.run_id)[0].name
        with pytest.raises(ChecksumMismatch, match=name):
            client.download_checkpoint(run.run_id, name, tmp_path)
        assert list(tmp_path.iterdir()) == []


def test_errors_carry_the_problem_code_and_detail() -> None:
    with ScriptedTarget() as target, TrainerClient(target.url) as client:
        with pytest.raises(APIError) as missing:
            client.get_run("run-doesnotexist")
        assert missing.value.status == 404 and missing.value.code == "run_not_found"
        run = client.create_run()
        with pytest.raises(APIError) as refused:
            client.resume(run.run_id)
        assert refused.value.code == "run_not_resumable" and "interrupted" in refused.value.detail
        with pytest.raises(APIError) as invalid:
            client.create_run(steps="many")
        assert invalid.value.status == 422


def test_no_server_is_target_unreachable() -> None:
    with TrainerClient("http://127.0.0.1:9", timeout=2) as client, pytest.raises(TargetUnreachable):
        client.get_run("run-x")
