"""Responses requests: their validation, and each API's request in the other's terms."""

from __future__ import annotations

from typing import Any

import pytest

from streamq import InvalidRequest
from streamq.core.request import ChatRequest, build_request
from streamq.responses.conversion import (
    chat_from_responses,
    for_api,
    responses_from_chat,
    upstream_input,
)
from streamq.responses.request import ResponsesRequest, build_responses_request, load_request

MAX_BYTES = 1_000_000
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": "Use metric units."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        ],
    },
    {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_2", "type": "function",
         "function": {"name": "get_time", "arguments": "{}"}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    {"role": "assistant", "content": "It is 21C at noon."},
    {"role": "user", "content": "And tomorrow?"},
]  # fmt: skip
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def chat(params: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> ChatRequest:
    return build_request(messages or MESSAGES, "m", params, {}, max_bytes=MAX_BYTES)


def responses(
    input: Any = "hi", instructions: str | None = None, **params: Any
) -> ResponsesRequest:
    return build_responses_request(input, "m", instructions, params, {}, max_bytes=MAX_BYTES)


def test_a_chat_request_survives_the_round_trip() -> None:
    """chat -> Responses -> chat keeps messages, tools, tool_choice, format, limits, effort."""
    params = {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
        "max_completion_tokens": 50,
        "reasoning_effort": "low",
        "temperature": 0.3,
        "parallel_tool_calls": False,
    }
    original = chat(params)
    there = responses_from_chat(original)
    back = chat_from_responses(there)
    assert back.messages == MESSAGES
    assert back.model == "m"
    tools = [{**t, "function": {"strict": False, **t["function"]}} for t in TOOLS]
    assert back.params == {**params, "tools": tools}  # a strict of False is said out loud


def test_a_chat_request_in_responses_terms() -> None:
    """Each chat parameter becomes its Responses counterpart."""
    request = responses_from_chat(
        chat(
            {
                "tools": TOOLS[:1],
                "response_format": {"type": "json_object"},
                "max_tokens": 9,
                "logprobs": True,
                "top_logprobs": 2,
                "verbosity": "low",
                "n": 1,
            }
        )
    )
    assert request.instructions is None
    assert request.input[0] == {"type": "message", "role": "system", "content": "Be brief."}
    assert request.input[3:6] == [
        {"type": "message", "role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
    ]  # fmt: skip
    assert request.input[2]["content"][1] == {
        "type": "input_image",
        "image_url": "https://x/y.png",
        "detail": "low",
    }
    assert request.params == {
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": TOOLS[0]["function"]["parameters"],
                "strict": True,
            }
        ],
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "max_output_tokens": 9,
        "top_logprobs": 2,
        "include": ["message.output_text.logprobs"],
    }
    # What a Responses upstream gets is a valid Responses request.
    assert load_request(request.to_json(), max_bytes=MAX_BYTES) == request


def test_a_responses_request_in_chat_terms() -> None:
    """Instructions lead as a system message; items become messages; params their chat names."""
    request = responses(
        [
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "Be kind.",
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [
            {"type": "function", "name": "f"}]},
        text={"format": {"type": "json_schema", "name": "a", "schema": SCHEMA, "strict": True}},
        reasoning={"effort": "high", "summary": "auto"},
        max_output_tokens=20,
        include=["message.output_text.logprobs"],
        metadata={"k": "v"},
    )  # fmt: skip
    converted = chat_from_responses(request)
    assert converted.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},  # text parts only: sent as one string
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
    ]  # fmt: skip
    assert converted.params == {
        "tools": [{"type": "function",
                   "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {
            "mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}},
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}},
        "reasoning_effort": "high",
        "max_completion_tokens": 20,
        "logprobs": True,
    }  # fmt: skip
    # What a chat upstream gets is a valid chat request.
    assert ChatRequest.from_json(converted.to_json(), max_bytes=MAX_BYTES) == converted


def test_for_api_converts_only_across_apis() -> None:
    """A request already of the upstream's API goes as it is; the job's options travel."""
    request = responses("hi")
    assert for_api(request, "responses") is request
    as_chat = for_api(
        build_request(MESSAGES, None, {}, {"buffered": True}, max_bytes=MAX_BYTES), "responses"
    )
    assert isinstance(as_chat, ResponsesRequest)
    assert as_chat.options == {"buffered": True}
    assert isinstance(for_api(request, "chat"), ChatRequest)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"stop": ["\n"]}, "stop is not available when the upstream speaks the Responses API"),
        ({"n": 2}, "n is not available"),
        ({"seed": 1}, "seed is not available"),
        ({"logit_bias": {"1": 1}}, "logit_bias is not available"),
        ({"store": True}, "store=false"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools of type 'custom'"),
        ({"tool_choice": {"type": "custom", "custom": {"name": "x"}}}, "tool_choice of type"),
    ],
)
def test_chat_requests_a_responses_upstream_cannot_take(params: dict[str, Any], words: str) -> None:
    """What the Responses API lacks is refused, naming it, never dropped."""
    with pytest.raises(InvalidRequest, match=words):
        responses_from_chat(chat(params))


