"""The conformance suite passes against the real reference server (also behind a proxy that answers 201 to a
created run), the gate trusts only intact evidence, and the evidence pack tells the story."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conformance_harness import QUICK_EVAL, RunningServer
from tampering_proxy import CreatedAs201, TamperingProxy
from trainer_conformance import Options, run_suite

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("conformance-reference")]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer_conformance", *args], capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def verification(reference_server: RunningServer) -> dict[str, object]:
    """One full run of the suite (every check, default settings) with its evidence beside the server's."""
    out = str(reference_server.evidence_dir / "phase1" / "verify")
    done = cli("--base-url", reference_server.url, "--out", out, "--json")
    lines = done.stderr.strip().splitlines()
    reports = list((reference_server.evidence_dir / "phase1" / "verify").glob("*/report.json"))
    report = json.loads(reports[0].read_text()) if reports else {}
    return {"code": done.returncode, "last_line": lines[-1] if lines else "", "stdout": done.stdout,
            "stderr": done.stderr, "report": report, "folder": reports[0].parent if reports else None,
            "summary": json.loads(done.stdout) if done.stdout.strip() else {}}  # fmt: skip


def test_every_check_passes_against_the_reference_server(verification: dict[str, object]) -> None:
    report = verification["report"]
    assert isinstance(report, dict) and report, verification["stderr"]
    failed = {c["id"]: f"{c['failure']}: {c['message']}" for c in report["checks"] if c["status"] != "passed"}
    assert failed == {}
    assert verification["code"] == 0
    assert str(verification["last_line"]).startswith("trainer-conformance: PASSED")
    assert str(verification["folder"]) in str(verification["last_line"])
    # The suite's wall time on this 2-core machine (main run with defaults + two control runs).
    assert report["duration_s"] < 120
    summary = verification["summary"]
    assert isinstance(summary, dict) and summary["verdict"] == "passed" and summary["failed"] == []
    assert summary["summary"]["total"] == len(report["checks"]) == 37
    # Progress went to stderr while it ran: the readiness wait, the runs, every check's outcome.
    stderr = str(verification["stderr"])
    assert "health: ready" in stderr and "sse.rate passed" in stderr and "main run:" in stderr
    assert report["readiness"]["ready"] is True and report["profile"] == "stage1"


def test_every_check_passes_behind_a_proxy_that_answers_201_for_a_created_run(
    reference_server: RunningServer, tmp_path: Path
) -> None:
    # A 100-step main run: what differs here is the create answer; the default run is the other test's.
    with TamperingProxy(reference_server.url, CreatedAs201()) as proxy:
        outcome = run_suite(Options(base_url=proxy.url, main_request={"steps": 100, **QUICK_EVAL}), out=tmp_path)
    assert outcome.report is not None, outcome.line
    failed = {c["id"]: f"{c['failure']}: {c['message']}" for c in outcome.report["checks"] if c["status"] != "passed"}
    assert failed == {}
    create = next(c for c in outcome.report["checks"] if c["id"] == "runs.create")
    assert create["details"]["http_status"] == 201
    assert outcome.exit_code == 0 and len(outcome.report["checks"]) == 37


def test_the_verdict_rests_on_real_figures(verification: dict[str, object]) -> None:
    report = verification["report"]
    assert isinstance(report, dict)
    details = {c["id"]: c["details"] for c in report["checks"]}
    forward = details["checkpoints.forward_pass"]
    assert abs(forward["numpy_eval_accuracy"] - forward["reported_eval_accuracy"]) <= 0.01
    assert forward["numpy_eval_accuracy"] > 0.8, "the default run trains the MLP past 80% on Fashion-MNIST"
    assert details["sse.rate"]["new_state_events_in_window"] >= 10
    assert details["metrics.eval_loss_falls"]["longest_falling"] >= 3
    roles = {r["role"]: r for r in report["runs"]}
    assert roles["main"]["request"] == {} and roles["zero_lr"]["config"]["learning_rate"] == 0


def test_the_gate_passes_the_commit_and_refuses_tampered_training_evidence(
    reference_server: RunningServer, verification: dict[str, object]
) -> None:
    folder = verification["folder"]
    assert isinstance(folder, Path)
    commit = folder.name
    gate = cli("gate", "--commit", commit, "--evidence-root", str(reference_server.evidence_dir))
    assert gate.returncode == 0, gate.stdout
    assert "PASSED" in gate.stdout.strip().splitlines()[-1]
    pack = cli("pack", "--commit", commit, "--evidence-root", str(reference_server.evidence_dir))
    assert pack.returncode == 0 and "(passed)" in pack.stdout, pack.stdout + pack.stderr
    document = json.loads((folder / "evidence-pack.json").read_text())
    roles = {r["role"] for r in document["training_runs"]}
    assert document["gate"]["verdict"] == "passed" and roles == {"main", "seed", "zero_lr"}
    assert all(Path(r["folder"]).is_dir() for r in document["training_runs"])
    # Flip one byte of the main run's final checkpoint on the server's side: the gate must notice.
    report = verification["report"]
    assert isinstance(report, dict)
    main = next(r["run_id"] for r in report["runs"] if r["role"] == "main")
    checkpoint = sorted((reference_server.evidence_dir / "training" / main / "checkpoints").glob("*.safetensors"))[-1]
    original = checkpoint.read_bytes()
    try:
        checkpoint.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        refused = cli("gate", "--commit", commit, "--evidence-root", str(reference_server.evidence_dir))
        assert refused.returncode == 1
        assert checkpoint.name in refused.stdout and "REFUSED" in refused.stdout
    finally:
        checkpoint.write_bytes(original)
