"""The simulator's Responses API, driven through the real openai SDK (and raw HTTP for the wire)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx2
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.lib._pydantic import to_strict_json_schema
from openai.types.responses import (
    FunctionToolParam,
    ResponseInputParam,
    ResponseStreamEvent,
)
from pydantic import BaseModel, TypeAdapter

from streamq.dev.simulator import (
    REFUSAL_TEXT,
    Simulator,
    SimulatorConfig,
    count_prompt_tokens,
    simulated_json,
    simulated_json_tokens,
    simulated_reasoning,
    simulated_text,
    simulated_tokens,
    simulated_tool_arguments,
)
from tests.harness.waiting import poll_until

MODEL = "sim-model"
INSTRUCTIONS = "You are terse."
PROMPT = "Write a haiku about queues."
# The chat messages equivalent to INSTRUCTIONS and PROMPT: both endpoints give the same reply.
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": INSTRUCTIONS},
    {"role": "user", "content": PROMPT},
]
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
    "strict": False,
}
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with the default config on this test's loop."""
    async with Simulator(SimulatorConfig()) as server:
        yield server


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncOpenAI]:
    """A real openai client pointed at ``sim``, without retries."""
    async with AsyncOpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0) as oai:
        yield oai


async def events_of(
    client: AsyncOpenAI, simulator: dict[str, Any] | None = None, **params: Any
) -> list[ResponseStreamEvent]:
    """Every event of one streamed response to INSTRUCTIONS and PROMPT (unless overridden)."""
    params = {"instructions": INSTRUCTIONS, "input": PROMPT, **params}
    extra_body = {"simulator": simulator} if simulator is not None else None
    stream = await client.responses.create(
        model=MODEL, stream=True, extra_body=extra_body, **params
    )
    return [event async for event in stream]


