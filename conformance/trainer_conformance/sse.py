"""A Server-Sent Events decoder that follows the WHATWG parsing rules line by line.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
Lines end at CRLF, LF or CR (also when a CRLF is split across two chunks); `data` lines are joined with LF; the last
event id persists across events until an `id` field changes it (an id containing NUL is ignored); `retry` is taken
only when all ASCII digits; comment lines (starting with `:`) dispatch nothing; a trailing event that was never
ended by a blank line is dropped when the stream ends; a leading BOM is skipped.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event, as a browser's EventSource would see it."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder: feed it bytes as they arrive, get back the events those bytes completed."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line: list[str] = []
        self._after_cr = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self.retry: int | None = None
        #: Comment lines seen so far, without the leading colon (heartbeats, usually).
        self.comments: list[str] = []

    @property
    def last_event_id(self) -> str:
        """The last event ID buffer: what a client would send as `Last-Event-ID` on reconnecting."""
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode `chunk` and return the events it completed, in order."""
        text = self._text.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events: list[ServerSentEvent] = []
        for char in text:
            if self._after_cr:
                self._after_cr = False
                if char == "\n":
                    continue
            if char in "\r\n":
                self._after_cr = char == "\r"
                event = self._process_line("".join(self._line))
                self._line.clear()
                if event is not None:
                    events.append(event)
            else:
                self._line.append(char)
        return events

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: flush the text decoder. A partial line or an undispatched event is dropped."""
        self._text.decode(b"", final=True)
        self._line.clear()
        self._data.clear()
        self._event = ""
        return []

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:])
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            event=self._event or "message", data="\n".join(self._data), id=self._last_id, retry=self.retry
        )
        self._data.clear()
        self._event = ""
        return event
