"""The SSE decoder against the WHATWG specification's own examples and parsing rules."""

from __future__ import annotations

import random

import pytest
from trainer_conformance.sse import ServerSentEvent, SharedDecoding, SSEComment, SSEDecoder


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


def test_last_event_id_is_the_last_dispatched_one_not_a_pending_id() -> None:
    # WPT format-data-before-final-empty-line: the stream ends before the blank line that would dispatch `id:test`,
    # so a reconnecting browser sends no Last-Event-ID.
    events, decoder = decode(b"retry:1000\ndata:test1\n\nid:test\ndata:test2")
    assert [e.data for e in events] == ["test1"]
    assert decoder.last_event_id == ""


def test_last_event_id_moves_at_a_blank_line_even_without_data() -> None:
    # The spec copies the id buffer to the last event ID string at every blank line, event or not.
    events, decoder = decode(b"data: a\nid: 1\n\nid: 2\n\n")
    assert [e.id for e in events] == ["1"]
    assert decoder.last_event_id == "2"


def test_last_event_id_while_an_event_is_still_arriving() -> None:
    decoder = SSEDecoder()
    assert [e.id for e in decoder.feed(b"id: 7\ndata: a\n\nid: 8\ndata: b\n")] == ["7"]
    assert decoder.last_event_id == "7"
    assert [e.id for e in decoder.feed(b"\n")] == ["8"]
    assert decoder.last_event_id == "8"


# The web-platform-tests eventsource/format-*.htm streams (html/semantics/server-sent-events in WPT), each with the
# events a conforming EventSource dispatches: (data, event type, lastEventId).
WPT = [
    pytest.param(b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n",
                 [("1", "message", ""), ("3", "message", "")], id="format-bom"),
    pytest.param(b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3\n\n",
                 [("2", "message", ""), ("3", "message", "")], id="format-bom-2"),
    pytest.param(b"data:1\r:\0\n:\r\ndata:2\n:" + b"x" * 2049 + b"\rdata:3\n:data:fail\r:" + b"x" * 2049
                 + b"\ndata:4\n\n",
                 [("1\n2\n3\n4", "message", "")], id="format-comments"),
    pytest.param(b"retry:1000\ndata:test1\n\nid:test\ndata:test2", [("test1", "message", "")],
                 id="format-data-before-final-empty-line"),
    pytest.param(b"data:\n\ndata\ndata\n\ndata:test\n\n", [("", "message", ""), ("\n", "message", ""),
                 ("test", "message", "")], id="format-field-data"),
    pytest.param(b"event: \ndata:data\n\n", [("data", "message", "")], id="format-field-event-empty"),
    pytest.param(b"event:test\ndata:x\n\ndata:x\n\n", [("x", "test", ""), ("x", "message", "")],
                 id="format-field-event"),
    pytest.param(b"id: 1\ndata: 1\n\nid:\ndata:2\n\n", [("1", "message", "1"), ("2", "message", "")],
                 id="format-field-id"),
    pytest.param(b"id:1\ndata:1\n\ndata:2\n\nid\ndata:3\n\n",
                 [("1", "message", "1"), ("2", "message", "1"), ("3", "message", "")], id="format-field-id-2"),
    pytest.param(b"id: a\0b\ndata: x\n\n", [("x", "message", "")], id="format-field-id-null"),
    pytest.param(b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\n"
                 b"data:4\n\n", [("\0\n 2\n1\n3\n\n4", "message", "")], id="format-field-parsing"),
    pytest.param(b"retry:3000\nretry:1000x\ndata:x\n\n", [("x", "message", "")], id="format-field-retry-bogus"),
    pytest.param(b"retry\ndata:test\n\n", [("test", "message", "")], id="format-field-retry-empty"),
    pytest.param(b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
                 [("test\n\ntest", "message", "")], id="format-field-unknown"),
    pytest.param(b"data:\x20test\rdata\nfoobar:xxx\rdata:\x20\x20test\n\n", [("test\n\n test", "message", "")],
                 id="format-leading-space"),
    pytest.param(b"data:test\r\ndata\ndata:test\r\n\r", [("test\n\ntest", "message", "")], id="format-newlines"),
    pytest.param(b"data:\0\n\n\n\n", [("\0", "message", "")], id="format-null-character"),
    pytest.param("data:ok…\n\n".encode(), [("ok…", "message", "")], id="format-utf-8"),
]  # fmt: skip


