"""report.json, junit.xml, discrepancies.md, SHA256SUMS, CODEOWNERS, and the gate over folders written here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from trainer_conformance import checks as _checks  # noqa: F401  (registers the checks)
from trainer_conformance.cli import main
from trainer_conformance.contract import default_contract
from trainer_conformance.folder import VerifyFolder, read_sums
from trainer_conformance.gate import run_gate
from trainer_conformance.owners import CodeOwners
from trainer_conformance.pack import PACK_MARKDOWN, ci_run_url, write_pack
from trainer_conformance.registry import select
from trainer_conformance.report import (
    CheckResult,
    assign_owners,
    build_report,
    render_discrepancies,
    write_junit,
    write_report,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RUN_ID = "run-0123456789ab"


def log_lines(*kinds: str) -> bytes:
    """A metrics.jsonl of events of these types, ids 1..N."""
    data = {"status": {"status": "queued"}, "metric": {"step": 1, "loss": 1.0, "accuracy": 0.1},
            "end": {"status": "succeeded", "error": None}}  # fmt: skip
    events = [{"id": i, "run_id": RUN_ID, "type": k, "time": "2025-01-01T00:00:00Z", "data": data[k]}
              for i, k in enumerate(kinds, start=1)]  # fmt: skip
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def write_training_evidence(root: Path, metrics: bytes | None = None) -> dict[str, Any]:
    run_dir = root / "training" / RUN_ID
    files = {
        "config.json": b'{"a": 1}\n',
        "metrics.jsonl": metrics if metrics is not None else log_lines("status", "metric", "end"),
        "checkpoints/step-000010.safetensors": b"\0" * 64,
    }
    for name, data in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    manifest = {
        "run_id": RUN_ID,
        "status": "succeeded",
        "created_at": "2025-01-01T00:00:00Z",
        "files": [{"path": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in files.items()],
    }
    (run_dir / "manifest.json").write_bytes(json.dumps(manifest, indent=2).encode())
    return manifest


def results(failing: str | None = None) -> list[CheckResult]:
    out = []
    for check in select():
        if check.id == failing:
            out.append(CheckResult(check, "failed", 0.5, "Too few events", "3 events in 10 s", {}, ["sse/main.raw"]))
        else:
            out.append(CheckResult(check, "passed", 0.01, details={"n": 1}))
    return out


def write_verification(root: Path, *, failing: str | None = None, selected: list[str] | None = None,
                       commit: str = COMMIT, main_request: dict[str, Any] | None = None,
                       metrics: bytes | None = None) -> Path:  # fmt: skip
    manifest = write_training_evidence(root, metrics)
    folder = VerifyFolder(root / "phase1" / "verify" / commit)
    served = (root / "training" / RUN_ID / "manifest.json").read_bytes()
    copy = folder.write_bytes(f"training/main-{RUN_ID}/manifest.json", served)
    folder.write_bytes("sse/main.raw", b"id: 1\ndata: {}\n\n")
    got = results(failing)
    report = build_report(
        got,
        suite={"name": "trainer-conformance", "version": "0.1.0"},
        target={"base_url": "http://127.0.0.1:1", "version": "0.1.0", "commit_header": commit},
        commit=commit,
        commit_source="header",
        started_at="2025-01-01T00:00:00Z",
        finished_at="2025-01-01T00:00:30Z",
        duration_s=30.0,
        selected=selected or [],
        runs=[{"role": "main", "run_id": RUN_ID, "status": "succeeded", "request": main_request or {}, "config": None}],
        training_evidence=[
            {
                "run_id": RUN_ID,
                "path": f"training/{RUN_ID}",
                "manifest_sha256": hashlib.sha256(served).hexdigest(),
                "manifest": manifest,
                "copy": copy,
            }
        ],
    )
    write_report(folder, report, default_contract())
    write_junit(folder, got, report["started_at"], 30.0)
    folder.write_text("discrepancies.md", render_discrepancies(report, got, Path("evidence/phase1/verify") / commit))
    folder.write_sums()
    return folder.publish()


def test_report_junit_and_sums_are_written_and_consistent(tmp_path: Path) -> None:
    folder = write_verification(tmp_path, failing="sse.rate")
    report = json.loads((folder / "report.json").read_text())
    assert default_contract().problems("verification-report", report) == []
    assert report["verdict"] == "failed" and report["summary"]["failed"] == 1
    suite = ET.parse(folder / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == str(len(select()))
    failure = suite.find("testcase[@name='sse.rate']/failure")
    assert failure is not None and failure.get("message") == "Too few events" and "sse/main.raw" in (failure.text or "")
    sums = read_sums((folder / "SHA256SUMS").read_text())
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(sums) == on_disk
    # The file is in `sha256sum -c` format.
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not list(tmp_path.glob("phase1/verify/.*")), "the partial folder was left behind"


def test_discrepancies_cite_exact_paths_and_codeowners() -> None:
    owners = CodeOwners("* @everyone\nreference_server/ @server-team\n/schemas/event.schema.json @contract\n")
    got = results(failing="sse.rate")
    assign_owners(got, owners)
    report = {"commit": COMMIT, "target": {"base_url": "http://x"}, "suite": {"version": "0.1.0"}, "verdict": "failed",
              "summary": {"passed": 1, "failed": 1, "error": 0, "skipped": 0}}  # fmt: skip
    text = render_discrepancies(report, got, Path("evidence/phase1/verify") / COMMIT)
    assert "### `sse.rate`" in text
    assert f"`evidence/phase1/verify/{COMMIT}/sse/main.raw`" in text
    assert "**Owners:** @contract @everyone @server-team" in text
    assert "health.liveness" not in text


def test_codeowners_last_match_wins_and_patterns_follow_github() -> None:
    owners = CodeOwners("*.py @py\n/docs/ @docs\nschemas/*.json @schema\nreference_server/ @srv\n# comment\n")
    assert owners.owners_of("reference_server/app.py") == ["@srv"]
    assert owners.owners_of("conformance/x.py") == ["@py"]
    assert owners.owners_of("docs/a/b.md") == ["@docs"]
    assert owners.owners_of("schemas/run.schema.json") == ["@schema"]
    assert owners.owners_of("other/schemas/run.schema.json") == []
    assert owners.owners_of("README.md") == []


def test_gate_passes_a_complete_passing_verification_with_intact_training_evidence(tmp_path: Path) -> None:
    write_verification(tmp_path)
    outcome = run_gate(COMMIT, tmp_path)
    assert outcome.problems == [] and outcome.passed
    assert outcome.runs == [RUN_ID]
    assert run_gate(COMMIT[:12], tmp_path).passed, "a unique prefix of the commit finds the folder"


def test_gate_refuses_a_failed_verification(tmp_path: Path) -> None:
    write_verification(tmp_path, failing="sse.rate")
    outcome = run_gate(COMMIT, tmp_path)
    assert not outcome.passed and any("sse.rate" in p for p in outcome.problems)


def test_gate_refuses_a_partial_verification(tmp_path: Path) -> None:
    write_verification(tmp_path, selected=["health"])
    assert any("every check" in p for p in run_gate(COMMIT, tmp_path).problems)


def test_gate_refuses_a_verification_whose_main_run_was_not_the_default(tmp_path: Path) -> None:
    write_verification(tmp_path, main_request={"steps": 10})
    assert any("needs the defaults" in p for p in run_gate(COMMIT, tmp_path).problems)
    write_verification(tmp_path / "other", main_request={"dataset": "mnist"})
    assert run_gate(COMMIT, tmp_path / "other").passed


def test_gate_refuses_a_missing_verification(tmp_path: Path) -> None:
    outcome = run_gate("feedbeef", tmp_path)
    assert not outcome.passed and "no verification folder" in outcome.problems[0]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("training/run-0123456789ab/checkpoints/step-000010.safetensors", "does not match its manifest hash"),
        ("training/run-0123456789ab/manifest.json", "differs from the manifest"),
        (f"phase1/verify/{COMMIT}/sse/main.raw", "no longer matches its hash"),
        (f"phase1/verify/{COMMIT}/report.json", "report.json no longer matches"),
    ],
)
def test_gate_refuses_tampered_evidence_on_either_side(tmp_path: Path, target: str, expected: str) -> None:
    write_verification(tmp_path)
    path = tmp_path / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    outcome = run_gate(COMMIT, tmp_path)
    assert not outcome.passed
    assert any(expected in p for p in outcome.problems), outcome.problems


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("status", "metric", "end", "metric", "end"), "after its attempt's end"),
        (("metric", "status", "end"), "line 1 is a 'metric' event"),
    ],
)
def test_gate_refuses_a_log_that_breaks_its_rules_even_when_the_manifest_matches_it(
    tmp_path: Path, kinds: tuple[str, ...], expected: str
) -> None:
    write_verification(tmp_path, metrics=log_lines(*kinds))
    outcome = run_gate(COMMIT, tmp_path)
    assert not outcome.passed and any(expected in p for p in outcome.problems), outcome.problems


def test_gate_refuses_a_log_with_repeated_ids(tmp_path: Path) -> None:
    lines = log_lines("status", "metric", "end").splitlines(keepends=True)
    write_verification(tmp_path, metrics=lines[0] + lines[1] + lines[1] + lines[2])
    outcome = run_gate(COMMIT, tmp_path)
    assert any("has id 2, expected 3" in p for p in outcome.problems), outcome.problems


def test_gate_refuses_missing_training_evidence_and_unlisted_files(tmp_path: Path) -> None:
    write_verification(tmp_path)
    (tmp_path / "training" / RUN_ID / "config.json").unlink()
    (tmp_path / "phase1" / "verify" / COMMIT / "extra.txt").write_text("added later")
    problems = run_gate(COMMIT, tmp_path).problems
    assert any("config.json is missing" in p for p in problems)
    assert any("extra.txt is not covered" in p for p in problems)


def test_gate_refuses_a_verification_of_another_profile(tmp_path: Path) -> None:
    folder = write_verification(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    assert report.get("profile", "stage1") == "stage1"
    assert not run_gate(COMMIT, tmp_path, profile="stage1").problems
    with pytest.raises(KeyError, match="no profile"):
        run_gate(COMMIT, tmp_path, profile="stage9")


def test_the_evidence_pack_names_verdict_runs_and_discrepancies_and_keeps_the_gate_passing(tmp_path: Path) -> None:
    folder = write_verification(tmp_path)
    written = write_pack(COMMIT, tmp_path, environ={})
    assert written.verdict == "passed" and written.markdown == folder / PACK_MARKDOWN
    pack = json.loads(written.json.read_text())
    assert pack["commit"] == COMMIT and pack["gate"] == {"verdict": "passed", "problems": []}
    assert pack["ci_run_url"] is None and pack["verification"]["folder"] == folder.as_posix()
    manifest_sha = json.loads((folder / "report.json").read_text())["training_evidence"][0]["manifest_sha256"]
    assert pack["training_runs"] == [{"role": "main", "run_id": RUN_ID, "status": "succeeded",
                                      "folder": (tmp_path / "training" / RUN_ID).as_posix(),
                                      "manifest_sha256": manifest_sha}]  # fmt: skip
    text = written.markdown.read_text()
    assert "**PASSED**" in text and manifest_sha in text and "None: every check passed." in text
    assert run_gate(COMMIT, tmp_path).passed, "the pack's two files are covered by SHA256SUMS"
    # Packing again replaces the pack and its two SHA256SUMS lines.
    write_pack(COMMIT, tmp_path, environ={"CI_RUN_URL": "https://ci.example/run/7"})
    assert run_gate(COMMIT, tmp_path).passed
    assert json.loads(written.json.read_text())["ci_run_url"] == "https://ci.example/run/7"
    assert (folder / "SHA256SUMS").read_text().count(PACK_MARKDOWN) == 1


def test_the_evidence_pack_of_a_failed_verification_lists_each_discrepancy_with_its_owners(tmp_path: Path) -> None:
    folder = write_verification(tmp_path, failing="sse.rate")
    report = json.loads((folder / "report.json").read_text())
    written = write_pack(COMMIT, tmp_path, environ={})
    pack = json.loads(written.json.read_text())
    assert written.verdict == "refused" and [d["id"] for d in pack["discrepancies"]] == ["sse.rate"]
    assert pack["discrepancies"][0]["message"] == "3 events in 10 s" and report["verdict"] == "failed"
    text = written.markdown.read_text()
    assert "**REFUSED**" in text and "`sse.rate` (" in text and "`sse/main.raw`" in text
    assert "Why the gate refused" in text


def test_writing_a_pack_never_re_blesses_a_changed_file(tmp_path: Path) -> None:
    folder = write_verification(tmp_path)
    (folder / "sse" / "main.raw").write_bytes(b"changed after the verification\n")
    written = write_pack(COMMIT, tmp_path, environ={})
    assert written.verdict == "refused"
    assert any("main.raw no longer matches" in p for p in run_gate(COMMIT, tmp_path).problems)


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, None),
        ({"CI_RUN_URL": "https://ci.example/1", "GITHUB_ACTIONS": "true"}, "https://ci.example/1"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r",
          "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1"}, "https://github.com/o/r/actions/runs/42"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2"},
         "https://github.com/o/r/actions/runs/42/attempts/2"),
        ({"GITLAB_CI": "true", "CI_JOB_URL": "https://gitlab.example/o/r/-/jobs/9"}, "https://gitlab.example/o/r/-/jobs/9"),
    ],
)  # fmt: skip
def test_the_ci_run_url_comes_from_the_ci_environment(environ: dict[str, str], url: str | None) -> None:
    assert ci_run_url(environ) == url


def test_pack_command_prints_the_pack_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_verification(tmp_path)
    assert main(["pack", "--commit", COMMIT, "--evidence-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"trainer-conformance pack: {folder / PACK_MARKDOWN} (passed)"
    assert main(["pack", "--commit", "feedbeef", "--evidence-root", str(tmp_path)]) == 1
