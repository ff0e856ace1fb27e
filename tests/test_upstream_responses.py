"""Jobs of either API against an upstream of either API: the same events come out.

End to end (producer -> arq worker -> the simulator over real HTTP -> Redis -> reader), then the
Responses stream's less common shapes replayed by a scripted server to the real SDK.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from streamq import (
    ChatJob,
    Delta,
    Done,
    Error,
    Event,
    JobFailed,
    Meta,
    Reasoning,
    Settings,
    Start,
    StreamQ,
    ToolCallDelta,
)
from streamq.core.protocol import ResultBuilder
from streamq.core.request import ChatRequest, build_request
from streamq.dev.simulator import simulated_text
from streamq.responses.request import ResponsesRequest, build_responses_request
from streamq.worker.arq_worker import running_worker
from streamq.worker.upstream import IncompleteStream, error_event
from streamq.worker.upstream_responses import chat_usage, stream_responses
from tests.harness.upstreams import scripted_upstream, sse_response, typed_frames

MAX_BYTES = 1_000_000
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about queues"},
]
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_TOOLS = [{"type": "function", "function": WEATHER}]
RESPONSES_TOOLS = [{"type": "function", **WEATHER}]
COMBINATIONS = [
    (job, upstream) for job in ("chat", "responses") for upstream in ("chat", "responses")
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One attempt per job: an error is the job's end, at once."""
    return settings.replace(max_attempts=1)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[None]:
    async with running_worker(settings):
        yield


def job_request(
    api: str,
    upstream: str | None,
    messages: list[dict[str, Any]],
    chat: dict[str, Any] | None = None,
    responses: dict[str, Any] | None = None,
    model: str | None = None,
) -> ChatRequest | ResponsesRequest:
    """A job of ``api`` over ``messages`` (written as chat messages), run on ``upstream``;
    ``chat`` and ``responses`` are each API's own parameters for the same question."""
    options = {"upstream_api": upstream}
    if api == "chat":
        return build_request(messages, model, chat or {}, options, max_bytes=MAX_BYTES)
    items = [item for message in messages for item in _items(message)]
    return build_responses_request(
        items, model, None, responses or {}, options, max_bytes=MAX_BYTES
    )


def _items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat message as the Responses input items a caller would write for it."""
    if message["role"] == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": message["tool_call_id"],
                "output": message["content"],
            }
        ]
    calls = [
        {"type": "function_call", "call_id": c["id"], **c["function"]}
        for c in message.get("tool_calls") or ()
    ]
    if message.get("content") is None:
        return calls
    return [{"type": "message", "role": message["role"], "content": message["content"]}]


async def run(sq: StreamQ, request: ChatRequest | ResponsesRequest) -> tuple[ChatJob, list[Event]]:
    job = await sq.enqueue_request(request)
    return job, [event async for event in job.events(queued=False)]


def upstream_of(events: list[Event]) -> str:
    """Which API answered, by the id its response carried."""
    [meta] = [e for e in events if isinstance(e, Meta)]
    assert meta.id is not None
    return "responses" if meta.id.startswith("resp_") else "chat"


in_worker = pytest.mark.usefixtures("worker")


@in_worker
@pytest.mark.parametrize(("api", "upstream"), COMBINATIONS)
async def test_text_is_exact_with_usage(sq: StreamQ, api: str, upstream: str) -> None:
    """The answer's text, finish reason and chat-shaped usage, whichever APIs meet."""
    job, events = await run(sq, job_request(api, upstream, MESSAGES))
    assert upstream_of(events) == upstream
    assert isinstance(events[0], Start)
    assert isinstance(events[1], Meta)
    assert all(isinstance(e, Delta) for e in events[2:-1])
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert done.model == "sim-model"
    assert done.usage is not None
    assert done.usage["total_tokens"] == done.usage["prompt_tokens"] + len(events[2:-1])
    result = await job.result()
    assert result.text == simulated_text(MESSAGES)


