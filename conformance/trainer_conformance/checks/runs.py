"""Section 2: starting a run, its status bodies and lifecycle, its dataset."""

from __future__ import annotations

import itertools
from typing import Any

from ..expectations import expect_headers, expect_json, expect_valid
from ..failures import CheckFailure, CheckSkipped
from ..registry import check
from ..session import CREATED, Session

_AREA = ("schemas/run.schema.json", "schemas/run-create-request.schema.json", "reference_server/")
#: The lifecycle: queued -> running -> one terminal status. A later observation may skip a state it did not see
#: (polls are sparse), so what is checked is that a run never moves backwards or out of a terminal status.
_RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2, "interrupted": 2}


@check(
    "runs.create",
    "Starting a run answers 200, 201 or 202 with the run and its Location",
    "POST /api/training/runs answers 200, 201 or 202 with a body valid against run.schema.json (a run_id, a "
    "status, links) and a Location header.",
    evidence="the POST /api/training/runs probe",
    needs={"main"},
    area=_AREA,
)
def create(s: Session) -> dict[str, Any]:
    main = s.runs.get("main")
    if main is None:
        raise CheckSkipped("no run was started")
    body = expect_json(s.contract, main.create, "run", status=CREATED)
    expect_headers(s.contract, main.create, "json")
    if not main.create.headers.get("location"):
        raise CheckFailure(
            "No Location header",
            f"the {main.create.status} answer to POST /api/training/runs has no Location",
            [main.create.probe],
        )
    return {
        "run_id": body["run_id"],
        "status": body["status"],
        "http_status": main.create.status,
        "location": main.create.headers["location"],
    }


@check(
    "runs.status_schema",
    "Status bodies are valid",
    "Every GET /api/training/runs/{run_id} answer while the run trains is 200 with a body valid against "
    "run.schema.json, for the same run id.",
    evidence="every status-poll probe of the main run",
    needs={"main"},
    area=_AREA,
)
def status_schema(s: Session) -> dict[str, Any]:
    main = s.run("main", finished=False)
    if not main.polls:
        raise CheckFailure("Run never polled", "no status answer was received for the main run", [main.create.probe])
    for poll in main.polls:
        body = expect_json(s.contract, poll.exchange, "run")
        if body["run_id"] != main.run_id:
            raise CheckFailure("Wrong run", f"asked for {main.run_id}, got {body['run_id']}", [poll.exchange.probe])
    return {"polls": len(main.polls)}


@check(
    "runs.transitions",
    "Status moves only forward",
    "Observed statuses (create answer, polls, SSE status and end events) follow queued -> running -> one terminal "
    "status (succeeded, failed, cancelled, interrupted), never backwards and never out of a terminal status.",
    evidence="the status polls; `sse/main.events.jsonl`",
    needs={"main"},
    area=_AREA,
)
def transitions(s: Session) -> dict[str, Any]:
    main = s.run("main", finished=False)
    sequences: dict[str, list[tuple[str, str]]] = {"polls": []}
    if main.body and "status" in main.body:
        sequences["polls"].append((str(main.body["status"]), main.create.probe))
    sequences["polls"] += [(p.status, p.exchange.probe) for p in main.polls if p.status]
    if main.stream:
        events = [
            (e.payload.get("data", {}).get("status"), f"sse/{main.stream.name}.events.jsonl")
            for e in main.stream.events
            if isinstance(e.payload, dict) and e.payload.get("type") in ("status", "end")
        ]
        sequences["sse"] = [(str(status), where) for status, where in events if status]
    seen: dict[str, list[str]] = {}
    for source, observed in sequences.items():
        collapsed = [observed[i] for i in range(len(observed)) if i == 0 or observed[i][0] != observed[i - 1][0]]
        seen[source] = [status for status, _ in collapsed]
        for (before, _), (after, where) in itertools.pairwise(collapsed):
            if before not in _RANK or after not in _RANK:
                raise CheckFailure("Unknown status", f"{source}: status {before!r} -> {after!r}", [where])
            if _RANK[after] <= _RANK[before]:
                raise CheckFailure("Illegal status transition", f"{source}: {before} -> {after}", [where])
    return {"observed": seen}


@check(
    "runs.finishes",
    "The run succeeds within the timeout",
    "The main run reaches status succeeded within --timeout seconds of being started.",
    evidence="the last status poll (and the cancel, when the suite had to stop the run)",
    needs={"main"},
    area=_AREA,
)
def finishes(s: Session) -> dict[str, Any]:
    main = s.run("main", finished=False)
    last = main.polls[-1].exchange.probe if main.polls else main.create.probe
    if not main.finished:
        raise CheckFailure(
            "Run did not finish",
            f"run {main.run_id} was still {main.status!r} after {s.options.timeout:g} s (the suite cancelled it)",
            [last],
        )
    if main.status != "succeeded":
        error = (main.final or {}).get("error")
        raise CheckFailure("Run did not succeed", f"run {main.run_id} ended {main.status}: {error}", [last])
    assert main.finished_mono is not None
    return {"run_id": main.run_id, "seconds": round(main.finished_mono - main.started_mono, 3)}


@check(
    "runs.dataset",
    "The run trains on the right dataset",
    "The run's resolved dataset is the one asked for (--dataset), or else the target's first verified dataset in "
    "the order mnist, fashion-mnist, cifar10; GET /api/datasets answers a body valid against "
    "dataset-list.schema.json.",
    evidence="the GET /api/datasets probe; the create answer",
    needs={"main"},
    area=(*_AREA, "schemas/dataset-list.schema.json"),
)
def dataset(s: Session) -> dict[str, Any]:
    main = s.run("main", finished=False)
    assert s.datasets is not None
    expect_json(s.contract, s.datasets, "dataset-list")
    expected = s.options.dataset or s.default_dataset()
    actual = main.config.get("dataset")
    evidence = [main.create.probe, s.datasets.probe]
    if expected is None:
        raise CheckFailure("No verified dataset", "GET /api/datasets lists no verified dataset", evidence)
    if actual != expected:
        raise CheckFailure("Wrong dataset", f"the run trains on {actual!r}, expected {expected!r}", evidence)
    expect_valid(s.contract, "training-config", main.config, "the run's config", evidence)
    return {"dataset": actual, "asked": s.options.dataset}
