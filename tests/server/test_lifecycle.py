"""The run state table and the folding of events into a run's view (the same code at run time and at recovery)."""

from __future__ import annotations

import re

import pytest
from server_harness import CONTRACT

from reference_server.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Run,
    RunStatus,
    check_transition,
    new_run_id,
)


def test_every_state_is_in_the_table_and_the_schema() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    assert {str(s) for s in RunStatus} == set(CONTRACT.documents["common.schema.json"]["$defs"]["run_status"]["enum"])


def test_terminal_states_have_no_way_out_and_every_active_state_can_end_interrupted() -> None:
    assert {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED} == TERMINAL
    for state in set(RunStatus) - TERMINAL:
        assert {RunStatus.INTERRUPTED, RunStatus.CANCELLED, RunStatus.FAILED} <= TRANSITIONS[state]
    with pytest.raises(InvalidTransition):
        check_transition(RunStatus.SUCCEEDED, RunStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition(RunStatus.QUEUED, RunStatus.SUCCEEDED)  # a run succeeds only after it ran


def test_run_ids_match_the_contract_and_do_not_repeat() -> None:
    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000
    pattern = CONTRACT.documents["common.schema.json"]["$defs"]["run_id"]["pattern"]
    for run_id in ids:
        assert re.fullmatch(pattern, run_id)
        assert len(run_id) == 24 and run_id.startswith("run-") and int(run_id[4:], 16) >= 0


def test_folding_events_builds_the_view() -> None:
    config = {"steps": 20}
    run = Run(run_id="run-0123456789abcdef0123", config=config, created_at="2025-01-01T00:00:00Z", seq=1)
    t = "2025-01-01T00:00:01Z"
    events = [
        ("status", {"status": "queued", "step": 0, "total_steps": 20}),
        ("status", {"status": "running", "step": 0, "total_steps": 20, "device": "CPU"}),
        ("metric", {"step": 10, "loss": 0.9, "accuracy": 0.7}),
        ("checkpoint", {"step": 10, "name": "step-000010.safetensors", "eval_loss": 0.8, "eval_accuracy": 0.71,
                        "sha256": "a" * 64, "bytes": 100}),
        ("metric", {"step": 20, "loss": 0.6, "accuracy": 0.8}),
        ("end", {"status": "succeeded", "error": None, "step": 20}),
    ]  # fmt: skip
    for i, (kind, data) in enumerate(events, start=1):
        run.apply({"id": i, "run_id": run.run_id, "type": kind, "time": t, "data": data})
    assert run.status is RunStatus.SUCCEEDED and run.step == 20 and run.device == "CPU"
    assert [m["step"] for m in run.metrics] == [10, 20] and run.checkpoints[0]["name"] == "step-000010.safetensors"
    page = run.metrics_page(None, 1)
    assert [m["step"] for m in page["metrics"]] == [10] and [e["step"] for e in page["evals"]] == [10]
    assert page["next_after_step"] == 10
    assert run.metrics_page(10, 1) | {"metrics": None} == {"run_id": run.run_id, "metrics": None, "evals": [],
                                                          "next_after_step": None}  # fmt: skip
