"""What makes a run's event log trustworthy, checked in one place: at start-up recovery and by verify-evidence.

A log is trustworthy when its ids run exactly 1..N, it opens with the run's first `status`, and each attempt has
at most one `end`: after an `end` only a resume (a `status` event carrying `resumed_from`) may follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: How many problems a report names before it stops counting (a damaged log can have thousands).
_MAX_PROBLEMS = 5


def log_problems(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each way `events` (metrics.jsonl in order) breaks the rules above; empty when it keeps them."""
    problems: list[str] = []
    ended = False
    for line, event in enumerate(events, start=1):
        if len(problems) >= _MAX_PROBLEMS:
            problems.append("(further problems not listed)")
            break
        kind, data = event.get("type"), event.get("data")
        if event.get("id") != line:
            problems.append(f"line {line} has id {event.get('id')!r}; ids must run 1, 2, 3, ... (expected {line})")
        if line == 1 and kind != "status":
            problems.append(f"line 1 is a {kind!r} event; a log opens with the run's `status` event")
        resume = kind == "status" and isinstance(data, Mapping) and bool(data.get("resumed_from"))
        if ended and not resume:
            problems.append(f"line {line} is a {kind!r} event after the attempt's `end`; only a resume may follow")
        elif not ended and resume:
            problems.append(f"line {line} resumes a run whose attempt has not ended")
        ended = kind == "end" or (ended and not resume)
    return problems
