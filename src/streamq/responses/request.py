"""Responses requests: OpenAI's ``/v1/responses`` body as a job carries it, validated.

A job carries either a :class:`~streamq.core.request.ChatRequest` or a :class:`ResponsesRequest`
(``"api": "responses"`` in its stored JSON). ``previous_response_id`` is resolved before a job is
enqueued: the stored ``input`` is the whole conversation, so a worker needs nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamq.core.exceptions import InvalidRequest
from streamq.core.request import (
    FORMAT_VERSION,
    ChatRequest,
    check_depth,
    check_extra_body,
    check_integer,
    check_number,
    check_options,
    stored_body,
    stored_parts,
)

API = "responses"
# Responses parameters a job may carry. Provider-specific fields go in `extra_body`.
PARAMS = frozenset(
    {
        "extra_body", "include", "max_output_tokens", "max_tool_calls", "metadata",
        "parallel_tool_calls", "prompt_cache_key", "prompt_cache_retention", "reasoning",
        "safety_identifier", "service_tier", "temperature", "text", "tool_choice", "tools",
        "top_logprobs", "top_p", "truncation", "user",
    }
)  # fmt: skip
# Handled by the door and the store (stream, background, store, previous_response_id) or set
# by the worker; never carried by a job.
RESERVED = frozenset(
    {"api_key", "background", "conversation", "extra_headers", "extra_query", "input",
     "instructions", "model", "previous_response_id", "prompt", "store", "stream",
     "stream_options", "timeout"}
)  # fmt: skip
MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
TEXT_FORMATS = frozenset({"text", "json_object", "json_schema"})
TOOL_CHOICES = frozenset({"auto", "none", "required"})


@dataclass(frozen=True)
class ResponsesRequest:
    """A validated Responses request: ``input`` items (the whole conversation), optional
    ``instructions``, OpenAI parameters and streamq's options."""

    input: list[dict[str, Any]]
    model: str | None = None
    instructions: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The request as stored in Redis."""
        body: dict[str, Any] = {"v": FORMAT_VERSION, "api": API, "model": self.model}
        body |= {"input": self.input, "instructions": self.instructions}
        body |= {"params": self.params, "options": self.options}
        return json.dumps(body, ensure_ascii=False, allow_nan=False)


def load_request(raw: bytes | str, *, max_bytes: int) -> ChatRequest | ResponsesRequest:
    """Parse and re-validate a stored request of either API (it may not have come through a
    producer); raise :class:`InvalidRequest` saying what is wrong."""
    body = stored_body(raw, max_bytes=max_bytes)
    if body.get("api") != API:
        return ChatRequest.from_stored(body, max_bytes=max_bytes)
    fields = {"v", "api", "model", "input", "instructions", "params", "options"}
    params, options = stored_parts(body, fields)
    return build_responses_request(
        body.get("input"),
        body.get("model"),
        body.get("instructions"),
        params,
        options,
        max_bytes=max_bytes,
    )


def build_responses_request(
    input: object,
    model: object,
    instructions: object,
    params: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    max_bytes: int,
) -> ResponsesRequest:
    """Validate everything a Responses job carries; raise :class:`InvalidRequest`."""
    check_depth(input, "input")
    check_depth(params, "params")
    items = input_items(input)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidRequest(f"model must be a non-empty string, got {model!r}")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("instructions must be a string")
    request = ResponsesRequest(
        items, model, instructions or None, _check_params(params), check_options(options or {})
    )
    try:
        size = len(request.to_json().encode())
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"request is not JSON-serialisable: {exc}") from None
    if size > max_bytes:
        raise InvalidRequest(
            f"request is {size} bytes; the limit is {max_bytes} (STREAMQ_MAX_REQUEST_BYTES)"
        )
    return request


def input_items(value: object) -> list[dict[str, Any]]:
    """``input`` as a list of items: a string is one user message; a message without a
    ``type`` gets ``"type": "message"``. Raise :class:`InvalidRequest` for a malformed item."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be empty")
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("input must be a string or a non-empty list of input items")
    items = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object")
        item = dict(item)
        kind = item.setdefault("type", "message")
        if not isinstance(kind, str):
            raise InvalidRequest(f"{where}.type must be a string")
        _check_item(item, where)
        items.append(item)
    return items


