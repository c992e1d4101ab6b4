"""A run's history, written in one place: its events (checked against the transition table), the end of each
attempt with the evidence written at that end, and a resume.

Ordering at the end of an attempt: the reserve is given back, the `end` event is made durable first (so the real
outcome survives a disk that has just filled), then trainer.log (optional: its failure loses only the log), then
manifest.json, and only then is `end` published to readers and subscribers. Whoever sees `end` can fetch a complete
evidence folder. What could not be written (a full disk) is kept as pending and written when `retry_pending` finds
room, with the very same event, so the log and what subscribers saw never disagree.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from .events import EventLog
from .evidence import EvidenceStore, EvidenceWriteError
from .lifecycle import Run, RunStatus, check_transition

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """End evidence of one run still to be written: the `end` event (when it is not durable yet) and the manifest."""

    run: Run
    end: dict[str, Any] | None


class RunJournal:
    """Writes each run's history through the event log and the evidence store."""

    def __init__(self, store: EvidenceStore, events: EventLog) -> None:
        self.store = store
        self.events = events
        self.pending: dict[str, Pending] = {}
        self._ending: set[str] = set()

    def is_open(self, run: Run) -> bool:
        """True while the run's current attempt may still get events (it has not ended, nor begun to end)."""
        return not run.terminal and run.run_id not in self._ending

    def emit(self, run: Run, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Append one event of the current attempt and fold it into the view. EvidenceWriteError when it could not
        be made durable (nobody saw it)."""
        if not self.is_open(run):
            raise RuntimeError(f"run {run.run_id} has ended; its {kind} event is refused")
        if kind == "status" and data["status"] != run.status:
            check_transition(run.status, RunStatus(data["status"]))
        event = self.events.append(run.run_id, kind, data)
        run.apply(event)
        return event

    async def finish(
        self, run: Run, status: RunStatus, error: dict[str, str] | None, trainer_log: str | None = None
    ) -> None:
        """End the run's current attempt with `status` (a no-op when it has ended or is ending)."""
        if not self.is_open(run):
            return
        check_transition(run.status, status)
        self._ending.add(run.run_id)
        try:
            data = {"status": str(status), "error": error, "step": run.step}
            self.store.release_reserve(run.run_id)
            try:
                end: dict[str, Any] = self.events.record(run.run_id, "end", data)
                durable = True
            except EvidenceWriteError as exc:
                log.error("run %s: its end is not durable yet (%s); it is written once there is room", run.run_id, exc)
                end, durable = self.events.build(run.run_id, "end", data), False
            if durable and trainer_log is not None:
                try:
                    await self._blocking(self.store.write_trainer_log, run.run_id, trainer_log)
                except EvidenceWriteError as exc:
                    log.warning("run %s: trainer.log not written: %s", run.run_id, exc)
            if not durable or not await self._write_manifest(run, status):
                self.pending[run.run_id] = Pending(run, None if durable else end)
            self.events.publish(end)
            run.apply(end)
        finally:
            self._ending.discard(run.run_id)
        log.info("run %s: %s%s", run.run_id, status, f" ({error['code']})" if error else "")

    async def _write_manifest(self, run: Run, status: RunStatus | str) -> bool:
        try:
            await self._blocking(self.store.write_manifest, run.run_id, str(status), run.created_at)
        except EvidenceWriteError as exc:
            log.error("run %s: manifest.json not written yet (%s)", run.run_id, exc)
            return False
        return True

    async def write_missing_manifest(self, run: Run) -> None:
        """The manifest of a run that ended without one (its server stopped between the two writes)."""
        if not await self._write_manifest(run, run.status):
            self.pending[run.run_id] = Pending(run, None)

    async def retry_pending(self) -> None:
        """Write the end evidence that an earlier full disk refused; keep what still does not fit."""
        for run_id, pending in list(self.pending.items()):
            if pending.end is not None:
                try:
                    self.store.append_event(run_id, pending.end, sync=True)
                except EvidenceWriteError:
                    continue
                pending.end = None
            if await self._write_manifest(pending.run, pending.run.status):
                del self.pending[run_id]
                log.info("run %s: its end evidence is written now", run_id)

    def reopen(self, run: Run, data: dict[str, Any]) -> None:
        """Resume an ended run: its reserve back, its manifest gone, then the durable `status` event that reopens it.
        EvidenceWriteError (nothing changed) when there is no room for the reserve."""
        self.store.make_reserve(run.run_id)
        self.store.reopen_run(run.run_id)
        try:
            event = self.events.reopen(run.run_id, data)
        except EvidenceWriteError:
            self.store.release_reserve(run.run_id)
            self.pending[run.run_id] = Pending(run, None)  # the manifest is gone: write it again
            raise
        run.apply(event)

    @staticmethod
    async def _blocking(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
