"""The gate: a commit passes only with a passing, complete, untampered verification report whose training evidence
is still on disk exactly as the target served it when the suite ran.

Checked, in order: the folder `<root>/<profile's verify_dir>/<commit>/` (`<root>/phase1/verify/<commit>/` for
stage1) exists (a 7+ character prefix of the commit also finds it when unambiguous); SHA256SUMS covers every file and
each hash holds; report.json is valid against verification-report.schema.json, names this commit, checked this
profile's markers, ran every check (no --check selection) and passed; for each
run it names, `<root>/training/<run_id>/manifest.json` equals the manifest the suite downloaded, and every file the
manifest lists re-hashes to its recorded size and SHA-256, and its metrics.jsonl keeps the rules of an event log
(ids exactly 1..N, at most one `end` per attempt: `event_log.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .contract import Contract, default_contract
from .event_log import log_problems
from .folder import SUMS_NAME, read_sums, sha256_file
from .profile import DEFAULT_PROFILE, load_profile


@dataclass
class GateOutcome:
    """The gate's answer: passed, and every reason it did not."""

    commit: str
    folder: Path | None
    problems: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing is wrong."""
        return self.folder is not None and not self.problems


def find_folder(verify_root: Path, commit: str) -> Path | None:
    """`<verify_root>/<commit>`, or the one folder whose name and `commit` are prefixes of each other (>= 7 chars)."""
    exact = verify_root / commit
    if exact.is_dir():
        return exact
    if len(commit) < 7 or not verify_root.is_dir():
        return None
    candidates = [
        p
        for p in verify_root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and len(p.name) >= 7
        and (p.name.startswith(commit) or commit.startswith(p.name))
    ]
    return candidates[0] if len(candidates) == 1 else None


def check_sums(folder: Path) -> list[str]:
    """Problems with the folder's SHA256SUMS: missing, a hash that no longer holds, a file it does not cover."""
    sums_path = folder / SUMS_NAME
    if not sums_path.is_file():
        return [f"{sums_path} is missing"]
    sums = read_sums(sums_path.read_text())
    problems = []
    for relative, digest in sums.items():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is listed in {SUMS_NAME} but missing")
        elif sha256_file(path) != digest:
            problems.append(f"{relative} no longer matches its hash in {SUMS_NAME}")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for extra in sorted(present - set(sums) - {SUMS_NAME}):
        problems.append(f"{extra} is not covered by {SUMS_NAME}")
    return problems


def check_training_evidence(evidence_root: Path, entry: dict[str, object]) -> list[str]:
    """Problems with one run's training evidence against the manifest the suite recorded."""
    run_id = str(entry["run_id"])
    run_dir = evidence_root / str(entry["path"])
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        return [f"run {run_id}: {manifest_path} is missing"]
    try:
        on_disk = json.loads(manifest_path.read_bytes())
    except ValueError as exc:
        return [f"run {run_id}: {manifest_path} is not JSON ({exc})"]
    recorded = entry["manifest"]
    if on_disk != recorded:
        return [f"run {run_id}: {manifest_path} differs from the manifest the target served during verification"]
    problems = []
    assert isinstance(recorded, dict)
    for file in recorded["files"]:
        path = run_dir / file["path"]
        if not path.resolve().is_relative_to(run_dir.resolve()):
            problems.append(f"run {run_id}: manifest path {file['path']} leaves the run folder")
        elif not path.is_file():
            problems.append(f"run {run_id}: {path} is missing")
        elif path.stat().st_size != file["bytes"] or sha256_file(path) != file["sha256"]:
            problems.append(f"run {run_id}: {path} does not match its manifest hash")
    log_path = run_dir / "metrics.jsonl"
    if not problems and log_path.is_file():
        try:
            events = [json.loads(line) for line in log_path.read_bytes().splitlines()]
        except ValueError as exc:
            return [f"run {run_id}: {log_path} holds a line that is not JSON ({exc})"]
        problems += [f"run {run_id}: {log_path}: {p}" for p in log_problems(events)]
    return problems


def run_gate(
    commit: str, evidence_root: Path, contract: Contract | None = None, *, profile: str = DEFAULT_PROFILE
) -> GateOutcome:
    """Decide whether `commit` passes. Never raises for missing or broken evidence: those are problems."""
    contract = contract or default_contract()
    verify_root = evidence_root / load_profile(profile).verify_dir
    folder = find_folder(verify_root, commit)
    outcome = GateOutcome(commit=commit, folder=folder)
    if folder is None:
        outcome.problems.append(f"no verification folder for commit {commit} under {verify_root}")
        return outcome
    outcome.problems += check_sums(folder)
    report_path = folder / "report.json"
    try:
        report = json.loads(report_path.read_bytes())
    except (OSError, ValueError) as exc:
        outcome.problems.append(f"{report_path} is unreadable: {exc}")
        return outcome
    if schema_problems := contract.problems("verification-report", report):
        outcome.problems.append(f"{report_path} is not a valid report: {'; '.join(schema_problems[:3])}")
        return outcome
    if not (report["commit"] == folder.name and (commit.startswith(folder.name) or folder.name.startswith(commit))):
        outcome.problems.append(f"{report_path} is for commit {report['commit']}, not {commit}")
    if report.get("profile", DEFAULT_PROFILE) != profile:
        outcome.problems.append(f"the report checked profile {report.get('profile')}, not {profile}")
    if report["selected"]:
        outcome.problems.append(f"the report ran only {report['selected']}: a gate needs every check")
    if report["verdict"] != "passed":
        failed = [c["id"] for c in report["checks"] if c["status"] in ("failed", "error")]
        outcome.problems.append(f"the verification failed: {', '.join(failed) or report['verdict']}")
    for run in report["runs"]:
        if run["role"] == "main" and set(run["request"]) - {"dataset"}:
            outcome.problems.append(f"the main run was started with {run['request']}: a gate needs the defaults")
    evidence = report["training_evidence"]
    if not any(e["run_id"] == r["run_id"] for r in report["runs"] if r["role"] == "main" for e in evidence):
        outcome.problems.append("the report names no training evidence for its main run")
    for entry in evidence:
        outcome.runs.append(entry["run_id"])
        copy = folder / entry["copy"]
        if not copy.is_file() or hashlib.sha256(copy.read_bytes()).hexdigest() != entry["manifest_sha256"]:
            outcome.problems.append(f"{copy} is not the manifest the report recorded")
        outcome.problems += check_training_evidence(evidence_root, entry)
    return outcome
