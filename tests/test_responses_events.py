"""A job's wire events said as OpenAI Responses stream events that the openai SDK accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from streamq.core.events import (
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Meta,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
)
from streamq.responses.events import (
    RESTARTED,
    ResponseStream,
    output_as_input,
    responses_usage,
)
from streamq.responses.request import input_items

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
FIELDS = {"created_at": 1795487347, "model": "gpt-4o-mini"}
USAGE = {
    "prompt_tokens": 7,
    "completion_tokens": 24,
    "total_tokens": 31,
    "prompt_tokens_details": {"cached_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 5},
}
CURSOR = "1795487348123-1"


def start(attempt: int = 1) -> Start:
    return Start(job_id="job1", model="gpt-4o-mini", attempt=attempt)


def done(finish_reason: str | None = "stop", **kwargs: Any) -> Done:
    return Done(finish_reason=finish_reason, usage=USAGE, cursor=CURSOR, **kwargs)


def run(
    events: Sequence[Event], fields: Mapping[str, Any] = FIELDS
) -> tuple[list[dict[str, Any]], ResponseStream]:
    """Every Responses event of ``events``, checked against the openai SDK's types."""
    stream = ResponseStream("resp_job1", fields)
    out = stream.opening()
    for event in events:
        out += stream.feed(event)
    for body in out:
        EVENTS.validate_python(body)
    assert [body["sequence_number"] for body in out] == list(range(len(out)))
    Response.model_validate(stream.snapshot())
    sdk_final(out)  # its accumulator takes every event, whatever the ending
    return out, stream


def types(out: list[dict[str, Any]]) -> list[str]:
    return [body["type"] for body in out]


def sdk_final(out: list[dict[str, Any]]) -> Any:
    """What the openai SDK's own stream accumulator makes of ``out``."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for body in out:
        state.handle_event(EVENTS.validate_python(body))
    return state._completed_response


def test_text_answer() -> None:
    """Text opens one message item; done closes it and completes the response with usage."""
    out, stream = run(
        [
            start(),
            Meta(model="gpt-4o-mini-2024"),
            Delta(text="Orbit"),
            Delta(text=" packet"),
            done(),
        ]
    )
    assert types(out) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out[0]["response"]["status"] == "in_progress"
    assert out[2]["item"] == {
        "id": "msg_job1_0",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert out[6]["text"] == "Orbit packet"
    final = out[-1]["response"]
    assert final == stream.snapshot()
    assert final["status"] == "completed"
    assert final["model"] == "gpt-4o-mini"  # the requested one, not meta's
    assert final["completed_at"] == 1795487348
    assert final["output"][0]["content"][0]["text"] == "Orbit packet"
    assert final["usage"] == responses_usage(USAGE)
    assert stream.ended
    assert stream.feed(Delta(text="late")) == []
    assert sdk_final(out).output_text == "Orbit packet"


def test_same_events_same_bytes() -> None:
    """Two reads of one stream give byte-identical events, so a resumed read can skip by number."""
    events = [
        start(),
        Reasoning(text="hm"),
        Delta(text="a"),
        Refusal(text="no"),
        ToolCallDelta(index=0, id="c", name="f", arguments="{}"),
        done("tool_calls"),
    ]
    first, _ = run(events)
    second, _ = run(events)
    assert json.dumps(first) == json.dumps(second)
    after = 5
    assert [body for body in second if body["sequence_number"] > after] == first[after + 1 :]


def test_background_opening() -> None:
    """A background response opens queued, then goes in progress when a worker starts it."""
    out, stream = run([], {**FIELDS, "background": True})
    assert types(out) == ["response.created", "response.queued"]
    assert out[0]["response"]["status"] == "queued"
    assert stream.snapshot()["status"] == "queued"
    more = stream.feed(start())
    assert types(more) == ["response.in_progress"]
    assert more[0]["sequence_number"] == 2
    assert stream.feed(start()) == []


def test_fields_echoed_with_defaults() -> None:
    """The Response echoes the request's fields, with OpenAI's defaults for the missing ones."""
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}]
    fields = {
        **FIELDS,
        "tools": tools,
        "temperature": 0.5,
        "metadata": {"k": "v"},
        "previous_response_id": "resp_before",
        "store": False,
    }
    _, stream = run([], fields)
    snapshot = stream.snapshot()
    assert snapshot["tools"] == tools
    assert snapshot["temperature"] == 0.5
    assert snapshot["metadata"] == {"k": "v"}
    assert snapshot["previous_response_id"] == "resp_before"
    assert snapshot["store"] is False
    assert snapshot["tool_choice"] == "auto"
    assert snapshot["parallel_tool_calls"] is True
    assert snapshot["text"] == {"format": {"type": "text"}}
    assert snapshot["output"] == []
    assert snapshot["usage"] is None
    snapshot["tools"].append("mutated")
    assert stream.snapshot()["tools"] == tools


def test_reasoning_then_text() -> None:
    """Reasoning is a summarised reasoning item, closed when the answer's message begins."""
    out, stream = run(
        [start(), Reasoning(text="Let me "), Reasoning(text="think"), Delta(text="42"), done()]
    )
    assert types(out)[2:10] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert out[2]["item"] == {
        "id": "rs_job1_0",
        "type": "reasoning",
        "summary": [],
        "status": "in_progress",
    }
    reasoning, message = stream.snapshot()["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Let me think"}]
    assert message["id"] == "msg_job1_1"
    assert sdk_final(out).output_text == "42"


