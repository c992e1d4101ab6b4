"""Verification reports (read only): the list, one report.json, and the files of its folder."""

from __future__ import annotations

import asyncio
import mimetypes
from typing import Any

from ..verification import VerificationReports
from .base import BaseHandler
from .runs import serve_evidence_page

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".jsonl": "application/jsonl; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".raw": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # SHA256SUMS
}


class VerificationHandlerBase(BaseHandler):
    """Handlers that read the verification folders."""

    def initialize(self, reports: VerificationReports) -> None:
        """Dependencies from the route table."""
        self.reports = reports

    async def blocking(self, fn: Any, *args: Any) -> Any:
        """Run a file-reading call off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class VerificationsHandler(VerificationHandlerBase):
    """GET /api/verifications."""

    async def get(self) -> None:
        """Every report, newest first, with its verdict and counts."""
        self.write_json(await self.blocking(self.reports.listing))


class VerificationHandler(VerificationHandlerBase):
    """GET /api/verifications/{commit}."""

    async def get(self, commit: str) -> None:
        """report.json as the suite wrote it (checked against its schema)."""
        self.write_json(await self.blocking(self.reports.report, commit))


class VerificationFileHandler(VerificationHandlerBase):
    """GET /api/verifications/{commit}/files/{file}."""

    async def get(self, commit: str, file: str) -> None:
        """One file of the folder (discrepancies.md, report.html, probes/...), streamed with its sha256."""
        path = await self.blocking(self.reports.file, commit, file)
        content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".html":
            serve_evidence_page(self)
        await self.send_file(path, content_type)