@in_worker
@pytest.mark.parametrize(("api", "upstream"), COMBINATIONS)
async def test_a_tool_call_then_its_result(sq: StreamQ, api: str, upstream: str) -> None:
    """A tool call's id, name and arguments arrive; the next turn, with its result, answers."""
    chat = {"tools": CHAT_TOOLS, "tool_choice": "required"}
    responses = {"tools": RESPONSES_TOOLS, "tool_choice": "required"}
    job, events = await run(sq, job_request(api, upstream, MESSAGES, chat, responses))
    assert upstream_of(events) == upstream
    first = next(e for e in events if isinstance(e, ToolCallDelta))
    assert first.index == 0
    assert first.id
    assert first.name == "get_weather"
    result = await job.result()
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert (call.id, call.name) == (first.id, "get_weather")
    assert isinstance(json.loads(call.arguments), dict)
    assert result.usage is not None
    assert result.usage["completion_tokens"] > 0

    function = {"name": call.name, "arguments": call.arguments}
    turn = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": function}
        ]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]  # fmt: skip
    chat, responses = {"tools": CHAT_TOOLS}, {"tools": RESPONSES_TOOLS}
    answer = await (
        await sq.enqueue_request(job_request(api, upstream, turn, chat, responses))
    ).result()
    assert answer.finish_reason == "stop"
    assert answer.text == simulated_text(turn)


@in_worker
@pytest.mark.parametrize(("api", "upstream"), COMBINATIONS)
async def test_reasoning_comes_before_the_text(sq: StreamQ, api: str, upstream: str) -> None:
    """Reasoning arrives as reasoning events, apart from the answer."""
    simulator = {"extra_body": {"simulator": {"mode": "reasoning"}}}
    _, events = await run(sq, job_request(api, upstream, MESSAGES, simulator, simulator))
    kinds = [type(e) for e in events if isinstance(e, Reasoning | Delta)]
    assert kinds[0] is Reasoning
    assert kinds[-1] is Delta
    assert kinds.index(Delta) == kinds.count(Reasoning)  # all reasoning first
    text = "".join(e.text for e in events if isinstance(e, Delta))
    assert text == simulated_text(MESSAGES)


@in_worker
async def test_reasoning_effort_asks_a_responses_upstream_for_reasoning(sq: StreamQ) -> None:
    """A chat job's reasoning_effort reaches a Responses upstream as reasoning.effort."""
    request = job_request("chat", "responses", MESSAGES, {"reasoning_effort": "low"})
    job, events = await run(sq, request)
    assert any(isinstance(e, Reasoning) for e in events)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.usage is not None
    assert done.usage["completion_tokens_details"]["reasoning_tokens"] > 0
    assert (await job.result()).text == simulated_text(MESSAGES)


@in_worker
@pytest.mark.parametrize(("api", "upstream"), COMBINATIONS)
async def test_max_tokens_ends_with_length(sq: StreamQ, api: str, upstream: str) -> None:
    """max_tokens (chat) or max_output_tokens (Responses) cuts the answer: finish `length`."""
    request = job_request(api, upstream, MESSAGES, {"max_tokens": 3}, {"max_output_tokens": 3})
    result = await (await sq.enqueue_request(request)).result()
    assert result.finish_reason == "length"
    assert result.text == simulated_text(MESSAGES, max_tokens=3)


@in_worker
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_buffered_job_on_a_responses_upstream(sq: StreamQ, api: str) -> None:
    """buffered asks for the whole response at once: one delta, then done with usage."""
    request = job_request(api, "responses", MESSAGES)
    request = dataclasses.replace(request, options={**request.options, "buffered": True})
    _, events = await run(sq, request)
    [delta] = [e for e in events if isinstance(e, Delta)]
    assert delta.text == simulated_text(MESSAGES)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert done.usage


@pytest.mark.parametrize(
    ("upstream", "fault", "code", "retryable"),
    [
        ("responses", {"fault": "error_event", "after": 2}, "upstream_server_error", True),
        ("responses", {"fault": "http_429"}, "upstream_rate_limited", True),
        ("responses", {"fault": "http_401"}, "upstream_unauthorized", False),
        ("responses", {"fault": "silent_end", "after": 2}, "upstream_incomplete", True),
        ("chat", {"fault": "error_event", "after": 2}, "upstream_server_error", True),
    ],
)
@in_worker
async def test_an_upstream_failure_ends_with_its_error(
    sq: StreamQ, upstream: str, fault: dict[str, Any], code: str, retryable: bool
) -> None:
    """A failure of the upstream ends the job with the `error` its kind calls for."""
    params = {"extra_body": {"simulator": fault}}
    for api in ("chat", "responses"):
        _, events = await run(sq, job_request(api, upstream, MESSAGES, params, params))
        error = events[-1]
        assert isinstance(error, Error), (api, events[-1])
        assert (error.code, error.retryable) == (code, retryable)


