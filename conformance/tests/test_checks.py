"""Each check against a small scripted server: it passes a correct one and fails one broken in one way."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_target import Breakage, ScriptedTarget
from trainer_conformance import Options, run_suite
from trainer_conformance.registry import select
from trainer_conformance.runner import SuiteOutcome

#: What the scripted server can honestly pass: everything except what needs real training (forward pass,
#: provenance of real datasets, seed and learning-rate controls), which the integration tests cover.
SCRIPTABLE = ["health", "runs", "metrics", "sse", "evidence.files", "evidence.manifest_hashes", "evidence.event_log",
              "checkpoints.listed", "checkpoints.download", "checkpoints.loadable", "checkpoints.differ",
              "health.request_id_echo", "mocks.clock", "mocks.polls_differ", "mocks.run_ids_unique",
              "mocks.sse_new_state", "errors"]  # fmt: skip


def run(tmp_path: Path, breakage: Breakage, patterns: list[str], timeout: float = 20) -> SuiteOutcome:
    with ScriptedTarget(breakage) as target:
        return run_suite(Options(base_url=target.url, timeout=timeout), out=tmp_path, patterns=patterns)


def statuses(outcome: SuiteOutcome) -> dict[str, str]:
    assert outcome.report is not None
    return {c["id"]: c["status"] for c in outcome.report["checks"]}


def test_a_correct_server_passes_every_scriptable_check(tmp_path: Path) -> None:
    outcome = run(tmp_path, Breakage(), SCRIPTABLE)
    failed = {k: v for k, v in statuses(outcome).items() if v != "passed"}
    assert failed == {}, outcome.report and [c for c in outcome.report["checks"] if c["status"] != "passed"]
    assert outcome.exit_code == 0
    assert "PASSED" in outcome.line and str(tmp_path) in outcome.line


def test_real_training_checks_fail_against_a_server_that_only_replays_a_script(tmp_path: Path) -> None:
    outcome = run(tmp_path, Breakage(), ["mocks.zero_learning_rate", "checkpoints.forward_pass"])
    got = statuses(outcome)
    # The scripted checkpoints change with learning rate 0, and the server serves no dataset files.
    assert got == {"mocks.zero_learning_rate": "failed", "checkpoints.forward_pass": "failed"}
    assert outcome.exit_code == 1


BROKEN = [
    pytest.param(Breakage(mocks=True), ["health"], {"health.liveness", "health.readiness", "health.headers"},
                 id="mocks-true"),
    pytest.param(Breakage(drop_header="X-Content-Type-Options"), ["health", "errors.unknown_run"],
                 {"health.liveness", "health.readiness", "health.headers", "errors.unknown_run"}, id="missing-header"),
    pytest.param(Breakage(no_echo=True), ["health.request_id_echo"], {"health.request_id_echo"}, id="no-id-echo"),
    pytest.param(Breakage(slow_sse=True), ["sse.rate", "sse.ids", "mocks.sse_new_state"],
                 {"sse.rate", "mocks.sse_new_state"}, id="too-few-events"),
    pytest.param(Breakage(padded_sse=True), ["sse.ids", "sse.agrees_with_metrics", "mocks.sse_new_state"],
                 {"sse.ids", "sse.agrees_with_metrics", "mocks.sse_new_state"}, id="heartbeat-padded-repeats"),
    pytest.param(Breakage(repeat_events=True), ["sse.ids", "mocks.sse_new_state"],
                 {"sse.ids", "mocks.sse_new_state"}, id="repeated-events"),
    pytest.param(Breakage(skip_ids=True), ["sse.ids", "sse.payloads"], {"sse.ids"}, id="ids-skip"),
    pytest.param(Breakage(ignore_last_event_id=True), ["sse.replay", "sse.final_event"], {"sse.replay"},
                 id="no-replay"),
    pytest.param(Breakage(corrupt_checkpoint=True), ["checkpoints.listed", "checkpoints.download"],
                 {"checkpoints.download"}, id="corrupt-checkpoint"),
    pytest.param(Breakage(canned_times=True), ["mocks.clock", "sse.payloads"], {"mocks.clock"}, id="canned-times"),
    pytest.param(Breakage(flat_eval_loss=True), ["metrics"], {"metrics.eval_loss_falls"}, id="flat-eval-loss"),
    pytest.param(Breakage(unknown_run_ok=True), ["errors"], {"errors.unknown_run"}, id="unknown-run-200"),
    pytest.param(Breakage(errors_as_json=True), ["errors"],
                 {"errors.unknown_run", "errors.invalid_body", "errors.wrong_method"}, id="errors-not-problem-json"),
    pytest.param(Breakage(no_405=True), ["errors"], {"errors.wrong_method"}, id="no-405"),
]  # fmt: skip


@pytest.mark.parametrize(("breakage", "patterns", "expected"), BROKEN)
def test_a_server_broken_in_one_way_fails_exactly_the_checks_for_it(
    tmp_path: Path, breakage: Breakage, patterns: list[str], expected: set[str]
) -> None:
    outcome = run(tmp_path, breakage, patterns)
    got = statuses(outcome)
    assert {k for k, v in got.items() if v in ("failed", "error")} == expected, outcome.report
    assert outcome.exit_code == 1
    for check in outcome.report["checks"] if outcome.report else []:
        if check["status"] == "failed":
            assert check["evidence"], f"{check['id']} failed without citing evidence"
            assert all((outcome.folder / e).exists() for e in check["evidence"] if "/" in e and e[0] != "/")


def test_a_run_that_never_finishes_fails_within_the_timeout(tmp_path: Path) -> None:
    outcome = run(tmp_path, Breakage(never_finish=True), ["runs.finishes", "sse.final_event"], timeout=3)
    got = statuses(outcome)
    assert got == {"runs.finishes": "failed", "sse.final_event": "skipped"}
    assert outcome.folder is not None
    # The suite cancels what it started and could not wait for.
    assert any(p.name.endswith("_cancel.http") for p in (outcome.folder / "probes").iterdir())


def test_frozen_status_documents_are_detected(tmp_path: Path) -> None:
    outcome = run(tmp_path, Breakage(frozen_polls=True), ["mocks.polls_differ"], timeout=2)
    assert statuses(outcome) == {"mocks.polls_differ": "failed"}


def test_a_renamed_check_is_still_selected_by_its_old_id() -> None:
    assert [c.id for c in select(["mocks.request_id_echo"])] == ["health.request_id_echo"]
