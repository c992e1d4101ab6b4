"""The conformance suite passes against the real reference server, and the gate trusts only intact evidence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conformance_harness import RunningServer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("conformance-reference")]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer_conformance", *args], capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def verification(reference_server: RunningServer) -> dict[str, object]:
    """One full run of the suite (every check, default settings) with its evidence beside the server's."""
    done = cli("--base-url", reference_server.url, "--out", str(reference_server.evidence_dir / "phase1" / "verify"))
    lines = done.stdout.strip().splitlines()
    reports = list((reference_server.evidence_dir / "phase1" / "verify").glob("*/report.json"))
    report = json.loads(reports[0].read_text()) if reports else {}
    return {"code": done.returncode, "last_line": lines[-1] if lines else "", "stdout": done.stdout,
            "stderr": done.stderr, "report": report, "folder": reports[0].parent if reports else None}  # fmt: skip


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
