"""The evidence pack: the status report a project manager links to, written beside a commit's verification.

`EVIDENCE_PACK.md` (for people) and `evidence-pack.json` (for tools) name the commit, the gate's verdict (the gate
runs first), the CI run when the environment names one, the verification folder, each training run's evidence
folder with its manifest hash, and every discrepancy with its owners. Both files are added to the folder's
SHA256SUMS (the lines already there are kept as they are, so writing a pack never re-blesses a changed file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .folder import SUMS_NAME, read_sums, sha256_file, write_atomic
from .gate import run_gate
from .probes import utc_now
from .profile import DEFAULT_PROFILE

PACK_MARKDOWN = "EVIDENCE_PACK.md"
PACK_JSON = "evidence-pack.json"


@dataclass(frozen=True)
class WrittenPack:
    """Where the pack went and what the gate said."""

    markdown: Path
    json: Path
    verdict: str


def ci_run_url(environ: Mapping[str, str]) -> str | None:
    """The URL of the CI run this process belongs to: CI_RUN_URL when set, else what GitHub Actions or GitLab CI
    say about themselves; None outside CI."""
    if environ.get("CI_RUN_URL"):
        return environ["CI_RUN_URL"]
    if environ.get("GITHUB_ACTIONS") == "true" and environ.get("GITHUB_REPOSITORY") and environ.get("GITHUB_RUN_ID"):
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        url = f"{server}/{environ['GITHUB_REPOSITORY']}/actions/runs/{environ['GITHUB_RUN_ID']}"
        attempt = environ.get("GITHUB_RUN_ATTEMPT")
        return f"{url}/attempts/{attempt}" if attempt and attempt != "1" else url
    if environ.get("GITLAB_CI") == "true":
        return environ.get("CI_JOB_URL") or environ.get("CI_PIPELINE_URL") or None
    return None


def build_pack(
    commit: str, evidence_root: Path, *, profile: str = DEFAULT_PROFILE, environ: Mapping[str, str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """The pack's document for `commit`, and the verification folder it belongs in. FileNotFoundError when there is
    no verification folder to pack."""
    gate = run_gate(commit, evidence_root, profile=profile)
    if gate.folder is None:
        raise FileNotFoundError("; ".join(gate.problems))
    folder = gate.folder
    try:
        report: dict[str, Any] = json.loads((folder / "report.json").read_bytes())
    except (OSError, ValueError):
        report = {}
    runs = {r.get("run_id"): r for r in report.get("runs", [])}
    training = [
        {
            "role": runs.get(e["run_id"], {}).get("role"),
            "run_id": e["run_id"],
            "status": runs.get(e["run_id"], {}).get("status"),
            "folder": (evidence_root / e["path"]).as_posix(),
            "manifest_sha256": e["manifest_sha256"],
        }
        for e in report.get("training_evidence", [])
    ]
    discrepancies = [
        {k: c.get(k) for k in ("id", "title", "status", "failure", "message", "owners", "evidence")}
        for c in report.get("checks", [])
        if c.get("status") in ("failed", "error")
    ]
    document = {
        "pack_version": 1,
        "commit": report.get("commit", folder.name),
        "written_at": utc_now(),
        "gate": {"verdict": "passed" if gate.passed else "refused", "problems": gate.problems},
        "ci_run_url": ci_run_url(os.environ if environ is None else environ),
        "verification": {
            "folder": folder.as_posix(),
            "report": (folder / "report.json").as_posix(),
            "discrepancies": (folder / "discrepancies.md").as_posix(),
            "verdict": report.get("verdict"),
            "summary": report.get("summary"),
            "profile": report.get("profile", DEFAULT_PROFILE),
            "target": report.get("target", {}).get("base_url"),
            "suite_version": report.get("suite", {}).get("version"),
            "started_at": report.get("started_at"),
            "duration_s": report.get("duration_s"),
        },
        "training_runs": training,
        "discrepancies": discrepancies,
    }
    return folder, document


def render_pack(document: dict[str, Any]) -> str:
    """EVIDENCE_PACK.md."""
    gate, verification = document["gate"], document["verification"]
    summary = verification.get("summary") or {}
    counts = ", ".join(f"{summary[k]} {k}" for k in ("passed", "failed", "error", "skipped") if summary.get(k))
    verdict = "**PASSED**" if gate["verdict"] == "passed" else f"**REFUSED** ({len(gate['problems'])} problem(s))"
    ci = document["ci_run_url"] or "not recorded (no CI_RUN_URL, GitHub Actions or GitLab CI variables)"
    lines = [
        f"# Evidence pack: `{document['commit']}`",
        "",
        "| | |",
        "|---|---|",
        f"| Commit | `{document['commit']}` |",
        f"| Gate | {verdict} |",
        f"| Verification | {verification.get('verdict')}: {summary.get('total', 0)} checks ({counts or 'none'}) in "
        f"{verification.get('duration_s')} s against `{verification.get('target')}`, profile "
        f"{verification.get('profile')}, trainer-conformance {verification.get('suite_version')}, started "
        f"{verification.get('started_at')} |",
        f"| CI run | {ci} |",
        f"| Verification folder | `{verification['folder']}` (report.json, junit.xml, discrepancies.md, "
        "probes/, sse/, checkpoints/, training/, SHA256SUMS) |",
        f"| Written | {document['written_at']} |",
        "",
        "## Training runs",
        "",
        "| role | run | status | evidence folder | manifest SHA-256 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['role']} | `{r['run_id']}` | {r['status']} | `{r['folder']}` | `{r['manifest_sha256']}` |"
        for r in document["training_runs"]
    ]
    lines += ["", "## Discrepancies", ""]
    if not document["discrepancies"]:
        lines.append("None: every check passed.")
    for d in document["discrepancies"]:
        owners = " ".join(d.get("owners") or []) or "no owner recorded (run with --owners)"
        lines.append(f"- `{d['id']}` ({d['title']}): {d['failure']}: {d['message']}. Owners: {owners}.")
        lines += [f"  - evidence: `{e}`" for e in d.get("evidence") or []]
    if gate["problems"]:
        lines += ["", "## Why the gate refused", ""]
        lines += [f"- {problem}" for problem in gate["problems"]]
    return "\n".join(lines) + "\n"


def write_pack(
    commit: str, evidence_root: Path, *, profile: str = DEFAULT_PROFILE, environ: Mapping[str, str] | None = None
) -> WrittenPack:
    """Write EVIDENCE_PACK.md and evidence-pack.json into the commit's verification folder, and add them to its
    SHA256SUMS."""
    folder, document = build_pack(commit, evidence_root, profile=profile, environ=environ)
    markdown, as_json = folder / PACK_MARKDOWN, folder / PACK_JSON
    write_atomic(as_json, (json.dumps(document, indent=2) + "\n").encode())
    write_atomic(markdown, render_pack(document).encode())
    sums_path = folder / SUMS_NAME
    text = sums_path.read_text() if sums_path.is_file() else ""
    kept = [line for line in text.splitlines(keepends=True) if line.strip() and _sum_name(line) not in
            (PACK_MARKDOWN, PACK_JSON)]  # fmt: skip
    added = [f"{sha256_file(path)}  {path.name}\n" for path in (as_json, markdown)]
    write_atomic(sums_path, "".join(kept + added).encode())
    return WrittenPack(markdown, as_json, document["gate"]["verdict"])


def _sum_name(line: str) -> str:
    return next(iter(read_sums(line)), "")
