"""The verification reports the conformance suite wrote under `<evidence>/phase1/verify/<commit>/`, read for the
dashboard. The server never writes there: it lists the folders, checks each report.json against the contract, and
hands out the folder's files by relative path, never outside the folder (no `..`, no hidden names, no symlink that
leads out). Blocking: handlers call these in an executor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import routes
from .errors import VerificationNotFound, VerificationUnreadable
from .schemas import Contract

#: Where the suite writes, under the evidence root.
VERIFY_DIR = Path("phase1") / "verify"
REPORT, REPORT_HTML, DISCREPANCIES = "report.json", "report.html", "discrepancies.md"
#: A folder name, as the suite names them (verification-report.schema.json `commit`), never hidden.
COMMIT_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


class VerificationReports:
    """The verification folders under one evidence root."""

    def __init__(self, evidence_root: Path, contract: Contract) -> None:
        self.root = evidence_root / VERIFY_DIR
        self.contract = contract

    def folder(self, commit: str) -> Path:
        """The folder of one verification; VerificationNotFound for a name that is not one, or is absent."""
        folder = self.root / commit
        if not COMMIT_PATTERN.match(commit) or not (folder / REPORT).is_file():
            raise VerificationNotFound(
                f"no verification report {commit[:80]!r}; list them at {routes.url('verifications')}"
            )
        return folder

    def report(self, commit: str) -> dict[str, Any]:
        """One report.json, valid against verification-report.schema.json; VerificationUnreadable when it is not."""
        path = self.folder(commit) / REPORT
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VerificationUnreadable(f"verification {commit}: report.json cannot be read: {exc}") from exc
        errors = self.contract.errors("verification-report.schema.json", document)
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            raise VerificationUnreadable(
                f"verification {commit}: report.json does not match verification-report.schema.json at {where}: "
                f"{errors[0].message[:200]}"
            )
        return dict(document)

    def listing(self) -> dict[str, Any]:
        """verification-list.schema.json: every readable report, newest first; the others under `unreadable`."""
        reports, unreadable = [], []
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        for commit in folders:
            if not COMMIT_PATTERN.match(commit) or not (self.root / commit / REPORT).is_file():
                continue  # a folder the suite is still building (hidden), or not one of its folders
            try:
                document = self.report(commit)
            except VerificationUnreadable as exc:
                unreadable.append({"commit": commit, "problem": exc.detail})
                continue
            reports.append(
                {
                    "commit": commit,
                    "verdict": document["verdict"],
                    "summary": document["summary"],
                    "target": document["target"],
                    "suite": document["suite"],
                    "started_at": document["started_at"],
                    "finished_at": document["finished_at"],
                    "links": self.links(commit),
                }
            )
        reports.sort(key=lambda r: r["finished_at"], reverse=True)
        return {"reports": reports, "unreadable": unreadable}

    def links(self, commit: str) -> dict[str, str]:
        """Where a report's parts are (relative URLs); report.html only when the suite wrote one."""
        links = {
            "self": routes.url("verification", commit=commit),
            "discrepancies": routes.url("verification_file", commit=commit, file=DISCREPANCIES),
            "dashboard": routes.url("dashboard_verification", query={"commit": commit}),
        }
        if (self.root / commit / REPORT_HTML).is_file():
            links["html"] = routes.url("verification_file", commit=commit, file=REPORT_HTML)
        return links

    def file(self, commit: str, relative: str) -> Path:
        """A file of the folder by its relative path; VerificationNotFound for anything else."""
        folder = self.folder(commit)
        parts = relative.split("/")
        missing = VerificationNotFound(f"verification {commit} has no file {relative[:120]!r}")
        if not all(_PART.match(part) for part in parts):
            raise missing
        path = folder.joinpath(*parts)
        try:
            inside = path.resolve(strict=True).is_relative_to(folder.resolve(strict=True))
        except OSError:
            inside = False
        if not inside or not path.is_file():
            raise missing
        return path
