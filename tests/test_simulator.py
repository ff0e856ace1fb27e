"""The OpenAI simulator, driven through the real openai SDK (and raw HTTP for wire details)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx2
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.lib._pydantic import to_strict_json_schema
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel

from streamq.core.exceptions import ConfigError
from streamq.dev.simulator import (
    REFUSAL_TEXT,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
    count_prompt_tokens,
    serve,
    simulated_json,
    simulated_json_tokens,
    simulated_reasoning,
    simulated_text,
    simulated_tokens,
    simulated_tool_arguments,
)
from tests.harness.waiting import poll_until

MODEL = "sim-model"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Write a haiku about queues."},
]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME: ChatCompletionToolParam = {"type": "function", "function": {"name": "get_time"}}


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


async def stream(
    client: AsyncOpenAI,
    simulator: dict[str, Any] | None = None,
    *,
    messages: list[ChatCompletionMessageParam] = MESSAGES,
    **params: Any,
) -> list[ChatCompletionChunk]:
    """Every chunk of one streamed completion."""
    extra_body = {"simulator": simulator} if simulator is not None else None
    chunks = await client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, extra_body=extra_body, **params
    )
    return [chunk async for chunk in chunks]


async def read_content(chunks: AsyncStream[ChatCompletionChunk], into: list[str]) -> None:
    """Append each chunk's content to ``into`` as it arrives (kept if the stream then fails)."""
    async for chunk in chunks:
        into.append(chunk.choices[0].delta.content or "")


