"""Liveness and readiness.

Ready means: the evidence directory takes a write, the tinygrad device opens (``python -m trainer_tinygrad device``,
run once in the background and cached; a failure is retried at most every `reprobe_s`), and at least one dataset is
verified. The server itself never imports tinygrad.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

from . import clock
from .datasets import DatasetCatalog
from .evidence import EvidenceStore
from .process import probe_device
from .provenance import ServiceProvenance


class Readiness:
    """The readiness checks, with the device probe cached."""

    def __init__(
        self,
        store: EvidenceStore,
        catalog: DatasetCatalog,
        identity: ServiceProvenance,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        reprobe_s: float = 30.0,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.identity = identity
        self.python = python
        self.env = env
        self.reprobe_s = reprobe_s
        self.device: dict[str, Any] | None = None
        self._probed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the device probe in the background (the server does not wait for it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        self.device = await probe_device(self.python, self.env)
        self._probed_at = time.monotonic()

    def device_name(self) -> str | None:
        """The probed device ("CPU"), or None before the probe answered or when it failed."""
        if self.device and self.device.get("ok"):
            return str(self.device.get("device"))
        return None

    async def wait_for_device(self, timeout: float) -> None:
        """Wait (bounded) for the first probe to answer."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)

    def identity_fields(self, status: str) -> dict[str, Any]:
        """The fields every health body carries (health.schema.json)."""
        return {
            "status": status,
            "mocks": False,
            "phase": "stage1",
            "version": self.identity.versions.get("service", "unknown"),
            "commit": self.identity.commit,
            "time": clock.now(),
        }

    async def checks(self) -> dict[str, dict[str, Any]]:
        """Each readiness check: {"ok": bool, "detail": str}."""
        loop = asyncio.get_running_loop()
        writable = await loop.run_in_executor(None, self.store.probe_writable)
        checks: dict[str, dict[str, Any]] = {
            "evidence_dir": {"ok": writable is None, "detail": writable or f"{self.store.training} is writable"}
        }
        if self.device is None:
            self.start()
            checks["device"] = {"ok": False, "detail": "the tinygrad device probe has not answered yet"}
        elif self.device.get("ok"):
            checks["device"] = {
                "ok": True,
                "detail": f"{self.device.get('device')} (tinygrad {self.device.get('tinygrad_version', '?')})",
            }
        else:
            if time.monotonic() - self._probed_at > self.reprobe_s:
                self.start()
            checks["device"] = {"ok": False, "detail": f"tinygrad device does not open: {self.device.get('reason')}"}
        good, bad = await self.catalog.verified_names()
        detail = f"verified: {', '.join(good) or 'none'}"
        if bad:
            detail += "; not verified: " + "; ".join(f"{name} ({why})" for name, why in bad.items())
        checks["datasets"] = {"ok": bool(good), "detail": detail}
        return checks