@pytest.mark.parametrize(
    ("input", "params", "words"),
    [
        ("hi", {"tools": [{"type": "web_search"}]}, "tools of type 'web_search' need"),
        ("hi", {"max_tool_calls": 2}, "max_tool_calls needs"),
        ("hi", {"tool_choice": {"type": "file_search"}}, "tool_choice of type 'file_search'"),
        ([{"type": "web_search_call", "id": "w"}], {}, "input items of type 'web_search_call'"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], {},
         "input_image without image_url"),
    ],
)  # fmt: skip
def test_responses_requests_a_chat_upstream_cannot_take(
    input: Any, params: dict[str, Any], words: str
) -> None:
    """What Chat Completions lacks is refused, naming it, never dropped."""
    with pytest.raises(InvalidRequest, match=words):
        chat_from_responses(responses(input, **params))


def test_a_string_input_is_one_user_message() -> None:
    """input "hi" is the item list a caller would write for it."""
    assert responses("hi").input == [{"type": "message", "role": "user", "content": "hi"}]
    typed = responses([{"role": "user", "content": "x"}]).input
    assert typed == [{"type": "message", "role": "user", "content": "x"}]


def test_a_stored_request_loads_as_its_api() -> None:
    """load_request tells the two APIs apart by `api` and validates either again."""
    request = responses("hi", "sys", temperature=0.5)
    assert load_request(request.to_json(), max_bytes=MAX_BYTES) == request
    chat_request = chat({})
    assert load_request(chat_request.to_json().encode(), max_bytes=MAX_BYTES) == chat_request


@pytest.mark.parametrize(
    ("input", "params", "words"),
    [
        ("", {}, "input must not be empty"),
        ([], {}, "non-empty list"),
        ([{"role": "robot", "content": "x"}], {}, "role is 'robot'"),
        ([{"role": {"a": 1}, "content": "x"}], {}, "role is {'a': 1}"),
        ([{"role": "user", "content": 3}], {}, "content must be a string or a list"),
        ([{"type": "function_call", "call_id": "c", "name": "f"}], {}, "'arguments'"),
        ([{"type": "function_call_output", "output": "x"}], {}, "'call_id'"),
        ([{"type": "item_reference", "id": "x"}], {}, "previous_response_id"),
        ("hi", {"stream": True}, "cannot travel with a job"),
        ("hi", {"store": True}, "cannot travel with a job"),
        ("hi", {"frequency_penalty": 1}, "unknown parameter 'frequency_penalty'"),
        ("hi", {"temperature": 3}, "temperature must be a number from 0 to 2"),
        ("hi", {"max_output_tokens": 0}, "max_output_tokens must be an integer of at least 1"),
        ("hi", {"tool_choice": "sometimes"}, "tool_choice is 'sometimes'"),
        ("hi", {"tools": [{"type": "function"}]}, "without a string 'name'"),
        ("hi", {"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ("hi", {"text": {"format": {"type": ["text"]}}}, "text.format.type"),
        ("hi", {"text": {"format": {"type": "json_schema"}}}, "needs a string name and a schema"),
        ("hi", {"extra_body": {"input": "x"}}, "extra_body cannot set 'input'"),
        ("hi", {"extra_body": {"temperature": 1}}, "pass it as its own parameter"),
    ],
)
def test_invalid_responses_requests_say_what_is_wrong(
    input: Any, params: dict[str, Any], words: str
) -> None:
    """Each malformed request is refused with a message naming the problem."""
    with pytest.raises(InvalidRequest, match=words):
        responses(input, **params)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('{"v": 1, "api": "responses", "input": "hi", "extra": 1}', "unknown fields: extra"),
        ('{"v": 2, "api": "responses", "input": "hi"}', "format version 2"),
        ('{"v": 1, "api": "responses", "input": "hi", "params": [1]}', "JSON objects"),
        ('{"v": 1, "api": "responses", "input": "hi", "options": {"upstream_api": "x"}}',
         "upstream_api must be one of"),
        ('{"v": 1, "api": "responses", "input": "hi", "options": {"upstream_api": ["chat"]}}',
         "upstream_api must be one of"),
        ("[not json", "not UTF-8 JSON"),
    ],
)  # fmt: skip
def test_a_stored_request_is_validated_again(raw: str, words: str) -> None:
    """A stored request may not have come through a producer: load_request checks it all."""
    with pytest.raises(InvalidRequest, match=words):
        load_request(raw, max_bytes=MAX_BYTES)


def test_a_stored_request_over_the_limit_is_refused() -> None:
    """The size limit holds for stored Responses requests too."""
    with pytest.raises(InvalidRequest, match="the limit is 10"):
        load_request(responses("hi").to_json(), max_bytes=10)


def test_text_parts_go_as_a_string_and_mixed_parts_as_parts() -> None:
    """Chat-only engines that read no content parts still read a text-only message."""
    request = build_responses_request(
        [
            {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                         {"type": "input_text", "text": "b"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "see"},
                                         {"type": "input_image", "image_url": "https://x/y.png"}]},
        ],
        None, None, {}, max_bytes=MAX_BYTES,
    )  # fmt: skip
    first, second = chat_from_responses(request).messages
    assert first == {"role": "user", "content": "ab"}
    assert [part["type"] for part in second["content"]] == ["text", "image_url"]


def test_echoed_item_ids_do_not_go_upstream() -> None:
    """LangChain and the AI SDK send back the ids of earlier output items: streamq's, which a
    Responses upstream never stored."""
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "assistant", "id": "msg_x_0", "status": "completed",
         "content": [{"type": "output_text", "text": "hi"}]},
        {"type": "function_call", "id": "fc_x_1", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]  # fmt: skip
    sent = upstream_input(items)
    assert "id" not in sent[0]
    assert "status" not in sent[0]
    assert "id" not in sent[1]
    assert sent[2] == items[2]  # reasoning items keep their ids (encrypted reasoning needs them)
