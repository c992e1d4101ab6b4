"""Service endpoints: health, readiness, Prometheus metrics, the OpenAPI document, datasets."""

from __future__ import annotations

import re
from typing import Any

from ..datasets import DatasetCatalog
from ..errors import DatasetFileNotFound
from ..health import Readiness
from ..telemetry import CONTENT_TYPE, Telemetry
from .base import BaseHandler

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class HealthHandler(BaseHandler):
    """GET /healthz: the process answers."""

    public = True

    def initialize(self, readiness: Readiness) -> None:
        """Dependencies from the route table."""
        self.readiness = readiness

    async def get(self) -> None:
        """Always 200 while the loop runs."""
        self.write_json(self.readiness.identity_fields("ok"))


class ReadyHandler(HealthHandler):
    """GET /readyz: 200 only when evidence is writable, the device opens and a dataset is verified."""

    async def get(self) -> None:
        """200 `ready`, or 503 `not_ready` naming each failing check."""
        checks = await self.readiness.checks()
        ready = all(c["ok"] for c in checks.values())
        body = self.readiness.identity_fields("ready" if ready else "not_ready") | {"checks": checks}
        if not ready:
            body["detail"] = "; ".join(f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"])
            self.set_header("Retry-After", "5")
        self.write_json(body, 200 if ready else 503)


class MetricsHandler(BaseHandler):
    """GET /metrics: Prometheus text exposition."""

    public = True

    def initialize(self, telemetry: Telemetry) -> None:
        """Dependencies from the route table."""
        self.telemetry = telemetry

    async def get(self) -> None:
        """The current metrics."""
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.telemetry.render())


class OpenApiHandler(BaseHandler):
    """GET /openapi.json: the API document with every schema bundled in."""

    public = True

    def initialize(self, document: dict[str, Any]) -> None:
        """The bundled document, built once at start."""
        self.document = document

    async def get(self) -> None:
        """The document."""
        self.write_json(self.document)


class DatasetsHandler(BaseHandler):
    """GET /api/datasets."""

    def initialize(self, catalog: DatasetCatalog) -> None:
        """Dependencies from the route table."""
        self.catalog = catalog

    async def get(self) -> None:
        """Each dataset: present, verified, source, files."""
        self.write_json({"datasets": await self.catalog.statuses()})


class DatasetFileHandler(BaseHandler):
    """GET /api/datasets/{name}/files/{file}: a raw cached, verified dataset file."""

    def initialize(self, catalog: DatasetCatalog) -> None:
        """Dependencies from the route table."""
        self.catalog = catalog

    async def get(self, name: str, file: str) -> None:
        """The file as cached, with its sha256 (so a verifier can check it against the published manifest)."""
        if not _NAME.match(name) or not _NAME.match(file):
            raise DatasetFileNotFound(f"no dataset file {name}/{file}")
        path = await self.catalog.file_path(name, file)
        await self.send_file(path, "application/octet-stream", download_name=file)