def text_of(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    """The content of choice ``index`` across chunks."""
    return "".join(
        choice.delta.content or ""
        for chunk in chunks
        for choice in chunk.choices
        if choice.index == index
    )


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    """Every finish_reason sent, in order."""
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


async def test_stream_text_matches_simulated_text(client: AsyncOpenAI) -> None:
    """The streamed content is exactly simulated_text() of the request's messages."""
    chunks = await stream(client)
    expected = simulated_text(MESSAGES)
    assert text_of(chunks) == expected
    assert len(simulated_tokens(MESSAGES)) == 24
    assert any(ord(char) > 127 for char in expected)  # UTF-8 paths get exercised
    assert finish_reasons(chunks) == ["stop"]


async def test_role_chunk_first_and_openai_chunk_shape(client: AsyncOpenAI) -> None:
    """The first chunk carries only the role; every chunk has OpenAI's envelope fields."""
    chunks = await stream(client)
    first = chunks[0].choices[0]
    assert (first.delta.role, first.delta.content, first.finish_reason) == ("assistant", "", None)
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-")
    for chunk in chunks:
        assert (chunk.object, chunk.model) == ("chat.completion.chunk", MODEL)
        assert chunk.system_fingerprint
        assert chunk.usage is None
    last = chunks[-1].choices[0]
    assert (last.delta.content, last.finish_reason) == (None, "stop")


async def test_usage_chunk_has_no_choices(client: AsyncOpenAI) -> None:
    """With include_usage, a final chunk with empty choices carries the token counts."""
    chunks = await stream(client, stream_options={"include_usage": True})
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert usage.completion_tokens == 24
    assert usage.total_tokens == usage.prompt_tokens + 24
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_max_tokens_cuts_with_finish_length(client: AsyncOpenAI) -> None:
    """max_tokens and max_completion_tokens truncate the reply and finish with "length"."""
    chunks = await stream(client, max_tokens=5)
    assert text_of(chunks) == simulated_text(MESSAGES, max_tokens=5)
    assert finish_reasons(chunks) == ["length"]
    chunks = await stream(client, max_completion_tokens=7)
    assert text_of(chunks) == simulated_text(MESSAGES, max_tokens=7)
    assert finish_reasons(chunks) == ["length"]


async def test_n_choices_are_interleaved(client: AsyncOpenAI) -> None:
    """n=2 streams two different replies, alternating chunk by chunk, each with its index."""
    chunks = await stream(client, n=2)
    assert text_of(chunks, 0) == simulated_text(MESSAGES, choice=0)
    assert text_of(chunks, 1) == simulated_text(MESSAGES, choice=1)
    assert text_of(chunks, 0) != text_of(chunks, 1)
    indexes = [c.index for chunk in chunks for c in chunk.choices if c.delta.content]
    assert indexes[:6] == [0, 1, 0, 1, 0, 1]
    assert finish_reasons(chunks) == ["stop", "stop"]


async def test_tool_calls_assemble_into_json_arguments(client: AsyncOpenAI) -> None:
    """Tool mode streams call headers then argument fragments that join into the known JSON."""
    chunks = await stream(client, {"tool_calls": 2}, tools=[WEATHER, TIME], tool_choice="required")
    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    for chunk in chunks:
        for tool_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            call = calls.setdefault(tool_call.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tool_call.id or ""
            if tool_call.function is not None:
                call["name"] += tool_call.function.name or ""
                call["arguments"] += tool_call.function.arguments or ""
                fragments += 1
    assert [call["name"] for call in calls.values()] == ["get_weather", "get_time"]
    assert all(call["id"].startswith("call_") for call in calls.values())
    weather = json.loads(calls[0]["arguments"])
    assert set(weather) == {"city", "days", "unit"}
    assert weather["unit"] in ("celsius", "fahrenheit")
    assert calls[0]["arguments"] == simulated_tool_arguments(MESSAGES, WEATHER)
    assert calls[1]["arguments"] == simulated_tool_arguments(MESSAGES, TIME, call_index=1)
    assert fragments > 4  # split into several pieces
    assert finish_reasons(chunks) == ["tool_calls"]
    assert text_of(chunks) == ""


async def test_reasoning_precedes_content(client: AsyncOpenAI) -> None:
    """Reasoning mode streams reasoning_content deltas first, then the usual content."""
    chunks = await stream(client, {"mode": "reasoning"})
    kinds, reasoning = [], ""
    for chunk in chunks[1:-1]:
        extra = chunk.choices[0].delta.model_extra or {}
        if "reasoning_content" in extra:
            kinds.append("reasoning")
            reasoning += extra["reasoning_content"]
        else:
            kinds.append("content")
    assert reasoning == "".join(simulated_reasoning(MESSAGES))
    assert text_of(chunks) == simulated_text(MESSAGES)
    assert kinds == sorted(kinds, key=lambda kind: kind != "reasoning")


async def test_refusal_mode(client: AsyncOpenAI) -> None:
    """Refusal mode streams refusal deltas and finishes with "stop"."""
    chunks = await stream(client, {"mode": "refusal"})
    refusal = "".join(c.delta.refusal or "" for chunk in chunks for c in chunk.choices)
    assert refusal == REFUSAL_TEXT
    assert text_of(chunks) == ""
    assert finish_reasons(chunks) == ["stop"]


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
    """chat.completions.parse(response_format=Model): the reply is simulated_json's JSON, which
    parses into the model; usage counts its tokens."""
    completion = await client.chat.completions.parse(
        model=MODEL, messages=MESSAGES, response_format=Forecast
    )
    message = completion.choices[0].message
    assert message.content == simulated_json(MESSAGES, FORECAST_SCHEMA)
    assert message.parsed == Forecast.model_validate_json(message.content)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(
        simulated_json_tokens(MESSAGES, FORECAST_SCHEMA)
    )


async def test_streamed_parse_answers_json_in_pieces(client: AsyncOpenAI) -> None:
    """chat.completions.stream(response_format=Model): the JSON arrives in several deltas, one
    per simulated_json_tokens piece, and the final completion parses into the model."""
    deltas = []
    async with client.chat.completions.stream(
        model=MODEL,
        messages=MESSAGES,
        response_format=Forecast,
        stream_options={"include_usage": True},
    ) as events:
        async for event in events:
            if event.type == "content.delta" and event.delta:  # not the role chunk's ""
                deltas.append(event.delta)
        completion = await events.get_final_completion()
    tokens = simulated_json_tokens(MESSAGES, FORECAST_SCHEMA)
    assert deltas == tokens
    assert len(tokens) > 4
    expected = Forecast.model_validate_json(simulated_json(MESSAGES, FORECAST_SCHEMA))
    assert completion.choices[0].message.parsed == expected
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(tokens)


async def test_json_object_and_cut_json(client: AsyncOpenAI) -> None:
    """json_object gets a small JSON object; max_tokens cuts JSON like text, ending "length"."""
    completion = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format={"type": "json_object"}
    )
    content = completion.choices[0].message.content
    assert content == simulated_json(MESSAGES, None)
    assert isinstance(json.loads(content), dict)
    chunks = await stream(client, response_format={"type": "json_object"}, max_completion_tokens=3)
    assert text_of(chunks) == "".join(simulated_json_tokens(MESSAGES, None)[:3])
    assert finish_reasons(chunks) == ["length"]


async def test_non_streaming_completion(client: AsyncOpenAI) -> None:
    """Without stream, one chat.completion object holds the same text and usage."""
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, seed=9)
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    for index, choice in enumerate(completion.choices):
        assert choice.message.content == simulated_text(MESSAGES, seed=9, choice=index)
        assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 48


