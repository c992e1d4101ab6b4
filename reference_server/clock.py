"""Wall-clock timestamps in the wire format: RFC 3339, UTC, with `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    """The current time as RFC 3339 UTC with microseconds, e.g. ``2025-01-31T12:00:00.123456Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
