"""Section 1: health, readiness, and the headers every response carries (the request id echoed among them)."""

from __future__ import annotations

import json
import re
from typing import Any

from ..expectations import expect_headers, expect_json, response_kind
from ..failures import CheckFailure
from ..profile import load_profile
from ..registry import check
from ..session import Session

_AREA = ("schemas/health.schema.json", "schemas/headers.json", "reference_server/")
_DEFAULT = load_profile()
#: The default profile's markers, as the requirement texts show them.
_STAGE = f"{_DEFAULT.name}: " + ", ".join(f'"{k}": {json.dumps(v)}' for k, v in _DEFAULT.health.items())
_HEADERS = f"{_DEFAULT.name}: " + ", ".join(f"{k}: {v}" for k, v in _DEFAULT.headers.items())


def _probe(s: Session, path: str) -> Any:
    if path not in s.health:
        s.health[path] = s.client.request("GET", path)
    return s.health[path]


@check(
    "health.liveness",
    "Liveness answers honestly",
    "GET /healthz answers 200 with a body valid against health.schema.json carrying the profile's stage markers "
    f"({_STAGE}), and the JSON response headers.",
    evidence="the GET /healthz probe",
    area=_AREA,
)
def liveness(s: Session) -> dict[str, Any]:
    exchange = _probe(s, "/healthz")
    body = expect_json(s.contract, exchange, "health")
    expect_headers(s.contract, exchange, "json")
    return {"status": body["status"], "version": body["version"], "commit": body["commit"]}


@check(
    "health.readiness",
    "Readiness answers ready",
    "Once the target is ready (the suite waits up to --ready-timeout for it), GET /readyz answers 200 with a body "
    f"valid against health.schema.json whose status is not not_ready, the profile's stage markers ({_STAGE}), and "
    "the JSON response headers.",
    evidence="the GET /readyz probes (every readiness poll, the last one judged); `readiness` in report.json",
    area=_AREA,
)
def readiness(s: Session) -> dict[str, Any]:
    exchange = _probe(s, "/readyz")
    body = expect_json(s.contract, exchange, "health")
    expect_headers(s.contract, exchange, "json")
    if body["status"] == "not_ready":
        raise CheckFailure("Not ready", "/readyz answered 200 with status not_ready", [exchange.probe])
    return {"status": body["status"], "checks": body.get("checks")}


@check(
    "health.request_id_echo",
    "X-Request-ID is echoed",
    "Every response returns the well-formed X-Request-ID its request sent, unchanged; a malformed one is replaced "
    "by a new well-formed id.",
    evidence="every probe (the X-Request-ID sent and the one answered)",
    area=_AREA,
    last=True,
)
def request_id_echo(s: Session) -> dict[str, Any]:
    malformed = s.client.request("GET", "/healthz", headers={"X-Request-ID": "not a valid id!"})
    pattern = s.contract.headers["all"]["X-Request-ID"]["pattern"]
    answered = [e for e in s.client.recorder.exchanges if e.error is None and e is not malformed]
    wrong = [e for e in answered if e.headers.get("x-request-id") != e.request_id]
    if wrong:
        e = wrong[0]
        raise CheckFailure(
            "Request id not echoed",
            f"{len(wrong)} of {len(answered)} responses did not echo X-Request-ID; e.g. {e.method} {e.url} sent "
            f"{e.request_id!r}, got {e.headers.get('x-request-id')!r}",
            [x.probe for x in wrong[:10]],
        )
    replaced = malformed.headers.get("x-request-id", "")
    if replaced == "not a valid id!" or not re.fullmatch(pattern, replaced):
        raise CheckFailure(
            "Malformed request id not replaced", f"sent 'not a valid id!', got {replaced!r}", [malformed.probe]
        )
    return {"echoed": len(answered), "replacement": replaced}


@check(
    "health.headers",
    "Every response carries the required headers",
    "Every response the suite received carries the `all` block of schemas/headers.json (X-Request-ID, the "
    f"profile's markers ({_HEADERS}), X-Commit-SHA, X-Content-Type-Options: nosniff) and the block of its kind "
    "(JSON, problem, SSE, checkpoint).",
    evidence="every probe's raw response headers",
    area=_AREA,
    last=True,
)
def every_response(s: Session) -> dict[str, Any]:
    answered = [e for e in s.client.recorder.exchanges if e.error is None]
    broken = []
    for exchange in answered:
        problems = s.contract.header_problems(response_kind(exchange), exchange.headers)
        if problems:
            broken.append((exchange, problems))
    if broken:
        lines = [f"{e.method} {e.url} ({e.status}): {'; '.join(p)}" for e, p in broken[:10]]
        more = f" (and {len(broken) - 10} more)" if len(broken) > 10 else ""
        raise CheckFailure(
            "Required headers missing or wrong",
            f"{len(broken)} of {len(answered)} responses break the header contract{more}: " + " | ".join(lines),
            [e.probe for e, _ in broken[:20]],
        )
    return {"responses": len(answered)}