async def test_models_list_and_allow_list() -> None:
    """/v1/models lists the configured models; others are model_not_found."""
    async with (
        Simulator(SimulatorConfig(models=("alpha", "beta"))) as server,
        AsyncOpenAI(api_key="k", base_url=server.base_url, max_retries=0) as oai,
    ):
        models = await oai.models.list()
        assert [model.id for model in models.data] == ["alpha", "beta"]
        assert {model.owned_by for model in models.data} == {"streamq-simulator"}
        reply = await oai.chat.completions.create(model="alpha", messages=MESSAGES)
        assert reply.choices[0].message.content == simulated_text(MESSAGES)
        with pytest.raises(openai.NotFoundError) as caught:
            await oai.chat.completions.create(model="gamma", messages=MESSAGES)
        assert caught.value.code == "model_not_found"


async def test_http_429_carries_retry_after(client: AsyncOpenAI) -> None:
    """fault http_429 raises RateLimitError with the configured retry-after header."""
    with pytest.raises(openai.RateLimitError) as caught:
        await stream(client, {"fault": "http_429", "retry_after": 2})
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"


async def test_http_500(client: AsyncOpenAI) -> None:
    """fault http_500 raises InternalServerError."""
    with pytest.raises(openai.InternalServerError):
        await stream(client, {"fault": "http_500"})


async def test_disconnect_mid_stream_raises(client: AsyncOpenAI) -> None:
    """fault disconnect closes the connection after `after` chunks; the SDK raises."""
    received: list[str] = []
    chunks = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={"simulator": {"fault": "disconnect", "after": 3}},
    )
    with pytest.raises(openai.APIConnectionError):
        await read_content(chunks, received)
    assert "".join(received) == "".join(simulated_tokens(MESSAGES)[:3])


async def test_stall_trips_the_client_timeout(sim: Simulator, client: AsyncOpenAI) -> None:
    """fault stall stops sending but keeps the connection; a read timeout fires client-side."""
    received: list[str] = []
    chunks = await client.with_options(timeout=0.3).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={"simulator": {"fault": "stall", "after": 2, "stall_seconds": 30}},
    )
    with pytest.raises(openai.APITimeoutError):
        await read_content(chunks, received)
    assert "".join(received) == "".join(simulated_tokens(MESSAGES)[:2])
    # The server notices the client leaving during the stall.
    await poll_until(lambda: sim.stats.in_flight == 0, 30, "the simulator to see the client go")


async def test_short_stall_then_resumes(client: AsyncOpenAI) -> None:
    """A finite stall pauses the stream, which then completes normally."""
    started = time.monotonic()
    chunks = await stream(client, {"fault": "stall", "after": 1, "stall_seconds": 0.2})
    assert time.monotonic() - started >= 0.19
    assert text_of(chunks) == simulated_text(MESSAGES)


async def test_silent_end_has_no_finish_reason(client: AsyncOpenAI) -> None:
    """fault silent_end ends the body cleanly after `after` chunks: no finish, no [DONE]."""
    chunks = await stream(client, {"fault": "silent_end", "after": 4})
    assert text_of(chunks) == "".join(simulated_tokens(MESSAGES)[:4])
    assert finish_reasons(chunks) == []


async def test_no_done_still_finishes(client: AsyncOpenAI) -> None:
    """fault no_done sends the whole reply but omits data: [DONE]."""
    chunks = await stream(client, {"fault": "no_done"})
    assert text_of(chunks) == simulated_text(MESSAGES)
    assert finish_reasons(chunks) == ["stop"]


async def test_bad_json_and_bad_utf8_raise(client: AsyncOpenAI) -> None:
    """faults bad_json and bad_utf8 put an undecodable data line into the stream."""
    with pytest.raises(json.JSONDecodeError):
        await stream(client, {"fault": "bad_json", "after": 2})
    with pytest.raises(UnicodeDecodeError):
        await stream(client, {"fault": "bad_utf8", "after": 2})


async def test_fault_times_lets_a_retry_succeed(sim: Simulator, client: AsyncOpenAI) -> None:
    """fault_times=1 fails only the first request with a fault_key; the SDK's retry succeeds."""
    fault = {"fault": "http_500", "fault_times": 1, "fault_key": uuid.uuid4().hex}
    with pytest.raises(openai.InternalServerError):
        await stream(client, fault)
    assert text_of(await stream(client, fault)) == simulated_text(MESSAGES)

    fault = {"fault": "http_429", "retry_after": 0.01, "fault_times": 1, "fault_key": "retry"}
    requests = sim.stats.requests
    chunks = await stream(client.with_options(max_retries=1), fault)
    assert text_of(chunks) == simulated_text(MESSAGES)
    assert sim.stats.requests == requests + 2


