"""Runs the suite once: probe the target, observe the runs, run the checks, write and publish the evidence."""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import checks as _checks  # noqa: F401  (registers every check)
from .contract import Contract, default_contract
from .failures import CheckFailure, CheckSkipped, SuiteError, TargetUnreachable
from .folder import VerifyFolder
from .owners import CodeOwners
from .probes import ProbeRecorder, RecordingClient, utc_now
from .profile import load_profile
from .progress import Progress
from .published import PublishedManifest
from .registry import Check, select
from .report import (
    CheckResult,
    assign_owners,
    build_report,
    render_discrepancies,
    write_junit,
    write_report,
)
from .report_html import write_report_html
from .session import Options, Session

#: Folders of partial runs (--check, or --run-config beyond a dataset): `<verify dir>/partial-<commit>/`.
PARTIAL_PREFIX = "partial-"
#: Verification folders go to `<DEFAULT_EVIDENCE_ROOT>/<profile's verify_dir>/<commit>/` unless --out says otherwise.
DEFAULT_EVIDENCE_ROOT = Path("evidence")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def suite_version() -> str:
    """The installed trainer-conformance version."""
    try:
        return version("trainer-conformance")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class SuiteOutcome:
    """What the CLI reports: exit status, the one verdict line, and the published folder (when any)."""

    exit_code: int
    line: str
    folder: Path | None = None
    report: dict[str, Any] | None = None


def run_suite(
    options: Options,
    *,
    out: Path | None = None,
    commit: str | None = None,
    owners_file: Path | None = None,
    patterns: list[str] | None = None,
    contract: Contract | None = None,
    manifest: PublishedManifest | None = None,
    progress: Progress | None = None,
) -> SuiteOutcome:
    """Run the selected checks (all by default) against `options.base_url` and write `<out>/<commit>/` (`out`
    defaults to `evidence/<the profile's verify_dir>`)."""
    progress = progress or Progress()
    try:
        fuzzing = options.fuzz_seconds is not None or options.fuzz_examples is not None
        chosen = select(patterns or [], include_optional=fuzzing)
        owners = CodeOwners.load(owners_file) if owners_file else None
        profile = load_profile(options.profile)
    except (KeyError, OSError) as exc:
        return SuiteOutcome(2, f"trainer-conformance: COULD NOT RUN: {_reason(exc)}")
    out = out if out is not None else DEFAULT_EVIDENCE_ROOT / profile.verify_dir
    contract = contract or default_contract(profile.name)
    if manifest is None:
        try:
            manifest = PublishedManifest.load()
        except (OSError, ValueError):
            manifest = None
    recorder = ProbeRecorder()
    client = RecordingClient(options.base_url, recorder, token=options.token, timeout=min(60.0, options.timeout))
    started_at, started = utc_now(), time.monotonic()
    try:
        progress.status("health", f"GET {client.base_url}/healthz", milestone=True)
        try:
            health = client.request("GET", "/healthz")
        except TargetUnreachable as exc:
            return SuiteOutcome(2, f"trainer-conformance: COULD NOT RUN: target unreachable: {exc}")
        header_commit = health.headers.get("x-commit-sha")
        name = _UNSAFE.sub("_", commit or header_commit or "unknown")[:64] or "unknown"
        if patterns or set(options.main_request) - {"dataset"}:
            # A partial run (some checks, or a main run the gate would refuse) never replaces the commit's folder:
            # it goes beside it, under a name no commit lookup matches.
            name = f"{PARTIAL_PREFIX}{name}"
        folder = VerifyFolder(out / name)
        try:
            recorder.attach(folder)
            session = Session(options, client, folder, contract, manifest, progress=progress)
            session.health["/healthz"] = health
            readiness = session.wait_until_ready()
            progress.status("health", "ready" if readiness.ready else "not ready", milestone=True)
            progress.done("health")
            results = _run_checks(chosen, session, progress)
            assign_owners(results, owners)
            report = build_report(
                results,
                suite={"name": "trainer-conformance", "version": suite_version()},
                target={
                    "base_url": client.base_url,
                    "version": _health_version(health),
                    "commit_header": header_commit,
                },
                profile=profile.name,
                commit=name,
                commit_source="argument" if commit else "header",
                started_at=started_at,
                finished_at=utc_now(),
                duration_s=round(time.monotonic() - started, 3),
                readiness=readiness.to_json(),
                selected=list(patterns or []),
                runs=[_run_entry(r) for r in session.runs.values()],
                training_evidence=_training_evidence(session),
                notes=session.notes,
            )
            _write_checkpoint_results(session)
            recorder.write_index()
            write_report(folder, report, contract)
            write_report_html(folder, report)
            write_junit(folder, results, started_at, report["duration_s"])
            folder.write_text("discrepancies.md", render_discrepancies(report, results, out / name))
            folder.write_sums()
            published = folder.publish()
        except BaseException:
            folder.discard()  # a half-built folder must never be mistaken for a verification
            raise
    finally:
        client.close()
        progress.close()
    failed = [r.check.id for r in results if r.counts_against]
    if not failed:
        line = f"trainer-conformance: PASSED {len(results)} checks against {client.base_url}; evidence: {out / name}"
        return SuiteOutcome(0, line, published, report)
    listed = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
    line = f"trainer-conformance: FAILED {len(failed)} of {len(results)} checks ({listed}); evidence: {out / name}"
    return SuiteOutcome(1, line, published, report)