def test_refusal() -> None:
    """A refusal is a refusal part of the message item."""
    out, stream = run([start(), Refusal(text="I can't "), Refusal(text="help"), done()])
    assert "response.refusal.delta" in types(out)
    assert out[3]["part"] == {"type": "refusal", "refusal": ""}
    assert [body["refusal"] for body in out if body["type"] == "response.refusal.done"] == [
        "I can't help"
    ]
    content = stream.snapshot()["output"][0]["content"]
    assert content == [{"type": "refusal", "refusal": "I can't help"}]
    assert sdk_final(out).output[0].content[0].refusal == "I can't help"


def test_text_then_refusal_parts() -> None:
    """Text then a refusal are two content parts of one message."""
    out, stream = run([start(), Delta(text="Well"), Refusal(text="no"), done()])
    content = stream.snapshot()["output"][0]["content"]
    assert [part["type"] for part in content] == ["output_text", "refusal"]
    added = [body["content_index"] for body in out if body["type"] == "response.content_part.added"]
    assert added == [0, 1]
    assert sdk_final(out).output_text == "Well"


def test_parallel_tool_calls() -> None:
    """Each wire tool call index is a function_call item; interleaved fragments stay apart."""
    events = [
        start(),
        ToolCallDelta(index=0, id="call_a", name="weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city":'),
        ToolCallDelta(index=1, id="call_b", name="time", arguments='{"tz":'),
        ToolCallDelta(index=0, arguments='"Paris"}'),
        ToolCallDelta(index=1, arguments='"UTC"}'),
        done("tool_calls"),
    ]
    out, stream = run(events)
    assert out[2]["item"] == {
        "id": "fc_job1_0",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_a",
        "name": "weather",
        "arguments": "",
    }
    finished = [body for body in out if body["type"] == "response.function_call_arguments.done"]
    assert [(body["item_id"], body["arguments"], body["name"]) for body in finished] == [
        ("fc_job1_0", '{"city":"Paris"}', "weather"),
        ("fc_job1_1", '{"tz":"UTC"}', "time"),
    ]
    assert out[-1]["type"] == "response.completed"
    calls = stream.snapshot()["output"]
    assert [(call["call_id"], call["status"]) for call in calls] == [
        ("call_a", "completed"),
        ("call_b", "completed"),
    ]
    final = sdk_final(out)
    assert [call.arguments for call in final.output] == ['{"city":"Paris"}', '{"tz":"UTC"}']


def test_tool_call_named_late() -> None:
    """A call is shown once it has a name, with the arguments that came before it."""
    events = [
        start(),
        ToolCallDelta(index=0, arguments='{"a"'),
        ToolCallDelta(index=0, id="c1", name="f", arguments=":1"),
        ToolCallDelta(index=0, arguments="}"),
        done("tool_calls"),
    ]
    out, stream = run(events)
    assert types(out)[2:5] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
    ]
    assert out[2]["item"]["name"] == "f"
    assert out[3]["delta"] == '{"a":1'
    assert stream.snapshot()["output"][0]["arguments"] == '{"a":1}'


