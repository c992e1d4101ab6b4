"""Liveness and readiness.

Ready means: the evidence directory takes a write and has room (at least `min_free_bytes`, and twice the largest
checkpoint seen: the next one and its copy), no run's end evidence is still waiting for room, the executor can run a
trainer (locally: ``python -m trainer_tinygrad device``, run once in the background and cached; a failure is retried
at most every `reprobe_s`), and at least one dataset is verified. The server itself never imports tinygrad. Readiness
answers strangers too, so its details name no path of this machine.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from trainer_tinygrad.clock import utc_now

from .datasets import DatasetCatalog
from .evidence import EvidenceStore
from .executors import Executor
from .provenance import ServiceProvenance

_MIB = 1 << 20
#: An absolute path inside a message (a probe's stderr, an OS error): readiness shows "<path>" instead.
_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]+")


def without_paths(text: str) -> str:
    """`text` with every absolute file system path replaced by `<path>`."""
    return _PATH.sub("<path>", text)


class Readiness:
    """The readiness checks, with the executor's probe cached."""

    def __init__(
        self,
        store: EvidenceStore,
        catalog: DatasetCatalog,
        identity: ServiceProvenance,
        executor: Executor,
        *,
        min_free_bytes: int,
        largest_checkpoint: Callable[[], int],
        pending_ends: Callable[[], int],
        reprobe_s: float = 30.0,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.identity = identity
        self.executor = executor
        self.min_free_bytes = min_free_bytes
        self.largest_checkpoint = largest_checkpoint
        self.pending_ends = pending_ends
        self.reprobe_s = reprobe_s
        self.device: dict[str, Any] | None = None
        self._probed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the executor's probe in the background (the server does not wait for it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        self.device = await self.executor.probe()
        self._probed_at = time.monotonic()

    def device_name(self) -> str | None:
        """The probed device ("CPU"), or None before the probe answered or when it failed."""
        if self.device and self.device.get("ok"):
            return str(self.device.get("device"))
        return None

    def identity_fields(self, status: str) -> dict[str, Any]:
        """The fields every health body carries (health.schema.json)."""
        return {
            "status": status,
            "mocks": False,
            "phase": "stage1",
            "version": self.identity.versions.get("service", "unknown"),
            "commit": self.identity.commit,
            "time": utc_now(),
        }

    def space_wanted(self) -> int:
        """Free bytes the evidence disk must keep for the server to take work."""
        return max(self.min_free_bytes, 2 * self.largest_checkpoint())

    async def checks(self) -> dict[str, dict[str, Any]]:
        """Each readiness check: {"ok": bool, "detail": str}."""
        loop = asyncio.get_running_loop()
        writable = await loop.run_in_executor(None, self.store.probe_writable)
        checks: dict[str, dict[str, Any]] = {
            "evidence_dir": {"ok": writable is None, "detail": writable or "the evidence directory is writable"}
        }
        checks["disk_space"] = await loop.run_in_executor(None, self._space)
        if self.device is None:
            self.start()
            checks["device"] = {"ok": False, "detail": f"the {self.executor.name} executor's probe has not answered"}
        elif self.device.get("ok"):
            checks["device"] = {
                "ok": True,
                "detail": f"{self.device.get('device')} (tinygrad {self.device.get('tinygrad_version', '?')})",
            }
        else:
            if time.monotonic() - self._probed_at > self.reprobe_s:
                self.start()
            checks["device"] = {"ok": False, "detail": f"trainers cannot run: {self.device.get('reason')}"}
        good, bad = await self.catalog.verified_names()
        detail = f"verified: {', '.join(good) or 'none'}"
        if bad:
            detail += "; not verified: " + "; ".join(f"{name} ({why})" for name, why in bad.items())
        checks["datasets"] = {"ok": bool(good), "detail": detail}
        return {name: check | {"detail": without_paths(check["detail"])} for name, check in checks.items()}

    def _space(self) -> dict[str, Any]:
        try:
            free = self.store.free_bytes()
        except OSError as exc:
            return {"ok": False, "detail": f"the evidence disk's free space cannot be read: {exc.strerror}"}
        wanted = self.space_wanted()
        pending = self.pending_ends()
        detail = f"{free / _MIB:.1f} MiB free on the evidence disk; at least {wanted / _MIB:.1f} MiB wanted"
        if pending:
            detail += f"; {pending} run(s) still wait for room to write how they ended"
        return {"ok": free >= wanted and not pending, "detail": detail}