def _run_checks(chosen: list[Check], session: Session, progress: Progress) -> list[CheckResult]:
    """Observe, then run every chosen check; report them in `chosen`'s order.

    While the control runs train, the checks that need only the main run already run; the ones that judge the
    control runs (or every run) follow when those have ended, and the `last` checks after everything else.
    """
    needs = frozenset().union(*(c.needs for c in chosen))
    try:
        session.observe_main(needs)
    except TargetUnreachable as exc:
        session.notes.append(f"observation stopped: {exc}")
    failures: list[BaseException] = []

    def watch_controls() -> None:
        try:
            session.observe_controls()
        except TargetUnreachable as exc:
            session.notes.append(f"observation of the control runs stopped: {exc}")
        except BaseException as exc:  # re-raised in the suite's thread after the join
            failures.append(exc)

    watcher = threading.Thread(target=watch_controls, name="control-runs", daemon=True)
    watcher.start()
    results: dict[str, CheckResult] = {}
    early = [c for c in chosen if not c.last and not c.waits_for_controls]
    later = [c for c in chosen if not c.last and c.waits_for_controls]
    for group in (early, later, [c for c in chosen if c.last]):
        if group is not early:
            watcher.join()
            if failures:
                raise failures[0]
        for check in group:
            progress.status("checks", f"{len(results) + 1}/{len(chosen)} {check.id}")
            result = results[check.id] = execute(check, session)
            progress.outcome(check.id, result.status, result.duration_s, result.message)
    progress.done("checks")
    return [results[c.id] for c in chosen]


def _reason(exc: BaseException) -> str:
    # KeyError's str() is the repr of its argument, quotes and all.
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def execute(check: Check, session: Session) -> CheckResult:
    """Run one check, turning its outcome into a result (an unexpected exception is an `error`, with traceback)."""
    started = time.monotonic()
    result = CheckResult(check=check, status="passed", duration_s=0.0)
    try:
        result.details = _plain(check.func(session) or {})
    except CheckFailure as failure:
        result.status, result.failure, result.message = "failed", failure.title, failure.message
        result.evidence = failure.evidence
    except CheckSkipped as skipped:
        result.status, result.message = "skipped", skipped.reason
    except TargetUnreachable as exc:
        result.status, result.failure, result.message = "failed", "Target stopped answering", str(exc)
    except SuiteError as exc:
        result.status, result.failure, result.message = "error", type(exc).__name__, str(exc)
    except Exception as exc:  # a bug in the check, or a response shape nobody foresaw: recorded, not fatal
        result.status, result.failure, result.message = "error", type(exc).__name__, str(exc)
        result.details = {"traceback": traceback.format_exc(limit=8)}
    result.duration_s = time.monotonic() - started
    return result


def _plain(value: Any) -> Any:
    # Details go into JSON written with allow_nan=False: numpy scalars become Python numbers, NaN a string.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _health_version(health: Any) -> str | None:
    try:
        value = json.loads(health.body).get("version")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _run_entry(run: Any) -> dict[str, Any]:
    return {
        "role": run.role,
        "run_id": run.run_id,
        "status": run.status,
        "request": run.request,
        "config": run.config or None,
    }


def _training_evidence(session: Session) -> list[dict[str, Any]]:
    """Each finished run's evidence manifest as the target served it: what the gate re-hashes later."""
    entries = []
    for run in session.runs.values():
        if not run.run_id or not run.finished:
            continue
        try:
            exchange = session.evidence_file(run)
        except TargetUnreachable:
            continue
        if exchange.status != 200:
            continue
        try:
            manifest = exchange.json()
        except CheckFailure:
            continue
        if session.contract.problems("evidence-manifest", manifest):
            continue
        copy = session.folder.write_bytes(f"training/{run.folder}/manifest.json", exchange.body)
        entries.append(
            {
                "run_id": run.run_id,
                "path": f"training/{run.run_id}",
                "manifest_sha256": hashlib.sha256(exchange.body).hexdigest(),
                "manifest": manifest,
                "copy": copy,
            }
        )
    return entries


def _write_checkpoint_results(session: Session) -> None:
    by_run: dict[str, list[dict[str, Any]]] = {}
    folders = {r.run_id: r.folder for r in session.runs.values() if r.run_id}
    for (run_id, _), got in session.downloaded_checkpoints().items():
        by_run.setdefault(run_id, []).append(
            {
                "name": got.name,
                "file": got.path,
                "probe": got.exchange.probe,
                "sha256": got.sha256,
                "bytes": got.bytes,
                "opens": got.checkpoint is not None,
                "error": got.error,
                "tensors": len(got.checkpoint.tensors) if got.checkpoint else None,
                "metadata": got.checkpoint.metadata if got.checkpoint else None,
                **_plain(got.results),
            }
        )
    for run_id, entries in by_run.items():
        session.folder.write_json(f"checkpoints/{folders.get(run_id, run_id)}/verification.json", entries)
