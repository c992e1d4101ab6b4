"""Section 8: errors are RFC 9457 problem+json with the right status."""

from __future__ import annotations

import uuid
from typing import Any

from ..expectations import expect_problem
from ..failures import CheckFailure
from ..probes import Exchange
from ..registry import check
from ..session import CREATED, Session

_AREA = ("schemas/problem.schema.json", "reference_server/")


def _cancel_if_started(s: Session, exchange: Exchange) -> None:
    # A target that accepts a bad body starts a run: stop it so the suite leaves the target as it found it.
    if exchange.status in CREATED:
        try:
            run_id = exchange.json().get("run_id")
        except (CheckFailure, AttributeError):
            return
        if isinstance(run_id, str):
            s.extra_runs.append(run_id)
            s.client.request("POST", f"/api/training/runs/{run_id}/cancel")


@check(
    "errors.unknown_run",
    "Unknown runs answer 404",
    "GET /api/training/runs/{id}, .../metrics and .../checkpoints for a run that does not exist answer 404 "
    "application/problem+json valid against problem.schema.json.",
    evidence="a probe per request",
    area=_AREA,
)
def unknown_run(s: Session) -> dict[str, Any]:
    missing = f"nosuchrun{uuid.uuid4().hex[:12]}"
    codes = {}
    for suffix in ("", "/metrics", "/checkpoints"):
        exchange = s.client.request("GET", f"/api/training/runs/{missing}{suffix}")
        codes[suffix or "/"] = expect_problem(s.contract, exchange, 404)["code"]
    return {"codes": codes}


@check(
    "errors.invalid_body",
    "Invalid run requests answer 400 or 422",
    "POST /api/training/runs with malformed JSON, a wrongly typed field, an unknown field, or steps together with "
    "epochs answers 400 or 422 application/problem+json valid against problem.schema.json, and starts nothing.",
    evidence="a probe per request",
    area=(*_AREA, "schemas/run-create-request.schema.json"),
)
def invalid_body(s: Session) -> dict[str, Any]:
    cases: dict[str, dict[str, Any]] = {
        "malformed_json": {"content": b'{"steps": 10,', "headers": {"Content-Type": "application/json"}},
        "wrong_type": {"json_body": {"steps": "many"}},
        "unknown_field": {"json_body": {"no_such_field": 1}},
        "steps_and_epochs": {"json_body": {"steps": 10, "epochs": 1}},
    }
    codes = {}
    for name, kwargs in cases.items():
        exchange = s.client.request("POST", "/api/training/runs", **kwargs)
        _cancel_if_started(s, exchange)
        codes[name] = expect_problem(s.contract, exchange, 400, 422)["code"]
    return {"codes": codes}


@check(
    "errors.wrong_method",
    "Wrong methods answer 405",
    "DELETE /api/training/runs and PUT /healthz answer 405 application/problem+json valid against problem.schema.json.",
    evidence="a probe per request",
    area=_AREA,
)
def wrong_method(s: Session) -> dict[str, Any]:
    codes = {}
    for method, path in (("DELETE", "/api/training/runs"), ("PUT", "/healthz")):
        exchange = s.client.request(method, path, content=b"{}" if method == "PUT" else None)
        codes[f"{method} {path}"] = expect_problem(s.contract, exchange, 405)["code"]
    return {"codes": codes}
