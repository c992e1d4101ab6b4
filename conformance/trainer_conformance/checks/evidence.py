"""Section 6: the target's training evidence: files present and valid, hashes intact, datasets as published."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..event_log import log_problems
from ..expectations import expect_json, expect_status, expect_valid
from ..failures import CheckFailure, CheckSkipped
from ..probes import Exchange
from ..registry import check
from ..session import RunObservation, Session

_AREA = (
    "schemas/evidence-manifest.schema.json",
    "schemas/evidence-config.schema.json",
    "schemas/evidence-provenance.schema.json",
    "reference_server/",
)
REQUIRED_FILES = ("config.json", "provenance.json", "metrics.jsonl")


def evidence_manifest(s: Session, run: RunObservation) -> tuple[Exchange, dict[str, Any]]:
    """The run's evidence manifest, valid against evidence-manifest.schema.json."""
    exchange = s.evidence_file(run)
    body = expect_json(s.contract, exchange, "evidence-manifest")
    if body["run_id"] != run.run_id:
        raise CheckFailure("Wrong run", f"manifest for {body['run_id']}, asked {run.run_id}", [exchange.probe])
    return exchange, body


def _json_file(s: Session, run: RunObservation, name: str, schema: str) -> tuple[Exchange, Any]:
    exchange = s.evidence_file(run, name)
    expect_status(exchange, 200)
    body = exchange.json()
    expect_valid(s.contract, schema, body, name, [exchange.probe])
    if body.get("run_id") != run.run_id:
        raise CheckFailure("Wrong run", f"{name} names run {body.get('run_id')}, asked {run.run_id}", [exchange.probe])
    return exchange, body