async def raw_events(sim: Simulator, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(event line, data)`` of each SSE event of a streamed response, read over raw HTTP."""
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{sim.base_url}/responses", json={**body, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\n\n")
    events = []
    for block in response.text.split("\n\n")[:-1]:
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


async def read_text(stream: AsyncStream[ResponseStreamEvent], into: list[str]) -> None:
    """Append each text delta to ``into`` as it arrives (kept if the stream then fails)."""
    async for event in stream:
        if event.type == "response.output_text.delta":
            into.append(event.delta)


def text_of(events: list[ResponseStreamEvent]) -> str:
    """The joined output_text deltas."""
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


async def test_streamed_text_matches_the_non_streamed_and_chat_reply(client: AsyncOpenAI) -> None:
    """Streamed deltas, the non-streamed output_text and the chat reply are the same text."""
    events = await events_of(client)
    response = await client.responses.create(model=MODEL, instructions=INSTRUCTIONS, input=PROMPT)
    assert text_of(events) == response.output_text == simulated_text(MESSAGES)
    assert (response.status, response.model, response.object) == ("completed", MODEL, "response")
    assert response.id.startswith("resp_")
    assert response.usage is not None
    assert response.usage.input_tokens == count_prompt_tokens(MESSAGES)
    assert response.usage.output_tokens == len(simulated_tokens(MESSAGES))
    assert response.usage.total_tokens == response.usage.input_tokens + 24
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.usage.input_tokens_details.cached_tokens == 0


async def test_text_event_order_and_sequence_numbers(client: AsyncOpenAI) -> None:
    """A text reply streams OpenAI's lifecycle and item events with sequence numbers 0, 1, ..."""
    events = await events_of(client, {"reply_tokens": 3})
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, completed = events[0], events[-1]
    assert created.type == "response.created"
    assert completed.type == "response.completed"
    assert (created.response.status, created.response.usage) == ("in_progress", None)
    assert completed.response.status == "completed"
    assert completed.response.usage is not None
    assert created.response.id == completed.response.id
    message = completed.response.output[0]
    assert message.type == "message"
    assert message.status == "completed"
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert {(e.item_id, e.output_index, e.content_index) for e in deltas} == {(message.id, 0, 0)}
    assert all(e.logprobs == [] for e in deltas)


async def test_every_raw_event_validates_as_a_stream_event(sim: Simulator) -> None:
    """Each event's JSON passes the SDK's ResponseStreamEvent union, named by its event line;
    there is no [DONE] line."""
    bodies: list[dict[str, Any]] = [
        {"model": MODEL, "input": PROMPT, "reasoning": {"effort": "low"}},
        {"model": MODEL, "input": PROMPT, "tools": [WEATHER], "tool_choice": "required"},
        {"model": MODEL, "input": PROMPT, "max_output_tokens": 4},
        {"model": MODEL, "input": PROMPT, "simulator": {"mode": "refusal"}},
    ]
    for body in bodies:
        events = await raw_events(sim, body)
        for name, data in events:
            event = EVENTS.validate_python(data)  # raises on a missing or mistyped field
            assert event.type == name == data["type"]
        numbers = [data["sequence_number"] for _, data in events]
        assert numbers == list(range(len(events)))
        assert events[-1][0] in ("response.completed", "response.incomplete")


async def test_stream_helper_final_response(client: AsyncOpenAI) -> None:
    """responses.stream() accumulates the events into the same response get_final_response
    returns."""
    async with client.responses.stream(model=MODEL, instructions=INSTRUCTIONS, input=PROMPT) as s:
        seen = [event.type async for event in s]
        final = await s.get_final_response()
    assert final.output_text == simulated_text(MESSAGES)
    assert final.status == "completed"
    assert "response.output_text.done" in seen


async def test_function_tool_round_trip(client: AsyncOpenAI) -> None:
    """A forced tool choice streams a function_call; sending its output back gets text."""
    events = await events_of(client, tools=[WEATHER], tool_choice="required")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    done = [e for e in events if e.type == "response.output_item.done"]
    call = done[0].item
    assert call.type == "function_call"
    assert (call.name, call.status, call.arguments) == ("get_weather", "completed", arguments)
    assert (call.id or "").startswith("fc_")
    assert call.call_id.startswith("call_")
    chat_tool = {"type": "function", "function": {"name": "get_weather", **WEATHER}}
    assert arguments == simulated_tool_arguments(MESSAGES, chat_tool)
    assert len([e for e in events if e.type == "response.function_call_arguments.delta"]) > 2
    assert text_of(events) == ""

    follow_up: ResponseInputParam = [
        {"role": "user", "content": PROMPT},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
    ]
    answer = await client.responses.create(model=MODEL, input=follow_up, tools=[WEATHER])
    assert answer.output_text
    assert [item.type for item in answer.output] == ["message"]


async def test_named_tool_choice_calls_that_tool(client: AsyncOpenAI) -> None:
    """tool_choice {"type": "function", "name": ...} calls the named function, unstreamed too."""
    time_tool: FunctionToolParam = {
        "type": "function",
        "name": "get_time",
        "parameters": None,
        "strict": False,
    }
    response = await client.responses.create(
        model=MODEL,
        input=PROMPT,
        tools=[WEATHER, time_tool],
        tool_choice={"type": "function", "name": "get_time"},
    )
    call = response.output[0]
    assert call.type == "function_call"
    assert call.name == "get_time"
    chat_tool = {"type": "function", "function": {"name": "get_time"}}
    assert call.arguments == simulated_tool_arguments(
        [{"role": "user", "content": PROMPT}], chat_tool
    )
    assert response.output_text == ""


async def test_reasoning_item_comes_first(client: AsyncOpenAI) -> None:
    """With a reasoning effort, a reasoning item with a streamed summary precedes the message
    and usage counts its tokens."""
    events = await events_of(client, reasoning={"effort": "low"})
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "".join(simulated_reasoning(MESSAGES))
    assert text_of(events) == simulated_text(MESSAGES)
    completed = events[-1]
    assert completed.type == "response.completed"
    reasoning, message = completed.response.output
    assert reasoning.type == "reasoning"
    assert message.type == "message"
    assert [part.text for part in reasoning.summary] == [summary]
    assert completed.response.usage is not None
    details = completed.response.usage.output_tokens_details
    assert details.reasoning_tokens == len(simulated_reasoning(MESSAGES))
    plain = await client.responses.create(
        model=MODEL, instructions=INSTRUCTIONS, input=PROMPT, reasoning={"effort": "none"}
    )
    assert [item.type for item in plain.output] == ["message"]


async def test_max_output_tokens_ends_incomplete(client: AsyncOpenAI) -> None:
    """max_output_tokens cuts the reply, which ends with response.incomplete."""
    events = await events_of(client, max_output_tokens=5)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert text_of(events) == simulated_text(MESSAGES, max_tokens=5)
    response = await client.responses.create(
        model=MODEL, instructions=INSTRUCTIONS, input=PROMPT, max_output_tokens=5
    )
    assert response.status == "incomplete"
    assert response.output_text == simulated_text(MESSAGES, max_tokens=5)
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    # Reasoning tokens count against the limit, as OpenAI counts them.
    thinking = await events_of(client, max_output_tokens=15, reasoning={"effort": "high"})
    assert thinking[-1].type == "response.incomplete"
    assert text_of(thinking) == simulated_text(MESSAGES, max_tokens=15 - 12)


async def test_input_items_equal_the_chat_messages(client: AsyncOpenAI) -> None:
    """Input as message items with input_text parts is answered like the chat messages with
    text parts."""
    parts: ResponseInputParam = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": [{"type": "input_text", "text": PROMPT}]},
    ]
    response = await client.responses.create(model=MODEL, input=parts)
    chat: list[dict[str, Any]] = [
        MESSAGES[0],
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    assert response.output_text == simulated_text(chat)


async def test_refusal_mode(client: AsyncOpenAI) -> None:
    """Refusal mode streams a refusal content part."""
    events = await events_of(client, {"mode": "refusal"})
    refusal = "".join(e.delta for e in events if e.type == "response.refusal.delta")
    assert refusal == REFUSAL_TEXT
    assert text_of(events) == ""


async def test_http_429_carries_retry_after(client: AsyncOpenAI) -> None:
    """fault http_429 raises RateLimitError with the configured retry-after header."""
    with pytest.raises(openai.RateLimitError) as caught:
        await events_of(client, {"fault": "http_429", "retry_after": 2})
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(
            model=MODEL, input=PROMPT, extra_body={"simulator": {"fault": "http_503"}}
        )


async def test_disconnect_mid_stream_raises(client: AsyncOpenAI) -> None:
    """fault disconnect cuts the connection after `after` deltas; the SDK raises."""
    received: list[str] = []
    stream = await client.responses.create(
        model=MODEL,
        instructions=INSTRUCTIONS,
        input=PROMPT,
        stream=True,
        extra_body={"simulator": {"fault": "disconnect", "after": 3}},
    )
    with pytest.raises(openai.APIConnectionError):
        await read_text(stream, received)
    assert "".join(received) == "".join(simulated_tokens(MESSAGES)[:3])


async def test_error_event_fails_the_response(client: AsyncOpenAI) -> None:
    """fault error_event ends the stream with response.failed carrying a server_error."""
    events = await events_of(client, {"fault": "error_event", "after": 2})
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert text_of(events) == "".join(simulated_tokens(MESSAGES)[:2])
    # Chat completions get OpenAI's in-stream error object, which the SDK raises.
    chunks = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_body={"simulator": {"fault": "error_event"}},
    )
    with pytest.raises(openai.APIError, match="simulated"):
        async for _ in chunks:
            pass