@pytest.mark.parametrize(("stream", "expected"), WPT)
def test_web_platform_tests_format_cases(stream: bytes, expected: list[tuple[str, str, str]]) -> None:
    whole, _ = decode(stream)
    assert [(e.data, e.event, e.id) for e in whole] == expected
    # The same bytes one at a time: chunk boundaries never change what is dispatched.
    split, _ = decode(*[stream[i : i + 1] for i in range(len(stream))])
    assert split == whole


def test_retry_values_of_the_wpt_retry_cases() -> None:
    assert decode(b"retry:3000\nretry:1000x\ndata:x\n\n")[1].retry == 3000
    assert decode(b"retry:03000\ndata:x\n\n")[1].retry == 3000
    assert decode(b"retry\ndata:test\n\n")[1].retry is None


def test_comments_come_back_in_stream_order_for_a_relay() -> None:
    decoder = SSEDecoder()
    items = decoder.feed_with_comments(b": hello\nretry: 3000\n\nid: 1\ndata: a\n\n: beat\n\n")
    assert items == [SSEComment(" hello"), ServerSentEvent(data="a", id="1", retry=3000), SSEComment(" beat")]


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


#: A stream that exercises every piece of decoder state: a BOM, comments, ids that persist and reset, retry, event
#: types, multi-line data, CR / LF / CRLF endings and a multi-byte character.
RICH = (
    '\ufeff: hello\nretry: 250\n\nid: 1\nevent: metric\ndata: {"loss": 0.5}\n\ndata: a\r\ndata: b\r\n\r\n'
    "id\rdata: caf\u00e9 \u2713\r\rretry: x\nevent: end\ndata: done\n\n: tail\n"
).encode()


def test_shared_decoding_gives_every_decoder_exactly_what_it_would_decode_alone() -> None:
    shared = SharedDecoding()
    rng = random.Random(7)
    cuts = [sorted(rng.sample(range(1, len(RICH)), 6)) for _ in range(4)]  # four ways of splitting the same stream
    for round_ in range(3):  # each way several times: the later decoders take the first one's decodings
        for points in cuts:
            pieces = [RICH[a:b] for a, b in zip([0, *points], [*points, len(RICH)], strict=True)]
            alone, together = SSEDecoder(), SSEDecoder()
            expected = [e for piece in pieces for e in alone.feed(piece)]
            got = [e for piece in pieces for e in shared.feed(together, piece)]
            assert got == expected and len(expected) == 4, (round_, points)
            assert together.state() == alone.state() and together.comments == alone.comments
            assert together.last_event_id == alone.last_event_id and together.retry == alone.retry == 250


def test_shared_decoding_tells_states_apart() -> None:
    shared = SharedDecoding()
    fresh, mid_event = SSEDecoder(), SSEDecoder()
    shared.feed(mid_event, b"data: first\n")  # the same next bytes complete a different event here
    assert shared.feed(fresh, b"data: x\n\n") == [ServerSentEvent(data="x")]
    assert shared.feed(mid_event, b"data: x\n\n") == [ServerSentEvent(data="first\nx")]


def test_shared_decoding_is_bounded() -> None:
    shared = SharedDecoding(limit=3)
    decoder = SSEDecoder()
    for i in range(10):
        assert shared.feed(decoder, b"id: %d\ndata: %d\n\n" % (i, i)) == [ServerSentEvent(data=str(i), id=str(i))]
    assert len(shared._done) <= 3
