"""A Server-Sent Events decoder that follows the WHATWG parsing rules line by line.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
Lines end at CRLF, LF or CR (also when a CRLF is split across two chunks); `data` lines are joined with LF; the last
event id buffer persists across events until an `id` field changes it (an id containing NUL is ignored); `retry` is
taken only when all ASCII digits; comment lines (starting with `:`) dispatch nothing; a trailing event that was
never ended by a blank line is dropped when the stream ends; a leading BOM is skipped.

This is the project's one SSE decoder: the suite, the tests, the benchmarks and the load scripts all use it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

# Only these three end a line; str.splitlines() would also split on form feeds and other separators.
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event, as a browser's EventSource would see it."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


@dataclass(frozen=True)
class SSEComment:
    """A comment line (a heartbeat, usually), without its leading colon."""

    text: str


class SSEDecoder:
    """Incremental decoder: feed it bytes as they arrive, get back the events those bytes completed."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._after_cr = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = ""
        self._last_event_id = ""
        self.retry: int | None = None
        #: Comment lines seen so far, without the leading colon (heartbeats, usually).
        self.comments: list[str] = []

    @property
    def last_event_id(self) -> str:
        """The last event ID string: the id buffer as of the last blank line, which is what a browser sends as
        `Last-Event-ID` when it reconnects. An `id:` whose event was never ended by a blank line does not count."""
        return self._last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode `chunk` and return the events it completed, in order."""
        return [item for item in self.feed_with_comments(chunk) if isinstance(item, ServerSentEvent)]

    def feed_with_comments(self, chunk: bytes) -> list[ServerSentEvent | SSEComment]:
        """Like `feed`, with the comment lines among the events in stream order (for a relay that passes them on)."""
        text = self._text.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF whose CR ended the previous chunk
        buffered = self._pending + text
        self._after_cr = buffered.endswith("\r")
        lines = _LINE_END.split(buffered)
        self._pending = lines.pop()
        items: list[ServerSentEvent | SSEComment] = []
        for line in lines:
            item = self._process_line(line)
            if item is not None:
                items.append(item)
        return items

    def state(self) -> tuple[Any, ...]:
        """Everything the next `feed` depends on (the comments seen are output, not state): equal states fed equal
        bytes give equal events and equal states after."""
        return (self._text.getstate(), self._pending, self._after_cr, self._started, tuple(self._data), self._event,
                self._id_buffer, self._last_event_id, self.retry)  # fmt: skip

    def restore(self, state: tuple[Any, ...], comments: list[str]) -> None:
        """Take `state` (from `state()`), as if the bytes that led another decoder there had been fed here, and the
        comment lines they held."""
        text, self._pending, self._after_cr, self._started, data, self._event, *rest = state
        self._id_buffer, self._last_event_id, self.retry = rest
        self._text.setstate(text)
        self._data = list(data)
        self.comments.extend(comments)

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: flush the text decoder. A partial line or an undispatched event is dropped."""
        self._text.decode(b"", final=True)
        self._pending = ""
        self._after_cr = False
        self._data.clear()
        self._event = ""
        return []

    def _process_line(self, line: str) -> ServerSentEvent | SSEComment | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:])
            return SSEComment(line[1:])
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif field == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        # The spec sets the last event ID string at every blank line, even one that dispatches no event.
        self._last_event_id = self._id_buffer
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            event=self._event or "message", data="\n".join(self._data), id=self._id_buffer, retry=self.retry
        )
        self._data.clear()
        self._event = ""
        return event


class SharedDecoding:
    """Decoders of one stream's copies (many subscribers of one live run) decode each piece of it once: a decoder fed
    bytes in a state that another was fed the same bytes in takes that one's events and resulting state instead of
    decoding them again. Exact by construction (`SSEDecoder.feed` is a function of its state and the bytes). Why: at
    1,000 subscribers the decoding was half of a load client's CPU, on the same cores as the server it measures.
    Holds at most `limit` decodings (then starts afresh)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        #: (state before, bytes) -> (events, comment lines, state after)
        self._done: dict[tuple[tuple[Any, ...], bytes], tuple[list[ServerSentEvent], list[str], tuple[Any, ...]]] = {}

    def feed(self, decoder: SSEDecoder, chunk: bytes) -> list[ServerSentEvent]:
        """What `decoder.feed(chunk)` returns (a list shared by the decoders it is given to: read it, do not change
        it), leaving `decoder` as that would."""
        key = (decoder.state(), chunk)
        done = self._done.get(key)
        if done is not None:
            events, comments, after = done
            decoder.restore(after, comments)
            return events
        items = decoder.feed_with_comments(chunk)
        events = [item for item in items if isinstance(item, ServerSentEvent)]
        if len(self._done) >= self.limit:
            self._done.clear()
        self._done[key] = (events, [item.text for item in items if isinstance(item, SSEComment)], decoder.state())
        return events