@pytest.mark.parametrize(
    ("api", "upstream", "params", "words"),
    [
        ("chat", "responses", {"stop": ["\n"]}, "stop is not available"),
        ("chat", "responses", {"n": 2}, "n is not available"),
        ("responses", "chat", {"tools": [{"type": "web_search"}]}, "web_search"),
        ("responses", "chat", {"max_tool_calls": 2}, "max_tool_calls"),
    ],
)
@in_worker
async def test_what_the_upstream_api_cannot_ask_is_refused(
    sq: StreamQ, api: str, upstream: str, params: dict[str, Any], words: str
) -> None:
    """A parameter the upstream's API lacks ends the job with invalid_request, untried."""
    job, events = await run(sq, job_request(api, upstream, MESSAGES, params, params))
    error = events[-1]
    assert isinstance(error, Error)
    assert error.code == "invalid_request"
    assert not error.retryable
    assert words in error.message
    assert not any(isinstance(e, Meta) for e in events)  # the upstream was never asked
    with pytest.raises(JobFailed):
        await job.result()


async def test_the_worker_setting_chooses_the_upstream_per_model(
    settings: Settings, sq: StreamQ
) -> None:
    """Without a job option, STREAMQ_UPSTREAM_API's per-model entry, else its default, rules."""
    async with running_worker(settings.replace(model_upstream_apis={"sim-large": "responses"})):
        for model, expected in (("sim-large", "responses"), ("sim-model", "chat")):
            for api in ("chat", "responses"):
                request = job_request(api, None, MESSAGES, model=model)
                _, events = await run(sq, request)
                assert upstream_of(events) == expected, (model, api)


# The Responses stream's rarer shapes, replayed by a scripted server


Replay = Callable[..., Awaitable[list[Event]]]


def created(**response: Any) -> dict[str, Any]:
    body = {"id": "resp_1", "model": "m-1", "created_at": 1700000000.5, "status": "in_progress"}
    return {"type": "response.created", "response": {**body, **response}}


def completed(output: list[Any] | None = None, **response: Any) -> dict[str, Any]:
    body = {"id": "resp_1", "model": "m-1", "status": "completed", "output": output or []}
    return {"type": "response.completed", "response": {**body, **response}}


def text_delta(delta: str, item: str = "msg_1", index: int = 0, **more: Any) -> dict[str, Any]:
    fields = {"item_id": item, "output_index": index, "content_index": 0, "delta": delta}
    return {"type": "response.output_text.delta", **fields, **more}


def message(text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": "msg_1", "role": "assistant", "content": content}


def call(call_id: str, name: str, arguments: str, item: str = "fc_1") -> dict[str, Any]:
    fields = {"id": item, "call_id": call_id, "name": name, "arguments": arguments}
    return {"type": "function_call", **fields}


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """A server that answers any request with the given events as SSE, then closes."""
    served: list[bytes] = []
    bodies: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> bytes:
        bodies.append(body)
        return sse_response(served)

    async with scripted_upstream(answer) as base_url:

        async def run(events: list[dict[str, Any]], **params: Any) -> list[Event]:
            served[:] = typed_frames(events)
            client = AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0)
            request = build_responses_request("hi", None, "be kind", params, max_bytes=MAX_BYTES)
            async with client:
                return [event async for event in stream_responses(client, request, "m")]

        run.bodies = bodies  # type: ignore[attr-defined]
        yield run


def assemble(events: list[Event]) -> Any:
    builder = ResultBuilder()
    for event in events[:-1]:
        builder.add(event)
    done = events[-1]
    assert isinstance(done, Done)
    return builder.finish("job", done)


async def test_the_request_goes_out_unstored_with_its_instructions(replay: Replay) -> None:
    """store is false (streamq keeps the conversation), instructions and params travel."""
    await replay([created(), completed()], temperature=0.5, extra_body={"x_vendor": 1})
    [body] = replay.bodies  # type: ignore[attr-defined]
    assert body["store"] is False
    assert body["stream"] is True
    assert body["instructions"] == "be kind"
    assert body["temperature"] == 0.5
    assert body["x_vendor"] == 1
    assert body["input"] == [{"type": "message", "role": "user", "content": "hi"}]


async def test_meta_and_done_come_from_the_response(replay: Replay) -> None:
    """response.created gives meta; response.completed gives done with usage, chat-shaped."""
    usage = {
        "input_tokens": 5,
        "output_tokens": 7,
        "total_tokens": 12,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens_details": {"reasoning_tokens": 3},
    }
    events = await replay([created(), text_delta("Hi"), completed(usage=usage)])
    meta, delta, done = events
    assert meta == Meta(id="resp_1", model="m-1", created=1700000000)
    assert delta == Delta(text="Hi")
    assert done == Done(
        finish_reason="stop",
        finish_reasons=["stop"],
        model="m-1",
        usage={
            "prompt_tokens": 5,
            "completion_tokens": 7,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    )


def test_usage_leaves_out_what_the_server_did_not_say() -> None:
    """A bare usage keeps only its counts (the total added up when missing)."""
    assert chat_usage({"input_tokens": 1, "output_tokens": 2}) == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }
    assert chat_usage(None) is None


