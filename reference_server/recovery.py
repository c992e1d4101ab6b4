"""Start-up recovery: every run rebuilt from the evidence folder, as the last server left it.

For each run folder: temporary files a killed writer left behind are removed; a torn last line of metrics.jsonl (a
write that never completed) is cut off and the cut recorded in repairs.jsonl; the events are folded into the run's
view; a run whose log has no `end` was active when its server stopped, so it ends `interrupted` (its trainer died
with that server); a run that ended without a manifest gets one. A folder that cannot be trusted (unreadable
config, a log whose ids do not run 1..N or with two ends in one attempt) is never written to and never hidden: it is
listed with its problem. A folder that never got its first event is a run that was never registered (its POST
failed or the server died inside it): it is removed.

On a full disk recovery still completes: what it cannot write waits in the journal's pending list.

With an executor whose trainers go on without the server (Ray), an active run is first looked for on the cluster:
found, it is supervised again from the message after the last one its log recorded. While that executor cannot be
reached, such runs are left as they are (listed as active) and settled once it can.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .events import EventLog
from .evidence import (
    CHECKPOINTS,
    CONFIG,
    EVENTS,
    PROVENANCE,
    EvidenceDamaged,
    EvidenceStore,
    EvidenceWriteError,
)
from .executors import Executor
from .journal import RunJournal
from .lifecycle import RunStatus

if TYPE_CHECKING:
    from .runs import RunManager

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What recovery found."""

    interrupted: list[str] = field(default_factory=list)
    unended: list[str] = field(default_factory=list)  # active at the last stop, not settled yet
    reattached: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


async def recover(
    store: EvidenceStore, events: EventLog, journal: RunJournal, manager: RunManager, executor: Executor
) -> RecoveryReport:
    """Rebuild every run from the evidence folder (see the module's docstring) into `manager`. A run that was active
    goes back to its trainer when the executor finds it still alive (it went on without the server), and ends
    `interrupted` otherwise."""
    report = RecoveryReport()
    # Oldest first (config.json's created_at), so runs get their sequence numbers in the order they were created.
    # Each log is read, folded and let go before the next is read: memory holds the logs of the `cache_runs` most
    # recent ended runs (and the active ones), never every log at once, which left a server started on 1,000 runs
    # hundreds of MB larger long after the logs were freed.
    for run_id in sorted(store.run_ids(), key=lambda r: (store.created_at(r), r)):
        try:
            stored = store.read_run(run_id)
        except EvidenceDamaged as exc:
            if _never_registered(store, run_id):
                shutil.rmtree(store.run_dir(run_id), ignore_errors=True)
                log.warning("run %s: a folder that never got its first event (a failed start); removed", run_id)
                report.removed.append(run_id)
            else:
                log.error("run %s: its evidence cannot be trusted and is left as it is: %s", run_id, exc)
                report.damaged[run_id] = str(exc)
            continue
        if not stored.events and not stored.torn_tail and _never_registered(store, run_id):
            shutil.rmtree(store.run_dir(run_id), ignore_errors=True)
            log.warning("run %s: a folder that never got its first event (a failed start); removed", run_id)
            report.removed.append(run_id)
            continue
        if stored.stale_files:
            store.remove_stale_files(run_id, stored.stale_files)
            log.info("run %s: removed temporary files a killed writer left: %s", run_id, ", ".join(stored.stale_files))
        if stored.torn_tail:
            try:
                store.cut_torn_tail(run_id, stored.log_bytes, stored.torn_tail)
                log.warning(
                    "run %s: metrics.jsonl ended in a torn line (%d bytes); cut off", run_id, len(stored.torn_tail)
                )
                report.repaired.append(run_id)
            except EvidenceWriteError as exc:
                log.error("run %s: its torn last line could not be cut (%s); left as it is", run_id, exc)
                report.damaged[run_id] = f"metrics.jsonl ends in a torn line that could not be cut: {exc}"
                continue
        if not stored.events:
            report.damaged[run_id] = "metrics.jsonl holds no whole event"
            continue
        run = manager.register(stored)
        runs_log = events.load(run_id, stored.events)
        for event in stored.events:
            run.apply(event)
        if not runs_log.ended:
            report.unended.append(run_id)
        elif store.read_manifest(run_id) is None:
            await journal.write_missing_manifest(run)
        events.trim()  # this log stays only while it is among the most recent ended ones
    if executor.detaches and executor.unavailable():
        log.warning(
            "%d run(s) were active when the server last stopped; they wait for the %s executor (%s)",
            len(report.unended),
            executor.name,
            executor.unavailable(),
        )
    else:
        await settle_unended(report, journal, manager, executor)
    return report


async def settle_unended(report: RecoveryReport, journal: RunJournal, manager: RunManager, executor: Executor) -> None:
    """Each run that was active when the server last stopped goes back to its trainer when the executor still has it
    (it went on without the server), and ends `interrupted` otherwise."""
    for run_id in list(report.unended):
        run = manager.runs[run_id]
        trainer = await executor.reattach(manager.launch(run), run.trainer_seq)
        if trainer is not None:
            log.info("run %s: its trainer went on training without the server; following it again", run_id)
            manager.adopt(run, trainer)
            report.reattached.append(run_id)
        else:
            executor.forget(run_id)
            await journal.finish(
                run,
                RunStatus.INTERRUPTED,
                {"code": "server_stopped", "message": "the server stopped while the run was active"},
            )
            report.interrupted.append(run_id)
        report.unended.remove(run_id)


def _never_registered(store: EvidenceStore, run_id: str) -> bool:
    """A folder holding only what a run's creation writes before its first event (config.json, provenance.json,
    the reserve, an empty checkpoints/, temporary files): its run was never answered to anyone."""
    directory = store.run_dir(run_id)
    for path in directory.iterdir():
        if path.name == CHECKPOINTS and path.is_dir():
            if any(path.iterdir()):
                return False
        elif path.name == EVENTS:
            if path.stat().st_size > 0:
                return False
        elif path.name not in (CONFIG, PROVENANCE) and not path.name.startswith("."):
            return False
    return True
