"""The verdict in three forms: report.json (schema-valid), junit.xml (for CI), discrepancies.md (a PR comment)."""

from __future__ import annotations

import platform
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import Contract
from .folder import VerifyFolder
from .owners import CodeOwners
from .registry import Check

REPORT = "report.json"
JUNIT = "junit.xml"
DISCREPANCIES = "discrepancies.md"


@dataclass
class CheckResult:
    """How one check went."""

    check: Check
    status: str  # passed | failed | skipped | error
    duration_s: float
    failure: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)

    @property
    def counts_against(self) -> bool:
        """True when this result makes the verdict fail."""
        return self.check.required and self.status in ("failed", "error")

    def to_json(self) -> dict[str, Any]:
        """The report.json entry."""
        return {
            "id": self.check.id,
            "title": self.check.title,
            "requirement": self.check.requirement,
            "section": self.check.section,
            "required": self.check.required,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "failure": self.failure,
            "message": self.message,
            "details": self.details,
            "evidence": self.evidence,
            "owners": self.owners,
        }


def assign_owners(results: list[CheckResult], owners: CodeOwners | None) -> None:
    """Fill each failed result's owners from CODEOWNERS, by the check's area and its evidence paths."""
    if owners is None:
        return
    for result in results:
        if result.status in ("failed", "error"):
            result.owners = owners.owners_for(result.check.area)


def verdict(results: list[CheckResult]) -> str:
    """`passed` when no required check failed or errored."""
    return "failed" if any(r.counts_against for r in results) else "passed"


def summary(results: list[CheckResult]) -> dict[str, int]:
    """Counts by status."""
    counts = {"total": len(results), "passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for result in results:
        counts[result.status] += 1
    return counts


def build_report(results: list[CheckResult], **fields: Any) -> dict[str, Any]:
    """report.json's document: the given top-level fields plus verdict, summary, checks and file names."""
    return {
        "report_version": 1,
        **fields,
        "verdict": verdict(results),
        "summary": summary(results),
        "checks": [r.to_json() for r in results],
        "files": {"junit": JUNIT, "discrepancies": DISCREPANCIES, "sums": "SHA256SUMS", "probes": "probes/index.jsonl"},
        "environment": {"python": sys.version.split()[0], "platform": platform.platform()},
    }


def write_report(folder: VerifyFolder, report: dict[str, Any], contract: Contract) -> str:
    """Validate against verification-report.schema.json and write report.json."""
    problems = contract.problems("verification-report", report)
    if problems:
        raise ValueError("the suite built an invalid report: " + "; ".join(problems[:5]))
    return folder.write_json(REPORT, report)


def write_junit(folder: VerifyFolder, results: list[CheckResult], started_at: str, duration_s: float) -> str:
    """junit.xml: one testcase per check (classname = section), failures carrying message and evidence."""
    counts = summary(results)
    suite = ET.Element(
        "testsuite",
        name="trainer-conformance",
        tests=str(counts["total"]),
        failures=str(counts["failed"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{duration_s:.3f}",
        timestamp=started_at,
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"trainer_conformance.{result.check.section}",
            name=result.check.id,
            time=f"{result.duration_s:.3f}",
        )
        body = (result.message or "") + "".join(f"\nevidence: {e}" for e in result.evidence)
        if result.status == "failed":
            ET.SubElement(case, "failure", message=result.failure or "failed").text = body
        elif result.status == "error":
            ET.SubElement(case, "error", message=result.failure or "error").text = body
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=result.message or "skipped")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return folder.write_bytes(JUNIT, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def render_discrepancies(report: dict[str, Any], results: list[CheckResult], shown_root: Path) -> str:
    """Markdown for a pull-request comment: each failure with its requirement, evidence paths and owners."""
    bad = [r for r in results if r.status in ("failed", "error")]
    commit, target = report["commit"], report["target"]["base_url"]
    lines = [
        f"## trainer-conformance: {'no' if not bad else len(bad)} discrepanc{'y' if len(bad) == 1 else 'ies'} "
        f"at `{commit}`",
        "",
        f"Target `{target}`, suite {report['suite']['version']}, verdict **{report['verdict']}** "
        f"({report['summary']['passed']} passed, {report['summary']['failed']} failed, "
        f"{report['summary']['error']} errors, {report['summary']['skipped']} skipped). "
        f"Report: `{(shown_root / REPORT).as_posix()}`.",
        "",
    ]
    if not bad:
        lines.append("Every check passed.")
    for result in bad:
        lines += [
            f"### `{result.check.id}`: {result.check.title}",
            "",
            f"- **Requirement:** {result.check.requirement}",
            f"- **Found:** {result.failure}: {result.message}",
        ]
        if result.owners:
            lines.append(f"- **Owners:** {' '.join(result.owners)}")
        if result.evidence:
            lines.append("- **Evidence:**")
            lines += [f"  - `{_shown(shown_root, e)}`" for e in result.evidence]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _shown(root: Path, evidence: str) -> str:
    # Evidence inside the folder is cited by its full path; anything else (a published manifest) as given.
    if evidence.startswith(("probes/", "sse/", "checkpoints/", "training/")) or evidence in (REPORT, JUNIT):
        return (root / evidence).as_posix()
    return evidence
