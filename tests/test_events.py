"""Wire format v1: every event survives encode -> Redis fields -> decode."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamq import (
    Delta,
    Done,
    Error,
    Event,
    Reasoning,
    Refusal,
    Start,
    ToolCallDelta,
    UnknownEvent,
)
from streamq.core.events import (
    decode,
    decode_entry,
    encode,
    event_to_dict,
    is_terminal,
)
from streamq.core.exceptions import EventDecodeError

EVENTS: list[Event] = [
    Start(job_id="j1", model="gpt-4o-mini", worker="host:1", started_at=1.5),
    Delta(text="Hello, 世界 "),
    Delta(text="second choice", choice=1),
    Reasoning(text="thinking"),
    Refusal(text="no"),
    ToolCallDelta(index=0, id="call_1", name="get_weather", arguments='{"ci'),
    ToolCallDelta(index=0, arguments='ty": "Paris"}'),
    Done(finish_reason="stop", finish_reasons=["stop"], usage={"total_tokens": 3}, model="m"),
    Error(code="upstream_rate_limited", message="slow down", retryable=True),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_round_trip(event: Event) -> None:
    """Decoding an encoded event gives it back, with its cursor, attempt and seq."""
    fields = encode(event, attempt=2, seq=7)
    assert fields["v"] == "1"
    assert fields["type"] == event.type
    decoded = decode("1700000000000-3", fields)
    assert decoded == dataclasses.replace(event, cursor="1700000000000-3", attempt=2, seq=7)
    assert event_to_dict(decoded)["type"] == event.type


def test_text_events_store_plain_text() -> None:
    """Deltas are stored as the plain text, readable with redis-cli."""
    fields = encode(Delta(text="hi there"), attempt=1, seq=0)
    assert fields == {"v": "1", "type": "delta", "attempt": "1", "seq": "0", "data": "hi there"}


def test_choice_field_only_for_other_choices() -> None:
    """The `choice` field appears only for choices other than 0."""
    assert "choice" not in encode(Delta(text="a"), attempt=1, seq=0)
    assert encode(Delta(text="a", choice=2), attempt=1, seq=0)["choice"] == "2"


def test_terminal_events() -> None:
    """Only done and error end a stream."""
    assert [is_terminal(e) for e in EVENTS] == [False] * 7 + [True, True]


def test_unknown_types_are_kept_not_fatal() -> None:
    """An entry of a newer type decodes to UnknownEvent so old readers can skip it."""
    fields = {"v": "1", "type": "heartbeat", "attempt": "1", "seq": "3", "data": "{}"}
    event = decode("1-1", fields)
    assert isinstance(event, UnknownEvent)
    assert event.entry_type == "heartbeat"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "delta", "attempt": "1", "seq": "0", "data": "x"},
        {"v": "2", "type": "delta", "attempt": "1", "seq": "0", "data": "x"},
        {"v": "1", "type": "delta", "attempt": "one", "seq": "0", "data": "x"},
        {"v": "1", "type": "done", "attempt": "1", "seq": "0", "data": "not json"},
        {"v": "1", "type": "error", "attempt": "1", "seq": "0", "data": "[]"},
        {"v": "1", "type": "error", "attempt": "1", "seq": "0", "data": "{}"},
    ],
)
def test_malformed_entries_raise_a_clear_error(fields: dict[str, str]) -> None:
    """Entries that break the format raise EventDecodeError naming the entry."""
    with pytest.raises(EventDecodeError, match="1-1"):
        decode("1-1", fields)


@given(
    st.dictionaries(
        st.sampled_from(["v", "type", "attempt", "seq", "data", "choice"]),
        st.sampled_from(["1", "delta", "done", "0", "7", "x", "", '{"finish_reason":"stop"}']),
    )
)
def test_the_bytes_decoder_agrees_with_the_text_decoder(fields: dict[str, str]) -> None:
    """decode_entry (the readers' fast path) gives what decode gives, errors included."""
    raw = {key.encode(): value.encode() for key, value in fields.items()}
    try:
        expected: object = decode("1-1", fields)
    except EventDecodeError:
        expected = EventDecodeError
    try:
        got: object = decode_entry("1-1", raw)
    except EventDecodeError:
        got = EventDecodeError
    assert got == expected


def test_every_event_round_trips_through_the_bytes_decoder() -> None:
    """Each example event decodes the same from Redis's bytes."""
    for event in EVENTS:
        fields = encode(event, attempt=1, seq=3)
        raw = {key.encode(): value.encode() for key, value in fields.items()}
        assert decode_entry("5-0", raw) == decode("5-0", fields)