async def test_api_key_is_checked_when_configured() -> None:
    """With api_key configured, a wrong key is 401 invalid_api_key and the right one works."""
    async with Simulator(SimulatorConfig(api_key="sk-right")) as server:
        async with AsyncOpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError) as caught:
                await stream(bad)
            assert caught.value.code == "invalid_api_key"
        async with AsyncOpenAI(api_key="sk-right", base_url=server.base_url, max_retries=0) as ok:
            assert text_of(await stream(ok)) == simulated_text(MESSAGES)


async def test_request_errors_have_openai_shape(sim: Simulator) -> None:
    """Unknown paths, bad JSON, missing fields and bad options get OpenAI-shaped errors."""
    url = sim.base_url
    body = {"model": MODEL, "messages": MESSAGES}
    async with httpx2.AsyncClient() as http:
        cases = [
            (await http.get(f"{url}/nope"), 404, None),
            (await http.post(f"{url}/chat/completions", content=b"{oops"), 400, None),
            (await http.post(f"{url}/chat/completions", json={"model": MODEL}), 400, "messages"),
            (await http.post(f"{url}/chat/completions", json={"messages": MESSAGES}), 400, "model"),
            (
                await http.post(f"{url}/chat/completions", json={**body, "simulator": {"x": 1}}),
                400,
                "simulator.x",
            ),
            (
                await http.post(
                    f"{url}/chat/completions", json={**body, "simulator": {"mode": "poetry"}}
                ),
                400,
                "simulator.mode",
            ),
        ]
    for response, status, param in cases:
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert response.json()["error"]["param"] == param


async def test_wire_format(sim: Simulator) -> None:
    """SSE goes chunked as data lines with usage null then [DONE]; JSON has Content-Length."""
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "simulator": {"reply_tokens": 3},
    }
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{sim.base_url}/chat/completions", json=body)
        plain = await http.post(f"{sim.base_url}/chat/completions", json={**body, "stream": False})
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert len(payloads) == 1 + 3 + 1 + 1  # role, tokens, finish, usage
    assert all(payload["usage"] is None for payload in payloads[:-1])
    assert payloads[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    assert payloads[-1]["choices"] == []
    assert int(plain.headers["content-length"]) == len(plain.content)


async def test_keep_alive_reuses_one_connection(sim: Simulator, client: AsyncOpenAI) -> None:
    """Sequential requests from one client share a single kept-alive connection."""
    for _ in range(3):
        await stream(client)
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert (sim.stats.connections, sim.stats.requests) == (1, 4)


async def test_client_leaving_mid_stream_frees_the_server(
    sim: Simulator, client: AsyncOpenAI
) -> None:
    """A client closing a slow stream early ends the server side without errors."""
    chunks = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={"simulator": {"tokens_per_second": 200, "reply_tokens": 10_000}},
    )
    async for chunk in chunks:
        if chunk.choices[0].delta.content:
            break
    await chunks.close()
    await poll_until(lambda: sim.stats.in_flight == 0, 30, "the simulator to see the client go")
    assert sim.stats.max_in_flight_by_model == {MODEL: 1}


async def test_pacing_and_time_to_first_token(client: AsyncOpenAI) -> None:
    """time_to_first_token delays the first token; tokens_per_second spaces the rest."""
    started = time.monotonic()
    chunks = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={
            "simulator": {"time_to_first_token": 0.1, "tokens_per_second": 100, "reply_tokens": 6}
        },
    )
    arrivals = [time.monotonic() - started async for chunk in chunks if chunk.choices]
    assert arrivals[1] >= 0.09  # first content token
    assert arrivals[-1] >= 0.1 + 5 / 100 - 0.01


async def test_role_chunk_off_and_usage_on_finish_chunk(client: AsyncOpenAI) -> None:
    """role_chunk=False starts with content; usage_in_last_choice_chunk puts usage on finish."""
    options = {"role_chunk": False, "usage_in_last_choice_chunk": True}
    chunks = await stream(client, options, stream_options={"include_usage": True})
    assert chunks[0].choices[0].delta.content == simulated_tokens(MESSAGES)[0]
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 24