async def test_a_server_without_deltas_gives_the_same_result(replay: Replay) -> None:
    """Only .done events and the finished items: the text and the call arrive whole."""
    item = call("call_9", "lookup", '{"q":1}')
    events = await replay(
        [
            created(),
            {"type": "response.output_text.done", "output_index": 0, "content_index": 0,
             "item_id": "msg_1", "text": "Hello"},
            {"type": "response.output_item.done", "output_index": 0, "item": message("Hello")},
            {"type": "response.output_item.done", "output_index": 1, "item": item},
            completed([message("Hello"), item]),
        ]
    )  # fmt: skip
    result = assemble(events)
    assert result.text == "Hello"
    assert [(c.index, c.id, c.name, c.arguments) for c in result.tool_calls] == [
        (0, "call_9", "lookup", '{"q":1}')
    ]
    assert result.finish_reason == "tool_calls"


async def test_done_events_add_only_what_the_deltas_left_out(replay: Replay) -> None:
    """Partial deltas, then the whole text: the rest arrives once, never twice."""
    events = await replay(
        [
            created(),
            text_delta("Hel"),
            {"type": "response.output_text.done", "output_index": 0, "content_index": 0,
             "item_id": "msg_1", "text": "Hello"},
            {"type": "response.output_item.done", "output_index": 0, "item": message("Hello")},
            completed([message("Hello")]),
        ]
    )  # fmt: skip
    assert [e.text for e in events if isinstance(e, Delta)] == ["Hel", "lo"]


async def test_function_calls_are_numbered_in_order(replay: Replay) -> None:
    """Two calls: index 0 and 1, id and name first, arguments in pieces by item id."""
    added = [
        {"type": "response.output_item.added", "output_index": i, "item": call(c, n, "", f"fc_{i}")}
        for i, (c, n) in enumerate((("call_a", "f"), ("call_b", "g")))
    ]
    events = await replay(
        [
            created(),
            added[0],
            {"type": "response.function_call_arguments.delta", "item_id": "fc_0",
             "output_index": 0, "delta": '{"a":'},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_0",
             "output_index": 0, "delta": "1}"},
            added[1],
            {"type": "response.function_call_arguments.done", "item_id": "fc_1",
             "output_index": 1, "arguments": "{}"},
            completed(),
        ]
    )  # fmt: skip
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0] == ToolCallDelta(index=0, id="call_a", name="f")
    result = assemble(events)
    assert [(c.index, c.id, c.name, c.arguments) for c in result.tool_calls] == [
        (0, "call_a", "f", '{"a":1}'),
        (1, "call_b", "g", "{}"),
    ]
    assert result.finish_reason == "tool_calls"


async def test_reasoning_summary_parts_are_set_apart(replay: Replay) -> None:
    """Two summary parts read as two paragraphs; reasoning text is reasoning too."""

    def summary(index: int, delta: str) -> dict[str, Any]:
        return {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1",
                "output_index": 0, "summary_index": index, "delta": delta}  # fmt: skip

    events = await replay(
        [
            created(),
            summary(0, "First"),
            summary(0, " thought."),
            summary(1, "Second."),
            {"type": "response.reasoning_text.delta", "item_id": "rs_2", "output_index": 1,
             "content_index": 0, "delta": " Raw."},
            text_delta("Answer", index=2),
            completed(),
        ]
    )  # fmt: skip
    assert assemble(events).reasoning == "First thought.\n\nSecond. Raw."
    assert assemble(events).text == "Answer"


