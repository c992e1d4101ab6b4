"""`python -m reference_server verify-evidence DIR...`: check run folders against their manifests.

A run's manifest.json lists every other file of the folder with its size and sha256. The audit re-hashes each one,
names every file that changed, went missing or appeared unlisted, checks that metrics.jsonl keeps the rules of an
event log (ids exactly 1..N, at most one `end` per attempt), and cross-checks each checkpoint file against the
sha256 its `checkpoint` event recorded in metrics.jsonl. It needs only the folder (no server, no tinygrad).

The manifest is tamper evidence, not a signature: someone who rewrites a file *and* the manifest consistently is only
caught against a manifest digest kept elsewhere, which is why the audit prints the manifest's own sha256.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from trainer_tinygrad.files import sha256_file

from ..lifecycle import RUN_ID_PATTERN
from ..schemas import Contract, default_contract
from .integrity import log_problems
from .store import CHECKPOINTS, EVENTS, MANIFEST

#: A finding's state; everything but OK makes the folder fail.
OK, CHANGED, MISSING, UNLISTED, INVALID = "ok", "changed", "missing", "unlisted", "invalid"


@dataclass(frozen=True)
class Finding:
    """What the audit found for one file of a run folder."""

    path: str  # relative to the run folder, as the manifest writes it
    state: str
    detail: str


@dataclass(frozen=True)
class RunAudit:
    """One run folder's audit."""

    directory: Path
    manifest_sha256: str | None
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        """True when every file matches the manifest and every checkpoint its event."""
        return bool(self.findings) and all(f.state == OK for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (for `--json`)."""
        return {
            "directory": str(self.directory),
            "ok": self.ok,
            "manifest_sha256": self.manifest_sha256,
            "findings": [asdict(f) for f in self.findings],
        }


def audit_run(directory: Path, contract: Contract | None = None) -> RunAudit:
    """Check one run folder against its manifest.json (and its checkpoints against metrics.jsonl)."""
    contract = contract or default_contract()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return RunAudit(directory, None, [Finding(MANIFEST, MISSING, "no manifest: the run has not ended")])
    manifest_sha, _ = sha256_file(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except ValueError as exc:
        return RunAudit(directory, manifest_sha, [Finding(MANIFEST, INVALID, f"not JSON: {exc}")])
    errors = contract.errors("evidence-manifest.schema.json", manifest)
    if errors:
        detail = f"does not match evidence-manifest.schema.json: {errors[0].message}"
        return RunAudit(directory, manifest_sha, [Finding(MANIFEST, INVALID, detail)])
    findings: list[Finding] = []
    if manifest["run_id"] != directory.name:
        findings.append(Finding(MANIFEST, INVALID, f"names run {manifest['run_id']}, the folder is {directory.name}"))
    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        relative = str(entry["path"])
        listed[relative] = entry
        findings.append(_check_listed(directory, relative, entry))
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and not path.name.startswith(".") and relative != MANIFEST and relative not in listed:
            findings.append(Finding(relative, UNLISTED, "present in the folder but not in the manifest"))
    findings.extend(_check_checkpoint_events(directory, listed))
    return RunAudit(directory, manifest_sha, findings)


def _check_listed(directory: Path, relative: str, entry: dict[str, Any]) -> Finding:
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or not parts:
        return Finding(relative, INVALID, "the manifest names a path outside the run folder")
    path = directory.joinpath(*parts)
    if not path.is_file():
        return Finding(relative, MISSING, "listed in the manifest but not in the folder")
    digest, size = sha256_file(path)
    if digest != entry["sha256"] or size != entry["bytes"]:
        return Finding(
            relative, CHANGED, f"sha256 {digest} ({size} bytes); the manifest says {entry['sha256']} ({entry['bytes']})"
        )
    return Finding(relative, OK, f"{size} bytes, sha256 {digest}")


def _check_checkpoint_events(directory: Path, listed: dict[str, dict[str, Any]]) -> list[Finding]:
    """metrics.jsonl against the rules of an event log (ids 1..N, one `end` per attempt), and each checkpoint event
    against the manifest entry of its file (both are evidence)."""
    events_path = directory / EVENTS
    if EVENTS not in listed or not events_path.is_file():
        return []
    findings = []
    events = []
    for number, raw in enumerate(events_path.read_bytes().splitlines(), start=1):
        try:
            event = json.loads(raw)
        except ValueError:
            return [Finding(EVENTS, INVALID, f"line {number} is not JSON")]
        if not isinstance(event, dict):
            return [Finding(EVENTS, INVALID, f"line {number} is not an event")]
        events.append(event)
    problems = log_problems(events)
    if problems:
        findings.append(Finding(EVENTS, INVALID, "; ".join(problems)))
    for number, event in enumerate(events, start=1):
        if event.get("type") != "checkpoint":
            continue
        data = event.get("data") or {}
        relative = f"{CHECKPOINTS}/{data.get('name')}"
        entry = listed.get(relative)
        where = f"{EVENTS} line {number} ({relative})"
        if entry is None:
            findings.append(Finding(where, MISSING, "the checkpoint event names a file the manifest does not list"))
        elif entry["sha256"] != data.get("sha256") or entry["bytes"] != data.get("bytes"):
            findings.append(
                Finding(where, CHANGED, f"event says sha256 {data.get('sha256')}, manifest {entry['sha256']}")
            )
        else:
            findings.append(Finding(where, OK, "checkpoint event matches the manifest"))
    return findings


def run_folders(paths: Sequence[Path]) -> list[Path]:
    """Run folders named directly, or every run under an evidence root (`<root>/training/<run_id>/`)."""
    folders: list[Path] = []
    for path in paths:
        training = path / "training"
        if training.is_dir() and not (path / MANIFEST).exists():
            folders.extend(p for p in sorted(training.iterdir()) if p.is_dir() and RUN_ID_PATTERN.match(p.name))
        else:
            folders.append(path)
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every folder matches its manifest, 1 when any file does not, 2 when a path is no run folder."""
    parser = argparse.ArgumentParser(
        prog="python -m reference_server verify-evidence",
        description="Check run evidence folders against their manifest.json: every file re-hashed, every "
        "checkpoint cross-checked with metrics.jsonl. Exit 0 all match, 1 a mismatch, 2 not a run folder.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or an evidence root to check every run")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    folders = run_folders(args.paths)
    missing = [p for p in folders if not p.is_dir()]
    if missing or not folders:
        print(f"verify-evidence: not a run folder: {', '.join(map(str, missing)) or 'none given'}", file=sys.stderr)
        return 2
    audits = [audit_run(folder) for folder in folders]
    if args.json:
        print(json.dumps({"ok": all(a.ok for a in audits), "runs": [a.to_json() for a in audits]}, indent=2))
    else:
        for audit in audits:
            verdict = "OK" if audit.ok else "MISMATCH"
            print(f"{verdict} {audit.directory} (manifest sha256 {audit.manifest_sha256 or '-'})")
            for finding in audit.findings:
                print(f"  {finding.state:<8} {finding.path}: {finding.detail}")
    return 0 if all(a.ok for a in audits) else 1