def test_tool_call_without_id() -> None:
    """A call the upstream gave no id gets one derived from the response."""
    _, stream = run([start(), ToolCallDelta(index=0, name="f", arguments="{}"), done()])
    assert stream.snapshot()["output"][0]["call_id"] == "call_job1_0"


def test_text_then_tool_call() -> None:
    """A tool call closes the message before it, and text after it opens a new message."""
    events = [
        start(),
        Delta(text="Checking."),
        ToolCallDelta(index=0, id="c", name="f"),
        Delta(text="Done."),
        done(),
    ]
    out, stream = run(events)
    output = stream.snapshot()["output"]
    assert [(item["type"], item["id"]) for item in output] == [
        ("message", "msg_job1_0"),
        ("function_call", "fc_job1_1"),
        ("message", "msg_job1_2"),
    ]
    assert all(item["status"] == "completed" for item in output)
    assert sdk_final(out).output_text == "Checking.Done."


def test_reset_before_output_is_invisible() -> None:
    """A new attempt before anything was shown leaves no trace."""
    clean, _ = run([start(), Delta(text="hi"), done()])
    events = [
        start(),
        Meta(model="x"),
        ToolCallDelta(index=0, arguments='{"half'),
        Reset(attempt=2, reason="retry"),
        start(2),
        Delta(text="hi", attempt=2),
        done(attempt=2),
    ]
    retried, stream = run(events)
    assert json.dumps(retried) == json.dumps(clean)
    assert stream.snapshot()["status"] == "completed"


def test_reset_after_output_fails() -> None:
    """A new attempt after output was shown fails the response; nothing after it is said."""
    stream = ResponseStream("resp_job1", FIELDS)
    out = stream.opening()
    for event in [start(), Delta(text="Half an ans"), ToolCallDelta(index=0, id="c", name="f")]:
        out += stream.feed(event)
    failed = stream.feed(Reset(attempt=2))
    assert types(failed) == ["response.failed"]
    response = failed[0]["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": RESTARTED}
    assert [item["status"] for item in response["output"]] == ["completed", "incomplete"]
    assert stream.ended
    assert stream.feed(start(2)) == []
    assert stream.feed(done(attempt=2)) == []
    for body in out + failed:
        EVENTS.validate_python(body)
    assert sdk_final(out + failed) is None  # ended, but not completed


def test_higher_attempt_without_reset_fails_too() -> None:
    """An event of a newer attempt counts as its reset even when the reset entry is missed."""
    out, _ = run([start(), Delta(text="a"), start(2), Delta(text="b", attempt=2)])
    assert types(out)[-1] == "response.failed"