async def test_refusal_and_logprobs(replay: Replay) -> None:
    """A refusal delta is a refusal; a text delta's log probabilities travel with it."""
    logprobs = [{"token": "Hi", "logprob": -0.5, "top_logprobs": []}]
    events = await replay(
        [
            created(),
            {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": "No."},
            text_delta("Hi", index=1, logprobs=logprobs),
            text_delta("!", index=1, logprobs=[]),
            completed(),
        ]
    )  # fmt: skip
    result = assemble(events)
    assert result.choices[0].refusal == "No."
    deltas = [e for e in events if isinstance(e, Delta)]
    assert [(d.text, d.logprobs) for d in deltas] == [("Hi", logprobs), ("!", None)]


async def test_surrogate_halves_are_joined(replay: Replay) -> None:
    """An emoji cut between two deltas (a JavaScript server) arrives whole."""
    raw = [created(), text_delta("go \ud83d"), text_delta("\ude80!"), completed()]
    events = await replay(raw)
    assert [e.text for e in events if isinstance(e, Delta)] == ["go ", "\U0001f680!"]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), (None, "incomplete")],
)
async def test_an_incomplete_response_says_why(
    replay: Replay, reason: str | None, finish: str
) -> None:
    """response.incomplete ends the job with the chat finish reason of the same meaning."""
    ending = {"type": "response.incomplete",
              "response": {"id": "r", "status": "incomplete", "output": [message("Hel")],
                           "incomplete_details": {"reason": reason}}}  # fmt: skip
    events = await replay([created(), text_delta("Hel"), ending])
    result = assemble(events)
    assert (result.text, result.finish_reason) == ("Hel", finish)


@pytest.mark.parametrize(
    ("ending", "code", "retryable"),
    [
        ({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"},
         "upstream_rate_limited", True),
        ({"type": "error", "code": None, "message": "oops"}, "upstream_error", True),
        ({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
         "upstream_bad_request", False),
        ({"type": "response.failed", "response": {"id": "r", "status": "failed",
          "error": {"code": "server_error", "message": "boom"}}}, "upstream_server_error", True),
        ({"type": "response.failed", "response": {"id": "r", "status": "failed",
          "error": {"code": "invalid_prompt", "message": "no"}}}, "upstream_bad_request", False),
    ],
)  # fmt: skip
async def test_failures_raise_as_their_http_status_would(
    replay: Replay, ending: dict[str, Any], code: str, retryable: bool
) -> None:
    """An error event or a failed response is classified like the HTTP status it names."""
    with pytest.raises(openai.APIError) as raised:
        await replay([created(), text_delta("Hi"), ending])
    error = error_event(raised.value)
    assert (error.code, error.retryable) == (code, retryable)


async def test_a_stream_that_stops_short_is_incomplete(replay: Replay) -> None:
    """No terminal event: IncompleteStream, retried like a chat stream that ends early."""
    with pytest.raises(IncompleteStream):
        await replay([created(), text_delta("Hi")])


async def test_unknown_events_are_skipped(replay: Replay) -> None:
    """Event types streamq does not know (web search progress, new ones) change nothing."""
    events = await replay(
        [
            created(),
            {"type": "response.web_search_call.searching", "output_index": 0, "item_id": "ws"},
            {"type": "response.something_new", "x": 1},
            text_delta("Hi"),
            completed(),
        ]
    )
    assert [type(e) for e in events] == [Meta, Delta, Done]


@pytest.mark.parametrize("buffered", [False, True])
async def test_the_upstream_gets_the_body_the_sdks_own_create_sends(buffered: bool) -> None:
    """The request goes to the SDK as ``extra_body`` (skipping its TypedDict walk): the
    upstream still gets the very body ``responses.create()`` with every field as an argument
    sends, streamed or buffered."""
    bodies: list[dict[str, Any]] = []
    whole = completed([message("ok")])["response"]

    def answer(body: dict[str, Any]) -> bytes:
        bodies.append(body)
        if body["stream"]:
            return sse_response(typed_frames([created(), completed([message("ok")])]))
        text = json.dumps(whole).encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
        return head + b"content-length: %d\r\n\r\n" % len(text) + text

    params = {"temperature": 0.5, "max_output_tokens": 9, "extra_body": {"x_vendor": 1}}
    request = build_responses_request("hi", None, "be kind", params, max_bytes=MAX_BYTES)
    async with scripted_upstream(answer) as base_url:
        client = AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0)
        async with client:
            events = [e async for e in stream_responses(client, request, "m", buffered=buffered)]
            assert isinstance(events[-1], Done)
            direct: dict[str, Any] = {
                "model": "m",
                "input": [{"type": "message", "role": "user", "content": "hi"}],
                "store": False,
                "instructions": "be kind",
                **params,
            }
            if buffered:
                await client.responses.create(stream=False, **direct)
            else:
                stream = await client.responses.create(stream=True, **direct)
                async with stream:
                    [item async for item in stream]
    assert bodies[0] == bodies[1]
    assert bodies[0]["x_vendor"] == 1