def event_log(s: Session, run: RunObservation) -> tuple[Exchange, list[dict[str, Any]]]:
    """metrics.jsonl parsed line by line; every line valid against event.schema.json."""
    exchange = s.evidence_file(run, "metrics.jsonl")
    expect_status(exchange, 200)
    lines = []
    for number, line in enumerate(exchange.body.decode("utf-8", "replace").splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise CheckFailure("metrics.jsonl line is not JSON", f"line {number}: {exc}", [exchange.probe]) from exc
        expect_valid(s.contract, "event", event, f"metrics.jsonl line {number}", [exchange.probe])
        lines.append(event)
    return exchange, lines


@check(
    "evidence.files",
    "Evidence files exist and are valid",
    "GET /api/training/runs/{run_id}/evidence answers the run's manifest (valid against "
    "evidence-manifest.schema.json, status succeeded) listing config.json, provenance.json and metrics.jsonl; "
    "each downloads from .../evidence/{file}, config.json and provenance.json are valid against their schemas and "
    "every metrics.jsonl line is a valid event with ids 1, 2, 3, ..., at most one end per attempt, ending in an end.",
    evidence="`training/<role>-<run_id>/` (config.json, provenance.json, metrics.jsonl, manifest.json as served)",
    needs={"main"},
    area=_AREA,
)
def files(s: Session) -> dict[str, Any]:
    main = s.run("main")
    exchange, manifest = evidence_manifest(s, main)
    listed = {f["path"] for f in manifest["files"]}
    if missing := [name for name in REQUIRED_FILES if name not in listed]:
        raise CheckFailure("Evidence incomplete", f"the manifest lists no {', '.join(missing)}", [exchange.probe])
    if manifest["status"] != main.status:
        raise CheckFailure("Manifest status disagrees", f"{manifest['status']} vs run {main.status}", [exchange.probe])
    _json_file(s, main, "config.json", "evidence-config")
    _json_file(s, main, "provenance.json", "evidence-provenance")
    log, events = event_log(s, main)
    problems = log_problems(events)
    if problems or any(e["run_id"] != main.run_id for e in events):
        detail = "; ".join(problems) or f"an event of another run than {main.run_id}"
        raise CheckFailure("Event log breaks its rules", f"metrics.jsonl: {detail}", [log.probe])
    if not events or events[-1]["type"] != "end":
        raise CheckFailure("Event log unfinished", "metrics.jsonl does not end with an end event", [log.probe])
    return {"files": sorted(listed), "events": len(events)}


@check(
    "evidence.manifest_hashes",
    "Manifest hashes match the files",
    "Every file the evidence manifest lists downloads from .../evidence/{path} with exactly the listed size and "
    "SHA-256, for every run the suite started.",
    evidence="`training/<role>-<run_id>/` of every run; report.json `training_evidence`",
    needs={"main"},
    area=_AREA,
    all_runs=True,
)
def manifest_hashes(s: Session) -> dict[str, Any]:
    s.run("main")
    checked: dict[str, int] = {}
    for run in s.runs.values():
        if not run.run_id or not run.finished:
            continue
        exchange, manifest = evidence_manifest(s, run)
        for entry in manifest["files"]:
            got = s.evidence_file(run, entry["path"])
            expect_status(got, 200)
            digest = hashlib.sha256(got.body).hexdigest()
            if digest != entry["sha256"] or len(got.body) != entry["bytes"]:
                raise CheckFailure(
                    "Evidence hash mismatch",
                    f"run {run.run_id} {entry['path']}: {len(got.body)} bytes sha256 {digest}; the manifest says "
                    f"{entry['bytes']} bytes sha256 {entry['sha256']}",
                    [got.probe, exchange.probe],
                )
        checked[run.run_id] = len(manifest["files"])
    return {"files_per_run": checked}


@check(
    "evidence.provenance_datasets",
    "Provenance names the published dataset bytes",
    "provenance.json records the run's dataset, and every dataset file it records matches the published dataset "
    "manifest (functions/trainer-tinygrad/datasets/checksums.json): the archive SHA-256 when it matched as an "
    "archive, the payload SHA-256 when it matched as a payload.",
    evidence="`training/main-<run_id>/provenance.json`",
    needs={"main"},
    area=(*_AREA, "schemas/dataset-provenance.schema.json", "functions/trainer-tinygrad/datasets/checksums.json"),
)
def provenance_datasets(s: Session) -> dict[str, Any]:
    main = s.run("main")
    if s.manifest is None:
        raise CheckSkipped("the published dataset manifest is not available to this installation")
    exchange, provenance = _json_file(s, main, "provenance.json", "evidence-provenance")
    evidence = [exchange.probe, f"published manifest {s.manifest.path}"]
    dataset = main.config.get("dataset")
    records = {d["name"]: d for d in provenance["datasets"]}
    if dataset not in records:
        raise CheckFailure(
            "Dataset not recorded", f"provenance.json records {sorted(records)}, run uses {dataset}", evidence
        )
    matched = {}
    for record in provenance["datasets"]:
        for file in record["files"]:
            published = s.manifest.file(record["name"], file["name"])
            if published is None:
                raise CheckFailure(
                    "Unpublished file", f"{record['name']}/{file['name']} is not in the manifest", evidence
                )
            expected: str | None
            if file["matched"] == "archive":
                ok = file["sha256"] == published.sha256
                expected, recorded = published.sha256, file["sha256"]
            else:
                recorded = file.get("payload_sha256")
                ok = published.payload_sha256 is not None and recorded == published.payload_sha256
                expected = published.payload_sha256
            if not ok:
                raise CheckFailure(
                    "Dataset hash differs from the published manifest",
                    f"{record['name']}/{file['name']} matched as {file['matched']}: recorded {recorded}, "
                    f"published {expected}",
                    evidence,
                )
            matched[f"{record['name']}/{file['name']}"] = file["matched"]
    same_manifest = {d["name"]: d["manifest_sha256"] == s.manifest.sha256 for d in provenance["datasets"]}
    return {"files": matched, "target_manifest_equals_published": same_manifest}


@check(
    "evidence.event_log",
    "The event log is what was streamed",
    "Each event the SSE stream delivered is, field for field, the metrics.jsonl line with the same id.",
    evidence="`training/main-<run_id>/metrics.jsonl`; `sse/main.events.jsonl`",
    needs={"main"},
    area=(*_AREA, "schemas/event.schema.json"),
)
def event_log_matches_stream(s: Session) -> dict[str, Any]:
    main = s.run("main")
    if main.stream is None:
        raise CheckSkipped("the main run's stream was not read")
    log, events = event_log(s, main)
    by_id = {e["id"]: e for e in events}
    for received in main.stream.events:
        payload = received.payload
        if not isinstance(payload, dict) or by_id.get(payload.get("id")) != payload:
            raise CheckFailure(
                "Stream differs from the event log",
                f"SSE event {received.sse.id} is not the metrics.jsonl line with that id",
                [log.probe, f"sse/{main.stream.name}.events.jsonl"],
            )
    return {"streamed": len(main.stream.events), "logged": len(events)}