def test_stale_attempt_ignored() -> None:
    """Events of an attempt older than the newest seen are dropped."""
    events = [
        start(),
        Reset(attempt=2),
        start(2),
        Delta(text="new", attempt=2),
        Delta(text="old", attempt=1),
        done(attempt=2),
    ]
    out, _ = run(events)
    assert sdk_final(out).output_text == "new"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("upstream_rate_limited", "rate_limit_exceeded"),
        ("invalid_request", "invalid_prompt"),
        ("upstream_bad_request", "invalid_prompt"),
        ("upstream_timeout", "server_error"),
        ("internal", "server_error"),
    ],
)
def test_error_fails(code: str, expected: str) -> None:
    """An error fails the response, closing the open message as incomplete."""
    out, stream = run([start(), Delta(text="par"), Error(code=code, message="upstream said no")])
    assert types(out)[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    response = out[-1]["response"]
    assert response["error"] == {"code": expected, "message": "upstream said no", "type": code}
    assert response["output"][0]["status"] == "incomplete"
    assert response["usage"] is None
    assert stream.ended


def test_cancelled() -> None:
    """A cancel ends with response.incomplete, status cancelled; a cut call gets no .done."""
    events = [
        start(),
        Delta(text="Let me"),
        ToolCallDelta(index=0, id="c", name="f", arguments='{"x'),
        Cancelled(reason="client", deltas=1, usage=USAGE),
    ]
    out, stream = run(events)
    assert types(out)[-1] == "response.incomplete"
    assert "response.function_call_arguments.done" not in types(out)
    response = out[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["incomplete_details"] is None
    assert response["usage"] == responses_usage(USAGE)
    assert [item["status"] for item in response["output"]] == ["completed", "incomplete"]
    assert stream.snapshot() == response


def test_cancelled_before_start() -> None:
    """A job cancelled before any worker ran it (attempt 0) ends at once."""
    out, stream = run([Cancelled(attempt=0, reason="client")])
    assert types(out) == ["response.created", "response.incomplete"]
    assert stream.snapshot()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [("length", "max_output_tokens"), ("content_filter", "content_filter")],
)
def test_cut_short(finish_reason: str, reason: str) -> None:
    """length and content_filter end with response.incomplete and the reason."""
    out, _ = run([start(), Reasoning(text="r"), Delta(text="trunc"), done(finish_reason)])
    response = out[-1]["response"]
    assert out[-1]["type"] == "response.incomplete"
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert "completed_at" not in response
    assert [item["status"] for item in response["output"]] == ["completed", "incomplete"]


def test_cut_short_reasoning_part() -> None:
    """A reasoning summary cut short says so on its part.done."""
    out, _ = run([start(), Reasoning(text="r"), done("length")])
    part_done = next(b for b in out if b["type"] == "response.reasoning_summary_part.done")
    assert part_done["status"] == "incomplete"


def test_other_choices_ignored() -> None:
    """Only choice 0 becomes the response (n > 1 jobs)."""
    events = [
        start(),
        Delta(text="zero"),
        Delta(text="one", choice=1),
        ToolCallDelta(index=0, name="f", choice=1),
        done(),
    ]
    out, stream = run(events)
    assert sdk_final(out).output_text == "zero"
    assert len(stream.snapshot()["output"]) == 1


def test_empty_text_opens_nothing() -> None:
    """An empty piece of text shows no item."""
    out, stream = run([start(), Delta(text=""), Reasoning(text=""), done()])
    assert stream.snapshot()["output"] == []
    assert types(out)[-1] == "response.completed"


def test_logprobs() -> None:
    """A chunk's log probabilities ride on the text delta and gather on the part."""
    logprobs: list[dict[str, Any]] = [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -2.5, "bytes": None},
            ],
        },
        {"token": "bad", "logprob": None},
    ]
    out, stream = run([start(), Delta(text="Hi", logprobs=logprobs), done()])
    delta = next(body for body in out if body["type"] == "response.output_text.delta")
    assert delta["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -2.5, "bytes": []},
            ],
        }
    ]
    assert stream.snapshot()["output"][0]["content"][0]["logprobs"] == delta["logprobs"]


def test_output_as_input() -> None:
    """A finished response's output reads back as valid input items for the next turn."""
    events = [
        start(),
        Reasoning(text="hm"),
        Delta(text="Calling."),
        Refusal(text="not that"),
        ToolCallDelta(index=0, id="c1", name="f", arguments='{"a":1}'),
        done("tool_calls"),
    ]
    _, stream = run(events)
    items = output_as_input(stream.snapshot()["output"])
    assert items == [
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Calling.", "annotations": []},
                {"type": "refusal", "refusal": "not that"},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
    ]
    assert input_items(items) == items


def test_output_as_input_keeps_encrypted_reasoning() -> None:
    """Reasoning an upstream can read again (encrypted_content) is kept, with its id."""
    reasoning = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [],
        "encrypted_content": "gAAA",
        "status": "completed",
    }
    assert output_as_input([reasoning]) == [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}
    ]


def test_responses_usage() -> None:
    """Chat usage becomes Responses usage with every count present."""
    assert responses_usage(USAGE) == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
        "output_tokens": 24,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 31,
    }
    assert responses_usage(None) is None
    partial = responses_usage(
        {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": None}
    )
    assert partial is not None
    assert partial["total_tokens"] == 7
    assert partial["input_tokens_details"]["cached_tokens"] == 0
    assert responses_usage({}) == responses_usage({"total_tokens": True})
    already = responses_usage({"input_tokens": 1, "output_tokens": 2, "total_tokens": 3})
    assert already is not None
    assert (already["input_tokens"], already["output_tokens"]) == (1, 2)
