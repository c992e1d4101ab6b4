"""Training-run endpoints: parse, delegate to the run manager, answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
from typing import Any

from ..errors import (
    CheckpointNotFound,
    EvidenceFileNotFound,
    EvidenceNotReady,
    InvalidParameter,
    RunNotFound,
    ValidationFailed,
)
from ..evidence import RUN_ID_PATTERN, EvidenceStore
from ..runs import RunManager, RunStatus
from ..schemas import Contract
from .base import BaseHandler


class RunHandlerBase(BaseHandler):
    """Handlers that look runs up in the manager."""

    def initialize(self, manager: RunManager, contract: Contract, store: EvidenceStore) -> None:
        """Dependencies from the route table."""
        self.manager = manager
        self.contract = contract
        self.store = store

    def find(self, run_id: str) -> Any:
        """The run, or 404 (a malformed id is simply unknown)."""
        if not RUN_ID_PATTERN.match(run_id):
            raise RunNotFound(f"{run_id!r} is not a run id (ids look like run-0123456789abcdef0123)")
        return self.manager.get(run_id)


class RunsHandler(RunHandlerBase):
    """POST /api/training/runs (start), GET (list, newest first)."""

    query_parameters = frozenset({"limit", "cursor", "status"})

    async def post(self) -> None:
        """Start a run (or return the one its idempotency_key already started)."""
        body = self.json_body("run-create-request.schema.json", self.contract)
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
        runs, next_cursor = self.manager.page(limit, cursor, status)
        self.write_json({"runs": [r.to_json() for r in runs], "next_cursor": next_cursor})


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
        run = self.find(run_id)
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
        if self.request.body.strip() and self.parse_json_body() != {}:
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
        await self.send_file(path, record["sha256"], "application/octet-stream", name)


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
    ".json": "application/json; charset=utf-8",
    ".jsonl": "application/jsonl; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".safetensors": "application/octet-stream",
}


class EvidenceFileHandler(RunHandlerBase):
    """GET /api/training/runs/{run_id}/evidence/{file}."""

    async def get(self, run_id: str, file: str) -> None:
        """One evidence file by its manifest path (config.json, metrics.jsonl, checkpoints/<name>, ...)."""
        run = self.find(run_id)
        try:
            path = self.store.file(run.run_id, file)
        except FileNotFoundError as exc:
            raise EvidenceFileNotFound(
                f"run {run_id} has no evidence file {file!r}; the manifest lists them: {run.links()['evidence']}"
            ) from exc
        # Read whole: metrics.jsonl may grow while it is sent, and the digest must match the bytes sent.
        data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        sha = hashlib.sha256(data).hexdigest()
        self.set_header("Content-Type", content_type)
        self.set_header("X-Checksum-SHA256", sha)
        self.set_header("Digest", "sha-256=" + base64.b64encode(bytes.fromhex(sha)).decode())
        self.set_header("Content-Length", str(len(data)))
        self.finish(data if self.request.method != "HEAD" else None)