def test_simulator_thread_serves_sync_clients() -> None:
    """SimulatorThread runs the server in the background for synchronous code."""
    with (
        SimulatorThread(SimulatorConfig(seed=7, reply_tokens=10)) as thread,
        openai.OpenAI(api_key="sk-test", base_url=thread.base_url, max_retries=0) as oai,
    ):
        chunks = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == simulated_text(MESSAGES, seed=7, length=10)
        reply = oai.chat.completions.create(model=MODEL, messages=MESSAGES, seed=3)
        assert reply.choices[0].message.content == simulated_text(MESSAGES, seed=3, length=10)
        assert thread.stats.requests == 2


async def test_fifty_concurrent_streams(sim: Simulator, client: AsyncOpenAI) -> None:
    """50 concurrent full-speed streams of 200 tokens all arrive intact."""

    async def one(i: int) -> bool:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"task {i}"}]
        chunks = await stream(client, {"reply_tokens": 200}, messages=messages)
        return text_of(chunks) == simulated_text(messages, length=200)

    assert all(await asyncio.gather(*(one(i) for i in range(50))))
    assert sim.stats.max_in_flight > 1
    assert sim.stats.chunks_sent == 50 * 202


async def test_serve_runs_until_cancelled() -> None:
    """serve() reports its URL through on_ready and stops cleanly when cancelled."""
    ready: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(serve(SimulatorConfig(), "127.0.0.1", 0, on_ready=ready.put_nowait))
    base_url = await asyncio.wait_for(ready.get(), 5)
    async with AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0) as oai:
        assert text_of(await stream(oai)) == simulated_text(MESSAGES)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_simulated_text_is_deterministic() -> None:
    """The same messages, seed and choice always give the same reply; any change alters it."""
    assert simulated_text(MESSAGES) == simulated_text(list(MESSAGES))
    assert simulated_text(MESSAGES) != simulated_text(MESSAGES, seed=1)
    assert simulated_text(MESSAGES) != simulated_text(MESSAGES, choice=1)
    assert simulated_tokens(MESSAGES, max_tokens=3) == simulated_tokens(MESSAGES)[:3]
    assert len(simulated_tokens(MESSAGES, length=500)) == 500


def test_config_rejects_bad_values() -> None:
    """SimulatorConfig validates its fields with ConfigError."""
    with pytest.raises(ConfigError, match="tokens_per_second"):
        SimulatorConfig(tokens_per_second=0)
    with pytest.raises(ConfigError, match="fault"):
        SimulatorConfig(fault="explode")
    assert SimulatorConfig(fault="http_503").fault == "http_503"


async def test_demo_mode_says_it_is_the_simulator_and_echoes(client: AsyncOpenAI) -> None:
    """Mode demo (the demo's answers) names the simulator, echoes the question, shows a
    markdown list and a code block after a reasoning summary, and quotes the first question
    on a later turn."""
    chunks = await stream(client, {"mode": "demo"})
    text = text_of(chunks)
    assert text.startswith("**This answer comes from streamq's built-in simulator**")
    assert "> Write a haiku about queues." in text
    assert "\n- **reload** the page" in text
    assert "```python\n" in text
    reasoning = "".join(
        (chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for chunk in chunks
        if chunk.choices
    )
    assert "Write a haiku about queues." in reasoning
    second: list[ChatCompletionMessageParam] = [
        *MESSAGES,
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And one about streams?"},
    ]
    follow_up = text_of(await stream(client, {"mode": "demo"}, messages=second))
    assert "> And one about streams?" in follow_up
    assert "turn 2" in follow_up
    assert "“Write a haiku about queues.”" in follow_up


async def test_demo_mode_calls_a_tool_when_asked(client: AsyncOpenAI) -> None:
    """Asked to use a tool, the demo calls the request's first tool, else its own get_weather."""
    ask: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Oslo? Use a tool."}
    ]
    own = await client.chat.completions.create(
        model=MODEL, messages=ask, extra_body={"simulator": {"mode": "demo"}}
    )
    (call,) = own.choices[0].message.tool_calls or []
    assert own.choices[0].finish_reason == "tool_calls"
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    theirs = await client.chat.completions.create(
        model=MODEL, messages=ask, tools=[TIME], extra_body={"simulator": {"mode": "demo"}}
    )
    (call,) = theirs.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_time"


async def test_reply_text_streams_the_given_text(client: AsyncOpenAI) -> None:
    """reply_text: the text, word by word, whatever the prompt; the default stays drawn."""
    script = "# Title\n\nSome *markdown*\n\n```\ncode\n```\n"
    chunks = await stream(client, {"reply_text": script})
    assert text_of(chunks) == script
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 7  # words
    assert text_of(await stream(client)) == simulated_text(MESSAGES)
