"""The SSE decoder against the WHATWG specification's own examples and parsing rules."""

from __future__ import annotations

import pytest
from trainer_conformance.sse import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    decoder.close()
    return events, decoder


def test_spec_example_stock_ticker_joins_data_lines_with_newlines() -> None:
    events, _ = decode(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert [e.data for e in events] == ["YHOO\n+2\n10"]
    assert events[0].event == "message"


def test_spec_example_ids_persist_and_an_empty_id_resets_them() -> None:
    stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    events, decoder = decode(stream)
    assert [(e.data, e.id) for e in events] == [("first event", "1"), ("second event", ""), (" third event", "")]
    assert decoder.comments == [" test stream"]


def test_spec_example_empty_data_and_a_trailing_block_without_blank_line_is_dropped() -> None:
    events, _ = decode(b"data\n\ndata\ndata\n\ndata:")
    assert [e.data for e in events] == ["", "\n"]


def test_spec_example_one_leading_space_is_stripped() -> None:
    events, _ = decode(b"data:test\n\ndata: test\n\n")
    assert [e.data for e in events] == ["test", "test"]


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_is_accepted(newline: bytes) -> None:
    stream = newline.join([b"event: metric", b"id: 7", b"data: a", b"data: b", b"", b""])
    events, _ = decode(stream)
    assert events == [ServerSentEvent(event="metric", data="a\nb", id="7")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    events, _ = decode(b"data: x\r", b"\ndata: y\r", b"\n\r", b"\n")
    assert [e.data for e in events] == ["x\ny"]


def test_byte_at_a_time_and_multibyte_utf8_split_across_chunks() -> None:
    stream = "id: 1\ndata: naïve ✓\n\n".encode()
    events, _ = decode(*[stream[i : i + 1] for i in range(len(stream))])
    assert events == [ServerSentEvent(data="naïve ✓", id="1")]


def test_leading_bom_is_skipped_once() -> None:
    events, _ = decode(b"\xef\xbb\xbfdata: a\n\n")
    assert [e.data for e in events] == ["a"]


def test_retry_only_when_all_digits() -> None:
    _, decoder = decode(b"retry: 1500\n\n")
    assert decoder.retry == 1500
    _, decoder = decode(b"retry: 15s\n\nretry: -1\n\nretry:\n\n")
    assert decoder.retry is None


def test_id_containing_nul_is_ignored() -> None:
    events, decoder = decode(b"id: 4\ndata: a\n\nid: 5\x006\ndata: b\n\n")
    assert [e.id for e in events] == ["4", "4"]
    assert decoder.last_event_id == "4"


def test_comments_and_unknown_fields_dispatch_nothing() -> None:
    events, decoder = decode(b": heartbeat\n\n:\n\nfoo: bar\n\n")
    assert events == []
    assert decoder.comments == [" heartbeat", ""]


def test_field_without_colon_and_event_type_resets_after_dispatch() -> None:
    events, _ = decode(b"event: end\ndata: 1\n\ndata: 2\n\n")
    assert [(e.event, e.data) for e in events] == [("end", "1"), ("message", "2")]


def test_partial_event_at_end_of_stream_is_dropped() -> None:
    events, _ = decode(b"data: whole\n\ndata: partial\n")
    assert [e.data for e in events] == ["whole"]
