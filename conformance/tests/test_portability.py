"""What another implementation may do differently and still conform: 201/202 for a created run, another stage
profile, a readiness probe that takes a while; and failures that say why in the target's own words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_target import Breakage, ScriptedTarget
from trainer_conformance import profile as profiles
from trainer_conformance.contract import default_contract
from trainer_conformance.runner import run_suite
from trainer_conformance.session import Options


def verify(tmp_path: Path, breakage: Breakage, patterns: list[str], **options: Any) -> dict[str, Any]:
    with ScriptedTarget(breakage) as target:
        outcome = run_suite(Options(base_url=target.url, timeout=20, **options), out=tmp_path, patterns=patterns)
    assert outcome.report is not None, outcome.line
    return outcome.report


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


@pytest.mark.parametrize("status", [201, 202])
def test_a_run_created_with_201_or_202_and_a_location_conforms(tmp_path: Path, status: int) -> None:
    report = verify(tmp_path, Breakage(create_status=status), ["runs", "checkpoints.listed", "sse.ids"])
    assert set(statuses(report).values()) == {"passed"}, report["checks"]
    create = next(c for c in report["checks"] if c["id"] == "runs.create")
    assert create["details"]["http_status"] == status and create["details"]["location"].startswith("/api/")


def test_another_status_for_a_created_run_fails_runs_create(tmp_path: Path) -> None:
    report = verify(tmp_path, Breakage(create_status=204), ["runs.create"])
    assert statuses(report) == {"runs.create": "failed"}


@pytest.fixture
def stage2() -> Iterator[None]:
    """A second profile, as a project would add one to profiles.json."""
    document = dict(profiles._document())
    document["stage2"] = {"description": "phase 2", "headers": {"X-Phase": "stage2", "X-Mocks": "false"},
                          "health": {"phase": "stage2", "mocks": False}, "verify_dir": "phase2/verify"}  # fmt: skip
    original = profiles._document
    profiles._document = lambda: document  # type: ignore[assignment]
    profiles.load_profile.cache_clear()
    default_contract.cache_clear()
    yield
    profiles._document = original  # type: ignore[assignment]
    profiles.load_profile.cache_clear()
    default_contract.cache_clear()


def test_another_phase_is_verified_by_naming_its_profile(tmp_path: Path, stage2: None) -> None:
    target = Breakage(phase="stage2")
    assert set(statuses(verify(tmp_path / "a", target, ["health"], profile="stage2")).values()) == {"passed"}
    failed = statuses(verify(tmp_path / "b", target, ["health"]))
    assert failed == {"health.liveness": "failed", "health.readiness": "failed", "health.request_id_echo": "passed",
                      "health.headers": "failed"}  # fmt: skip
    report = verify(tmp_path / "c", Breakage(), ["health.liveness"], profile="stage2")
    assert report["profile"] == "stage2" and statuses(report) == {"health.liveness": "failed"}


def test_the_profile_names_the_verification_folder(
    tmp_path: Path, stage2: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with ScriptedTarget(Breakage(phase="stage2")) as target:
        outcome = run_suite(Options(base_url=target.url, profile="stage2"), patterns=["health.liveness"])
    assert outcome.folder == Path("evidence/phase2/verify/partial-abc1234def5678")  # one check: a partial run
    assert (tmp_path / "evidence/phase2/verify/partial-abc1234def5678/report.json").is_file()


def test_the_suite_waits_for_readiness_and_records_the_wait(tmp_path: Path) -> None:
    report = verify(tmp_path, Breakage(not_ready_for_s=1.0), ["health"])
    assert set(statuses(report).values()) == {"passed"}
    readiness = report["readiness"]
    assert readiness["ready"] is True and readiness["probes"] >= 2 and 0.5 <= readiness["waited_s"] < 5
    assert any("waited" in note for note in report["notes"])


def test_a_target_that_never_gets_ready_fails_readiness_after_the_timeout(tmp_path: Path) -> None:
    report = verify(tmp_path, Breakage(not_ready_for_s=60), ["health.readiness"], ready_timeout=0.6)
    assert statuses(report) == {"health.readiness": "failed"}
    assert report["readiness"]["ready"] is False and report["readiness"]["waited_s"] < 3
    assert "answered 503" in report["checks"][0]["message"]


def test_an_unexpected_status_names_the_problems_code_and_detail(tmp_path: Path) -> None:
    report = verify(tmp_path, Breakage(refuse_create=True), ["runs.create"])
    check = report["checks"][0]
    assert check["status"] == "failed"
    assert "answered 409 (dataset_not_verified: dataset fashion-mnist is not verified: import it)" in check["message"]
    folder = tmp_path / report["commit"]
    assert "dataset_not_verified: dataset fashion-mnist is not verified" in (folder / "discrepancies.md").read_text()
    assert json.loads((folder / "report.json").read_text())["checks"][0]["message"] == check["message"]
