"""What the suite tells a person while it runs, on stderr: the phase, the runs' progress, each check's outcome.

Three forms: a live line rewritten in place on a terminal (with colour unless NO_COLOR is set), plain lines for CI
logs (a status line when something changes, at most every PLAIN_EVERY_S per topic, and one line per check), and
nothing at all (`--quiet`). Stdout stays for the verdict (or the `--json` summary), so it can be piped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TextIO

#: In plain mode, a topic's routine updates (events seen, steps) are printed at most this often.
PLAIN_EVERY_S = 5.0
_COLOURS = {"passed": "\x1b[32m", "failed": "\x1b[31m", "error": "\x1b[31m", "skipped": "\x1b[33m"}
_RESET, _CLEAR = "\x1b[0m", "\r\x1b[2K"


class Progress:
    """Silent: the base class, and what `--quiet` gets. The other forms override `_show` and `_print`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._topics: dict[str, str] = {}
        self._printed: dict[str, float] = {}

    def elapsed(self) -> str:
        """Seconds since the suite started, as `[12.3s]`."""
        return f"[{time.monotonic() - self.started:5.1f}s]"

    def status(self, topic: str, text: str, *, milestone: bool = False) -> None:
        """What `topic` (health, main run, control runs, checks) is doing now. A milestone (a phase starts or
        ends) is always shown; routine updates may be thinned out."""
        with self._lock:
            if self._topics.get(topic) == text:
                return
            self._topics[topic] = text
            self._show(topic, text, milestone)

    def done(self, topic: str) -> None:
        """`topic` has nothing more to say."""
        with self._lock:
            self._topics.pop(topic, None)
            self._show(topic, "", False)

    def outcome(self, check_id: str, status: str, seconds: float, message: str | None = None) -> None:
        """One check was decided."""
        line = f"{check_id} {status} ({seconds:.2f} s)"
        if message and status != "passed":
            line += f": {message[:160]}"
        with self._lock:
            self._print(line, status)

    def close(self) -> None:
        """The suite is about to print its verdict: leave the terminal clean."""

    def _show(self, topic: str, text: str, milestone: bool) -> None:
        pass

    def _print(self, line: str, status: str | None = None) -> None:
        pass


class PlainProgress(Progress):
    """Lines for logs: `[ 12.3s] main run: running, step 700/1500, 84 events`."""

    def _show(self, topic: str, text: str, milestone: bool) -> None:
        now = time.monotonic()
        if not text or (not milestone and now - self._printed.get(topic, -PLAIN_EVERY_S) < PLAIN_EVERY_S):
            return
        self._printed[topic] = now
        self._print(f"{topic}: {text}")

    def _print(self, line: str, status: str | None = None) -> None:
        self.stream.write(f"{self.elapsed()} {line}\n")
        self.stream.flush()


class LiveProgress(Progress):
    """One line rewritten in place on a terminal; check outcomes scroll above it."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool = True) -> None:
        super().__init__(stream)
        self.colour = colour

    def _show(self, topic: str, text: str, milestone: bool) -> None:
        self._redraw()

    def _print(self, line: str, status: str | None = None) -> None:
        if self.colour and status in _COLOURS:
            line = line.replace(f" {status} ", f" {_COLOURS[status]}{status}{_RESET} ", 1)
        self.stream.write(f"{_CLEAR}{self.elapsed()} {line}\n")
        self._redraw()

    def _redraw(self) -> None:
        parts = " · ".join(f"{topic}: {text}" for topic, text in self._topics.items() if text)
        width = 200  # a terminal that does not say how wide it is (0 columns) gets this much
        with contextlib.suppress(OSError, ValueError):
            columns = os.get_terminal_size(self.stream.fileno()).columns
            width = columns - 1 if columns > 20 else width
        line = f"{self.elapsed()} {parts}"
        self.stream.write(_CLEAR + (line if len(line) <= width else line[: max(width - 1, 1)] + "…"))
        self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self.stream.write(_CLEAR)
            self.stream.flush()


def progress_for(stream: TextIO, *, quiet: bool = False) -> Progress:
    """The form that suits `stream`: nothing when quiet, a live line on a terminal, plain lines otherwise."""
    if quiet:
        return Progress(stream)
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveProgress(stream, colour=not os.environ.get("NO_COLOR"))
    return PlainProgress(stream)
