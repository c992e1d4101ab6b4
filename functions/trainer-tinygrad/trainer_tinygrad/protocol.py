"""The progress protocol: one JSON object per line on stdout, flushed per line (see the README).

Exit codes and the terminal events live here so the process and its readers agree on one table.
"""

from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from trainer_tinygrad.clock import utc_now

#: Exit codes, one per terminal event.
EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_INVALID_CONFIG = 2
EXIT_CANCELLED = 3


class StopRequest:
    """Whether SIGTERM or SIGINT asked the run to stop (it then ends after the current step, `cancelled`, exit 3).

    A plain flag, set from the signal handler: a handler must take no lock. threading.Event.set takes one, and a second
    signal whose handler runs while the first one's still holds it deadlocks the process (a scripted trainer in the
    tests hung so, three SIGTERMs deep, after its server had been killed).
    """

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> bool:
        """Ask for the stop (from a signal handler); True the first time only."""
        first, self.requested = not self.requested, True
        return first

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self.requested


def tinygrad_version() -> str:
    """The installed tinygrad's version, as reported in `started`, `device` and checkpoint metadata."""
    return _version("tinygrad")


def function_version() -> str:
    """`trainer-tinygrad <version> (tinygrad <version>)`: what `--version` of the function's commands prints."""
    return f"trainer-tinygrad {_version('trainer-tinygrad')} (tinygrad {tinygrad_version()})"


@functools.cache  # read from the installed metadata (~1 ms); asked for by every step-cache key and event
def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # importable without its metadata (vendored): still say which code ran
        return "unknown"


class EventWriter:
    """Writes protocol events to one text stream; every event carries `event` first and a `time`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.terminal: str | None = None

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event line and flush it; returns the object written."""
        if self.terminal is not None:
            raise RuntimeError(f"event {event!r} after the terminal event {self.terminal!r}")
        record = {"event": event, **fields, "time": utc_now()}
        # allow_nan=False: a NaN would make the line invalid JSON for every reader; callers check finiteness.
        self._stream.write(json.dumps(record, allow_nan=False) + "\n")
        self._stream.flush()
        if event in ("finished", "failed", "cancelled"):
            self.terminal = event
        return record
