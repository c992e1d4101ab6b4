"""The assertions checks are composed of: each raises CheckFailure citing the probe it judged."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import httpx

from .contract import Contract
from .failures import CheckFailure
from .probes import Exchange

_CHECKPOINT_PATH = re.compile(r"^/api/training/runs/[^/]+/checkpoints/[^/]+$")
#: Response kinds of the header contract, by media type.
_KINDS = {
    "application/problem+json": "problem",
    "application/json": "json",
    "text/event-stream": "sse",
    "application/octet-stream": "checkpoint",
}


def response_kind(exchange: Exchange) -> str:
    """The header-contract block that applies to a response, from its media type (`all` only when unknown).

    The checkpoint block (Digest, X-Checksum-SHA256) applies to checkpoint downloads, not every binary answer.
    """
    kind = _KINDS.get(exchange.content_type, "all")
    if kind == "checkpoint" and not _CHECKPOINT_PATH.search(httpx.URL(exchange.url).path):
        return "all"
    return kind


def expect_status(exchange: Exchange, *allowed: int) -> None:
    """The response status is one of `allowed`. The message names a problem answer's `code` and `detail`, so the
    reason is in discrepancies.md, not only in the probe."""
    if exchange.status not in allowed:
        wanted = " or ".join(str(code) for code in allowed)
        answered = f"{exchange.status}{problem_summary(exchange)}"
        raise CheckFailure(
            "Unexpected status code",
            f"{exchange.method} {exchange.url} answered {answered}, expected {wanted}",
            [exchange.probe],
        )


def problem_summary(exchange: Exchange) -> str:
    """` (code: detail)` for an RFC 9457 problem answer that names them; empty for anything else."""
    if not exchange.body or not (exchange.content_type.endswith("+json") or exchange.content_type.endswith("/json")):
        return ""
    try:
        body = json.loads(exchange.body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(body, dict) or not ({"code", "detail", "title"} & body.keys()):
        return ""
    code = body.get("code") or body.get("title")
    detail = body.get("detail")
    said = ": ".join(str(part) for part in (code, detail) if part)
    return f" ({said[:300]})" if said else ""


def expect_media_type(exchange: Exchange, media_type: str) -> None:
    """The response's Content-Type is `media_type` (parameters ignored)."""
    if exchange.content_type != media_type:
        raise CheckFailure(
            "Wrong media type",
            f"{exchange.method} {exchange.url} answered Content-Type {exchange.headers.get('content-type')!r}, "
            f"expected {media_type}",
            [exchange.probe],
        )


def expect_valid(contract: Contract, schema: str, instance: Any, what: str, evidence: Iterable[str]) -> None:
    """`instance` is valid against `schema`."""
    problems = contract.problems(schema, instance)
    if problems:
        raise CheckFailure(
            "Response violates schema",
            f"{what} is not valid against {schema}.schema.json: " + "; ".join(problems[:5]),
            list(evidence),
        )


def expect_json(contract: Contract, exchange: Exchange, schema: str, *, status: int | tuple[int, ...] = 200) -> Any:
    """Status (one of them, when a tuple), `application/json`, and a body valid against `schema`; returns the body."""
    expect_status(exchange, *(status if isinstance(status, tuple) else (status,)))
    expect_media_type(exchange, "application/json")
    body = exchange.json()
    expect_valid(contract, schema, body, f"{exchange.method} {exchange.url}", [exchange.probe])
    return body


def expect_headers(contract: Contract, exchange: Exchange, kind: str | None = None) -> None:
    """The response carries the header contract's `all` block and the block of its kind."""
    problems = contract.header_problems(kind or response_kind(exchange), exchange.headers)
    if problems:
        raise CheckFailure(
            "Required headers missing or wrong",
            f"{exchange.method} {exchange.url}: " + "; ".join(problems),
            [exchange.probe],
        )


def expect_problem(contract: Contract, exchange: Exchange, *statuses: int) -> dict[str, Any]:
    """An RFC 9457 problem+json answer with one of `statuses`, valid against problem.schema.json."""
    expect_status(exchange, *statuses)
    expect_media_type(exchange, "application/problem+json")
    body = exchange.json()
    expect_valid(contract, "problem", body, f"{exchange.method} {exchange.url}", [exchange.probe])
    if body.get("status") != exchange.status:
        raise CheckFailure(
            "Problem status disagrees",
            f"body status {body.get('status')} but HTTP status {exchange.status}",
            [exchange.probe],
        )
    expect_headers(contract, exchange, "problem")
    return dict(body)


def non_finite(values: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """Keys of `values` holding numbers that are NaN or infinite (JSON parsers accept NaN/Infinity)."""
    return [k for k in keys if isinstance(values.get(k), float) and not math.isfinite(values[k])]