async def test_silent_end_leaves_the_response_unfinished(client: AsyncOpenAI) -> None:
    """fault silent_end ends the body with no terminal event: the stream helper says so."""
    async with client.responses.stream(
        model=MODEL, input=PROMPT, extra_body={"simulator": {"fault": "silent_end", "after": 4}}
    ) as stream:
        deltas = [e async for e in stream if e.type == "response.output_text.delta"]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    assert len(deltas) == 4


async def test_stall_trips_the_client_timeout(sim: Simulator, client: AsyncOpenAI) -> None:
    """fault stall keeps the connection silent; the client's read timeout fires."""
    stream = await client.with_options(timeout=0.3).responses.create(
        model=MODEL,
        input=PROMPT,
        stream=True,
        extra_body={"simulator": {"fault": "stall", "after": 1, "stall_seconds": 30}},
    )
    with pytest.raises(openai.APITimeoutError):
        async for _ in stream:
            pass
    await poll_until(lambda: sim.stats.in_flight == 0, 30, "the simulator to see the client go")


async def test_split_surrogates_cuts_emoji_across_deltas(sim: Simulator) -> None:
    """split_surrogates sends an emoji's halves in two deltas; the done text has it whole."""
    body = {
        "model": MODEL,
        "input": "rocket",
        "simulator": {"split_surrogates": True, "reply_tokens": 200},
    }
    events = await raw_events(sim, body)
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    done = next(data["text"] for name, data in events if name == "response.output_text.done")
    assert "🚀" in done
    assert any(0xD800 <= ord(delta[-1]) < 0xDC00 for delta in deltas if delta)
    assert done == simulated_text([{"role": "user", "content": "rocket"}], length=200)


