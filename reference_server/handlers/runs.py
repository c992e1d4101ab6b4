"""Training-run endpoints: parse, delegate to the run manager, answer."""

from __future__ import annotations

import mimetypes
from typing import Any

from .. import routes
from ..dashboard import EVIDENCE_PAGE_CSP, HTML_HEADERS
from ..errors import (
    CheckpointNotFound,
    EvidenceFileNotFound,
    EvidenceNotReady,
    InvalidParameter,
    RunNotFound,
    ValidationFailed,
)
from ..evidence import EvidenceStore
from ..lifecycle import RUN_ID_PATTERN, Run, RunStatus
from ..runs import RunManager
from ..schemas import Contract
from .base import BaseHandler


class RunHandlerBase(BaseHandler):
    """Handlers that look runs up in the manager."""

    def initialize(self, manager: RunManager, contract: Contract, store: EvidenceStore) -> None:
        """Dependencies from the route table."""
        self.manager = manager
        self.contract = contract
        self.store = store

    def find(self, run_id: str) -> Run:
        """The run, or 404 (a malformed id is simply unknown)."""
        if not RUN_ID_PATTERN.match(run_id):
            raise RunNotFound(f"{run_id!r} is not a run id (ids look like run-0123456789abcdef0123)")
        return self.manager.get(run_id)


class RunsHandler(RunHandlerBase):
    """POST /api/training/runs (start), GET (list, newest first)."""

    query_parameters = frozenset({"limit", "cursor", "status", "tag"})

    async def post(self) -> None:
        """Start a run (or return the one its idempotency key already started). The key may come as the
        `Idempotency-Key` header or the body's `idempotency_key`; both may be given only when they agree."""
        body = self.json_body("run-create-request.schema.json", self.contract)
        header = self.request.headers.get("Idempotency-Key")
        if header is not None:
            key = header.strip()
            refused = self.contract.errors("run-create-request.schema.json", {"idempotency_key": key})
            if refused:
                raise ValidationFailed(
                    f"the Idempotency-Key header is not a valid idempotency key: {refused[0].message}",
                    errors=[{"field": "Idempotency-Key", "message": refused[0].message}],
                )
            if body.get("idempotency_key", key) != key:
                raise ValidationFailed(
                    "the Idempotency-Key header and the body's idempotency_key differ; send one, or the same in both",
                    errors=[{"field": "idempotency_key", "message": "differs from the Idempotency-Key header"}],
                )
            body["idempotency_key"] = key
        run, created = await self.manager.create(body)
        self.set_header("Location", run.links()["self"])
        if not created:
            self.set_header("Idempotent-Replayed", "true")
        self.write_json(run.to_json(), 200)

    async def get(self) -> None:
        """A page of runs."""
        limit = self.int_argument("limit", 20, 1, 100)
        assert limit is not None
        cursor = self.get_query_argument("cursor", None)
        status = self.get_query_argument("status", None)
        if status is not None and status not in {str(s) for s in RunStatus}:
            raise InvalidParameter(f"status={status!r} is not one of {', '.join(str(s) for s in RunStatus)}")
        tag = self.get_query_argument("tag", None)
        if tag is not None and self.contract.errors("run-create-request.schema.json", {"tags": [tag]}):
            raise InvalidParameter(f"tag={tag[:60]!r} is not a tag: a letter or digit, then up to 39 of [A-Za-z0-9._-]")
        runs, next_cursor = self.manager.page(limit, cursor, status, tag)
        listing: dict[str, Any] = {"runs": [r.to_json() for r in runs], "next_cursor": next_cursor}
        if self.manager.damaged:
            listing["damaged"] = [{"run_id": k, "problem": v} for k, v in sorted(self.manager.damaged.items())]
        self.write_json(listing)


class RunHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}."""

    async def get(self, run_id: str) -> None:
        """One run."""
        self.write_json(self.find(run_id).to_json())


class RunMetricsHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}/metrics?after_step=N&limit=M."""

    query_parameters = frozenset({"after_step", "limit"})

    async def get(self, run_id: str) -> None:
        """Loss and accuracy per logged step, eval per checkpoint, paginated by step."""
        run = await self.manager.history(self.find(run_id))
        after = self.int_argument("after_step", None, 0, 10**12)
        limit = self.int_argument("limit", 100, 1, 1000)
        assert limit is not None
        self.write_json(run.metrics_page(after, limit))


