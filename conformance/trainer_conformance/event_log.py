"""The rules an event log (metrics.jsonl) keeps, as the suite reads them: ids exactly 1..N; the first event is the
run's `status`; each attempt has at most one `end`, after which only a resume (a `status` event carrying
`resumed_from`) may follow. The reference server keeps the same rules; the suite states them on its own, as it must
verify a server without importing it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def log_problems(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each rule `events` breaks (at most the first five); empty when it keeps them all."""
    problems: list[str] = []
    ended = False
    for line, event in enumerate(events, start=1):
        kind, data = event.get("type"), event.get("data")
        if event.get("id") != line:
            problems.append(f"line {line} has id {event.get('id')!r}, expected {line}")
        if line == 1 and kind != "status":
            problems.append(f"line 1 is a {kind!r} event, not the run's first status")
        resume = kind == "status" and isinstance(data, Mapping) and bool(data.get("resumed_from"))
        if ended and not resume:
            problems.append(f"line {line} is a {kind!r} event after its attempt's end")
        ended = kind == "end" or (ended and not resume)
        if len(problems) >= 5:
            break
    return problems