def _check_item(item: dict[str, Any], where: str) -> None:
    kind = item["type"]
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise InvalidRequest(
                f"{where}.role is {role!r}; expected one of {sorted(MESSAGE_ROLES)}"
            )
        content = item.get("content")
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise InvalidRequest(f"{where}.content must be a string or a list of content parts")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(f"{where}.content[{j}] must be an object with a 'type'")
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise InvalidRequest(f"{where} (function_call) needs a string {name!r}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"{where} (function_call_output) needs a string 'call_id'")
        if not isinstance(item.get("output"), str | list):
            raise InvalidRequest(f"{where}.output must be a string or a list of content parts")
    elif kind == "item_reference":
        raise InvalidRequest(
            f"{where}: a job cannot carry an item_reference; the gateway's /v1/responses "
            "resolves them within the tenant's stored responses: send the item itself, or use "
            "previous_response_id"
        )


def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in params.items():
        if name in RESERVED:
            raise InvalidRequest(
                f"parameter {name!r} cannot travel with a job: streamq or the worker sets it"
            )
        if name not in PARAMS:
            raise InvalidRequest(
                f"unknown parameter {name!r}; put provider-specific fields in extra_body"
            )
        _check_value(name, value)
    return dict(params)


def _check_value(name: str, value: Any) -> None:
    def is_object() -> None:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{name} must be an object")

    match name:
        case "temperature":
            check_number(name, value, 0, 2)
        case "top_p":
            check_number(name, value, 0, 1)
        case "max_output_tokens" | "max_tool_calls":
            check_integer(name, value)
        case "top_logprobs":
            check_integer(name, value, 0)
        case "parallel_tool_calls" if not isinstance(value, bool):
            raise InvalidRequest("parallel_tool_calls must be true or false")
        case "tools":
            _check_tools(value)
        case "tool_choice":
            _check_tool_choice(value)
        case "reasoning":
            is_object()
            effort = value.get("effort")
            if effort is not None and not isinstance(effort, str):
                raise InvalidRequest("reasoning.effort must be a string")
        case "text":
            is_object()
            _check_text_format(value.get("format"))
        case "metadata":
            is_object()
            if not all(isinstance(v, str) for v in value.values()):
                raise InvalidRequest("metadata values must be strings")
        case "include" if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidRequest("include must be a list of strings")
        case "extra_body":
            is_object()
            check_extra_body(value, reserved=RESERVED, params=PARAMS)
        case _:
            pass


def _check_tools(tools: object) -> None:
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list of tool objects")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"tools[{i}] must be an object with a 'type'")
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"tools[{i}] is a function tool without a string 'name'")


def _check_tool_choice(choice: object) -> None:
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise InvalidRequest(
                f"tool_choice is {choice!r}; expected one of {sorted(TOOL_CHOICES)}"
            )
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise InvalidRequest("tool_choice must be a string or an object with a 'type'")
    if choice["type"] == "function" and not isinstance(choice.get("name"), str):
        raise InvalidRequest("tool_choice of type function needs a string 'name'")


def _check_text_format(fmt: object) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if not isinstance(fmt, dict) or not isinstance(kind, str) or kind not in TEXT_FORMATS:
        raise InvalidRequest(f"text.format.type must be one of {sorted(TEXT_FORMATS)}")
    if kind == "json_schema" and not (
        isinstance(fmt.get("name"), str) and isinstance(fmt.get("schema"), dict)
    ):
        raise InvalidRequest("text.format of type json_schema needs a string name and a schema")