async def test_concurrent_responses_count_in_flight(sim: Simulator, client: AsyncOpenAI) -> None:
    """Concurrent streamed responses show in the in-flight counters, per model."""
    options = {"tokens_per_second": 200, "reply_tokens": 10}
    results = await asyncio.gather(*(events_of(client, options) for _ in range(5)))
    assert all(text_of(events) == simulated_text(MESSAGES, length=10) for events in results)
    assert sim.stats.max_in_flight > 1
    assert sim.stats.max_in_flight_by_model[MODEL] > 1
    assert sim.stats.chunks_sent == sum(len(events) for events in results)


async def test_request_errors_have_openai_shape(sim: Simulator) -> None:
    """A body without model or input, or with a bad input, is a 400 naming the parameter."""
    url = f"{sim.base_url}/responses"
    async with httpx2.AsyncClient() as http:
        cases = [
            (await http.post(url, json={"model": MODEL}), "input"),
            (await http.post(url, json={"input": PROMPT}), "model"),
            (await http.post(url, json={"model": MODEL, "input": 3}), "input"),
            (await http.post(url, json={"model": MODEL, "input": PROMPT, "tools": [{}]}), None),
        ]
    for response, param in cases[:3]:
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param
    assert cases[3][0].status_code == 200  # a tool that isn't a function is ignored


class Day(BaseModel):
    weekday: Literal["mon", "tue", "wed"]
    rain: bool | None


class Forecast(BaseModel):
    """A structured-output model with a nested model ($ref), an enum, an array and a nullable."""

    city: str
    degrees: int
    days: list[Day]


# The schema the SDK sends for Forecast, from which the simulator makes up its JSON.
FORECAST_SCHEMA = to_strict_json_schema(Forecast)


async def test_parse_answers_json_of_the_schema(client: AsyncOpenAI) -> None:
    """responses.parse(text_format=Model): output_text is simulated_json's JSON (the chat
    reply's), parsed into the model; the format is echoed and usage counts the JSON's tokens."""
    response = await client.responses.parse(
        model=MODEL, instructions=INSTRUCTIONS, input=PROMPT, text_format=Forecast
    )
    assert response.output_text == simulated_json(MESSAGES, FORECAST_SCHEMA)
    assert response.output_parsed == Forecast.model_validate_json(response.output_text)
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"
    assert response.usage is not None
    assert response.usage.output_tokens == len(simulated_json_tokens(MESSAGES, FORECAST_SCHEMA))


async def test_streamed_parse_answers_json_in_pieces(client: AsyncOpenAI) -> None:
    """responses.stream(text_format=Model): the JSON arrives in several output_text deltas and
    the final response parses into the model."""
    deltas = []
    async with client.responses.stream(
        model=MODEL, instructions=INSTRUCTIONS, input=PROMPT, text_format=Forecast
    ) as events:
        async for event in events:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        response = await events.get_final_response()
    tokens = simulated_json_tokens(MESSAGES, FORECAST_SCHEMA)
    assert deltas == tokens
    assert len(tokens) > 4
    expected = Forecast.model_validate_json(simulated_json(MESSAGES, FORECAST_SCHEMA))
    assert response.output_parsed == expected
    assert response.usage is not None
    assert response.usage.output_tokens == len(tokens)


async def test_json_object_format(client: AsyncOpenAI) -> None:
    """text.format json_object gets the small JSON object the chat request gets."""
    response = await client.responses.create(
        model=MODEL,
        instructions=INSTRUCTIONS,
        input=PROMPT,
        text={"format": {"type": "json_object"}},
    )
    assert response.output_text == simulated_json(MESSAGES, None)
    assert isinstance(json.loads(response.output_text), dict)