class CancelHandler(RunHandlerBase):
    """POST /api/training/runs/{run_id}/cancel."""

    async def post(self, run_id: str) -> None:
        """Stop a run: 200 once it has ended cancelled, 202 while its trainer is stopping."""
        self.find(run_id)
        run = await self.manager.cancel(run_id)
        self.write_json(run.to_json(), 200 if run.terminal else 202)


class ResumeHandler(RunHandlerBase):
    """POST /api/training/runs/{run_id}/resume."""

    async def post(self, run_id: str) -> None:
        """Continue an interrupted or failed run from its last checkpoint, under the same run id: 202 with the run,
        queued again; 409 when the run is not interrupted or failed or has no checkpoint."""
        self.find(run_id)
        # No options: a resume continues the recorded config exactly, or it would not be the same run.
        if self.request.body and self.parse_json_body() != {}:
            raise ValidationFailed(
                "resume takes no options (send no body, or {})", errors=[{"field": "(body)", "message": "not {}"}]
            )
        run = await self.manager.resume(run_id)
        self.write_json(run.to_json(), 202)


class CheckpointsHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}/checkpoints."""

    async def get(self, run_id: str) -> None:
        """Every adopted checkpoint with sha256 and bytes."""
        run = self.find(run_id)
        self.write_json({"run_id": run.run_id, "checkpoints": [run.checkpoint_json(c) for c in run.checkpoints]})


class CheckpointFileHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}/checkpoints/{name}: the safetensors file."""

    async def get(self, run_id: str, name: str) -> None:
        """Download one checkpoint; the digest is the one recorded when it was adopted."""
        run = self.find(run_id)
        record = next((c for c in run.checkpoints if c["name"] == name), None)
        if record is None:
            known = ", ".join(c["name"] for c in run.checkpoints) or "none yet"
            raise CheckpointNotFound(f"run {run_id} has no checkpoint {name!r}; it has: {known}")
        try:
            path = self.store.file(run_id, f"checkpoints/{name}")
        except FileNotFoundError as exc:
            raise CheckpointNotFound(f"checkpoint {name} of run {run_id} is missing from the evidence") from exc
        await self.send_file(path, "application/octet-stream", record["sha256"], name)


class EvidenceHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}/evidence: the manifest."""

    async def get(self, run_id: str) -> None:
        """manifest.json once the run has ended; 409 before."""
        run = self.find(run_id)
        manifest = self.store.read_manifest(run.run_id) if run.terminal else None
        if manifest is None:
            raise EvidenceNotReady(
                f"run {run_id} is {run.status}; its manifest is written when it ends "
                f"(each file is already at {run.links()['evidence']}/<file>)"
            )
        self.write_json(manifest)


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".jsonl": "application/jsonl; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".safetensors": "application/octet-stream",
}


class EvidenceFileHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}/evidence/{file}."""

    async def get(self, run_id: str, file: str) -> None:
        """One evidence file by its manifest path (config.json, metrics.jsonl, checkpoints/<name>, ...), streamed.
        The files of a run whose evidence cannot be trusted stay downloadable, so someone can inspect them."""
        if not RUN_ID_PATTERN.match(run_id) or run_id not in self.manager.damaged:
            self.find(run_id)
        try:
            path = self.store.file(run_id, file)
        except FileNotFoundError as exc:
            raise EvidenceFileNotFound(
                f"run {run_id} has no evidence file {file!r}; the manifest lists them: "
                f"{routes.url('run_evidence', run_id=run_id)}"
            ) from exc
        content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".html":
            serve_evidence_page(self)
        await self.send_file(path, content_type)


def serve_evidence_page(handler: BaseHandler) -> None:
    """The headers of a self-contained evidence page (report.html): run in a sandbox, never framed."""
    handler.set_header("Content-Security-Policy", EVIDENCE_PAGE_CSP)
    for name, value in HTML_HEADERS.items():
        handler.set_header(name, value)
