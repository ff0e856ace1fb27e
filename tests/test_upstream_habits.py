"""Chunk shapes from other OpenAI-compatible servers, replayed over real HTTP to the real SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from streamq import Delta, Done, Event, Meta, ToolCallDelta
from streamq.core.protocol import ResultBuilder
from streamq.core.request import ChatRequest
from streamq.worker.upstream import IncompleteStream, error_event, stream_chat
from tests.harness.upstreams import data_frames, scripted_upstream, sse_response


def chunk(choices: list[dict[str, Any]] | None, **extra: Any) -> dict[str, Any]:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "other"}
    return {**body, "choices": choices, **extra}


@pytest.fixture(params=["fast", "sdk"])
async def replay(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[list[dict[str, Any]], bool], Any]]:
    """A server that answers any request with the given chunks as SSE, then closes.

    Each test runs with both chunk parsers.
    """
    fast = request.param == "fast"
    served: list[bytes] = []
    async with scripted_upstream(lambda body: sse_response(served)) as base_url:

        async def run(chunks: list[dict[str, Any]], done: bool = True) -> list[Event]:
            served[:] = data_frames(chunks, done=done)
            client = AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0)
            async with client:
                chat = ChatRequest([{"role": "user", "content": "hi"}])
                return [event async for event in stream_chat(client, chat, "m", fast=fast)]

        yield run


def assemble(events: list[Event]) -> Any:
    builder = ResultBuilder()
    for event in events[:-1]:
        builder.add(event)
    done = events[-1]
    assert isinstance(done, Done)
    return builder.finish("job", done)


async def test_tool_calls_without_index(replay: Any) -> None:
    """Fragments with no `index`: a new id opens the next call, no id continues the last."""
    events = await replay(
        [
            chunk([{"delta": {"tool_calls": [{"id": "a", "function": {"name": "f"}}]}}]),
            chunk([{"delta": {"tool_calls": [{"function": {"arguments": '{"x":'}}]}}]),
            chunk([{"delta": {"tool_calls": [{"function": {"arguments": "1}"}}]}}]),
            chunk([{"delta": {"tool_calls": [{"id": "b", "function": {"name": "g"}}]}}]),
            chunk([{"delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]),
            chunk([{"delta": {}, "finish_reason": "tool_calls"}]),
        ]
    )
    result = assemble(events)
    assert [(c.index, c.id, c.name, c.arguments) for c in result.tool_calls] == [
        (0, "a", "f", '{"x":1}'),
        (1, "b", "g", "{}"),
    ]


async def test_arguments_sent_as_an_object_become_json(replay: Any) -> None:
    """A server that sends arguments as a JSON object still yields JSON text."""
    call = {"index": 0, "id": "a", "function": {"name": "f", "arguments": {"a": 1}}}
    events = await replay(
        [
            chunk([{"index": 0, "delta": {"tool_calls": [call]}}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ]
    )
    assert json.loads(assemble(events).tool_calls[0].arguments) == {"a": 1}


async def test_tool_call_indexes_starting_at_one(replay: Any) -> None:
    """Indexes that do not start at 0 give no phantom empty call."""
    call = {"index": 1, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
    events = await replay(
        [
            chunk([{"index": 0, "delta": {"tool_calls": [call]}}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ]
    )
    assert [(c.id, c.name) for c in assemble(events).tool_calls] == [("c1", "f")]


async def test_choice_without_index_and_usage_on_a_choice_chunk(replay: Any) -> None:
    """No choice index means choice 0; usage may ride on the finish chunk; no role chunk."""
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    events = await replay(
        [
            chunk([{"delta": {"content": "Hel"}}]),
            chunk([{"delta": {"content": "lo"}, "finish_reason": None}]),
            chunk([{"delta": {}, "finish_reason": "stop"}], usage=usage),
        ],
        done=False,
    )
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Hello"
    assert events[-1] == Done(
        finish_reason="stop", finish_reasons=["stop"], usage=usage, model="other"
    )


async def test_null_choices_and_missing_delta_are_skipped(replay: Any) -> None:
    """`choices: null` and a choice with no delta are tolerated."""
    events = await replay(
        [
            chunk(None),
            chunk([{"index": 0}]),
            chunk([{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]),
        ]
    )
    assert [type(e) for e in events] == [Meta, Delta, Done]


async def test_stream_that_ends_without_a_finish_reason_is_incomplete(replay: Any) -> None:
    """A stream that just stops, with no finish reason, is an error, not a short answer."""
    with pytest.raises(IncompleteStream):
        await replay([chunk([{"index": 0, "delta": {"content": "par"}}])], done=False)


async def test_tool_call_delta_fields(replay: Any) -> None:
    """The id and name arrive on the first fragment only."""
    call = {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}
    more = {"index": 0, "function": {"arguments": "{}"}}
    events = await replay(
        [
            chunk([{"index": 0, "delta": {"tool_calls": [call]}}]),
            chunk([{"index": 0, "delta": {"tool_calls": [more]}}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ]
    )
    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(f.id, f.name, f.arguments) for f in fragments] == [("a", "f", ""), (None, None, "{}")]


ROCKET, HIGH, LOW = "\U0001f680", "\ud83d", "\ude80"  # an emoji and its UTF-16 halves


def split_text(field: str, pieces: list[str], index: int = 0) -> list[dict[str, Any]]:
    """Chunks carrying ``pieces`` of one text field, as a JavaScript server cuts them."""
    return [chunk([{"index": index, "delta": {field: piece}}]) for piece in pieces]


@pytest.mark.parametrize(
    ("field", "kind"),
    [("content", "delta"), ("reasoning_content", "reasoning"), ("refusal", "refusal")],
)
async def test_surrogate_pairs_split_between_chunks_are_joined(
    replay: Any, field: str, kind: str
) -> None:
    """An emoji cut into its UTF-16 halves across chunks comes out whole, in every text field."""
    finish = chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    events = await replay([*split_text(field, ["Go " + HIGH, LOW + " now", HIGH, LOW]), finish])
    texts = [e.text for e in events if e.type == kind]
    assert "".join(texts) == f"Go {ROCKET} now{ROCKET}"
    assert all(text.encode() for text in texts)  # every piece is valid Unicode on its own


async def test_split_surrogates_in_tool_arguments_and_interleaved_choices(replay: Any) -> None:
    """Halves are joined per choice and per tool call, whatever arrives in between."""
    call = {"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"q":"' + HIGH}}
    rest = {"index": 0, "function": {"arguments": LOW + '"}'}}
    events = await replay(
        [
            chunk([{"index": 0, "delta": {"tool_calls": [call]}}]),
            chunk([{"index": 1, "delta": {"content": "a" + HIGH}}]),
            chunk([{"index": 0, "delta": {"tool_calls": [rest]}}]),
            chunk([{"index": 1, "delta": {"content": LOW}, "finish_reason": "stop"}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ]
    )
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert json.loads(arguments) == {"q": ROCKET}
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "a" + ROCKET


async def test_lone_surrogates_become_replacement_characters(replay: Any) -> None:
    """A half that never finds its pair (at the end, or a low one first) becomes U+FFFD."""
    events = await replay(
        [
            *split_text("content", [LOW + "x", "y" + HIGH + "z", "end" + HIGH]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        ]
    )
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "\ufffdxy\ufffdzend\ufffd"
    assert isinstance(events[-1], Done)


async def test_the_upstreams_model_fingerprint_and_logprobs_travel(replay: Any) -> None:
    """The first chunk's model, fingerprint, id and time come first as `meta`; logprobs ride
    on their deltas; the fingerprint is also on `done`."""
    tokens = [{"token": "ok", "logprob": -0.1, "bytes": [111, 107], "top_logprobs": []}]
    head = {"id": "cmpl-1", "created": 7, "model": "real-model", "system_fingerprint": "fp_1"}
    events = await replay(
        [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {
                **head,
                "choices": [
                    {"index": 0, "delta": {"content": "ok"}, "logprobs": {"content": tokens}}
                ],
            },
            {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
    )
    assert events[0] == Meta(model="real-model", system_fingerprint="fp_1", id="cmpl-1", created=7)
    delta = events[1]
    assert isinstance(delta, Delta)
    assert (delta.text, delta.logprobs) == ("ok", tokens)
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.model, done.system_fingerprint) == ("real-model", "fp_1")


async def test_a_choice_that_never_finishes_makes_the_stream_incomplete(replay: Any) -> None:
    """A proxy that ends an n=2 stream after choice 0 has not given a whole answer."""
    with pytest.raises(IncompleteStream, match=r"\[1\]"):
        await replay(
            [
                chunk([{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]),
                chunk([{"index": 1, "delta": {"content": "b"}}]),
            ]
        )


@pytest.mark.parametrize(
    ("error", "status", "code", "retryable"),
    [
        ({"message": "slow down", "code": 429}, 429, "upstream_rate_limited", True),
        ({"message": "slow down", "type": "rate_limit_error"}, 429, "upstream_rate_limited", True),
        ({"message": "bad key", "code": "invalid_api_key"}, 401, "upstream_unauthorized", False),
        ({"message": "no model", "code": "model_not_found"}, 404, "upstream_not_found", False),
        ({"message": "busy", "type": "overloaded_error"}, 529, "upstream_server_error", True),
        ({"message": "odd"}, None, "upstream_error", True),
    ],
)
async def test_an_error_inside_a_200_stream_counts_as_the_status_it_names(
    replay: Any, error: dict[str, Any], status: int | None, code: str, retryable: bool
) -> None:
    """`data: {"error": ...}` in a 200 body is classified like the HTTP status it names."""
    with pytest.raises(openai.APIError) as raised:
        await replay([chunk([{"index": 0, "delta": {"content": "a"}}]), {"error": error}])
    assert getattr(raised.value, "status_code", None) == status
    event = error_event(raised.value)
    assert (event.code, event.retryable) == (code, retryable)


@pytest.mark.parametrize("mode", ["fast", "sdk", "buffered"])
async def test_the_upstream_gets_the_body_the_sdks_own_create_sends(mode: str) -> None:
    """streamq hands the SDK the request as ``extra_body`` (skipping its TypedDict walk): the
    upstream still gets the very body ``create()`` with every field as an argument sends."""
    bodies: list[dict[str, Any]] = []
    done = data_frames([chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])])

    def answer(body: dict[str, Any]) -> bytes:
        bodies.append(body)
        if not body["stream"]:
            message = {"role": "assistant", "content": "ok"}
            whole = {**chunk([{"index": 0, "message": message, "finish_reason": "stop"}])}
            text = json.dumps({**whole, "object": "chat.completion"}).encode()
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            return head + b"content-length: %d\r\n\r\n" % len(text) + text
        return sse_response(done)

    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]
    params: dict[str, Any] = {
        "temperature": 0.5,
        "max_tokens": 7,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "extra_body": {"provider": {"order": ["a"]}},
    }
    async with scripted_upstream(answer) as base_url:
        client = AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0)
        async with client:
            chat = ChatRequest(messages, params=params)
            options = {"fast": mode == "fast", "buffered": mode == "buffered"}
            events = [event async for event in stream_chat(client, chat, "m", **options)]
            assert isinstance(events[-1], Done)
            streamed = mode != "buffered"
            direct: dict[str, Any] = {"model": "m", "messages": messages, **params}
            if streamed:
                direct["stream_options"] = {"include_usage": True}
                stream = await client.chat.completions.create(stream=True, **direct)
                async with stream:
                    [piece async for piece in stream]
            else:
                await client.chat.completions.create(stream=False, **direct)
    assert bodies[0] == bodies[1]
    assert bodies[0]["messages"] == messages
    assert bodies[0]["provider"] == {"order": ["a"]}
