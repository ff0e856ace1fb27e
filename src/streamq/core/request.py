"""Chat requests: building the message list, validating it, and its JSON form on the queue."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamq.core.exceptions import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# OpenAI Chat Completions parameters a job may carry. Provider-specific fields go in `extra_body`.
PARAMS = frozenset(
    {
        "audio", "extra_body", "frequency_penalty", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "temperature", "tool_choice", "tools", "top_logprobs", "top_p",
        "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
# Set by streamq itself or by the worker's configuration; never carried by a job.
RESERVED = frozenset(
    {"api_key", "base_url", "organization", "project", "extra_headers", "extra_query",
     "timeout", "stream", "stream_options", "messages", "model"}
)  # fmt: skip
FORMAT_VERSION = 1
# Deeper JSON is refused with a clear error before anything recurses into it (json, the SDK).
MAX_DEPTH = 64
# deadline, idle_timeout: seconds (None: the worker's settings); buffered: ask the upstream for
# the whole answer at once (stream=false), for callers that want only the result; upstream_api:
# which of the upstream's APIs runs the job (None: the worker's STREAMQ_UPSTREAM_API).
OPTIONS = frozenset({"deadline", "idle_timeout", "buffered", "upstream_api"})
UPSTREAM_APIS = frozenset({"chat", "responses"})


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: what a worker sends upstream, minus credentials."""

    messages: list[dict[str, Any]]
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # streamq's own: deadline, ...

    def to_json(self) -> str:
        """The request as stored in Redis."""
        body: dict[str, Any] = {"v": FORMAT_VERSION, "model": self.model}
        body |= {"messages": self.messages, "params": self.params, "options": self.options}
        return json.dumps(body, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, raw: bytes | str, *, max_bytes: int) -> ChatRequest:
        """Parse and re-validate a stored request (it may not have come through the producer)."""
        return cls.from_stored(stored_body(raw, max_bytes=max_bytes), max_bytes=max_bytes)

    @classmethod
    def from_stored(cls, body: dict[str, Any], *, max_bytes: int) -> ChatRequest:
        """Re-validate a stored request's JSON object (of :func:`stored_body`)."""
        params, options = stored_parts(body, {"v", "model", "messages", "params", "options"})
        return build_request(
            body.get("messages"), body.get("model"), params, options, max_bytes=max_bytes
        )


def stored_body(raw: bytes | str, *, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a stored request of either API; :class:`InvalidRequest` if it is too
    large, not UTF-8 JSON, or not an object."""
    if len(raw) > max_bytes:
        raise InvalidRequest(f"request is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"request is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"request is nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request must be a JSON object")
    return body


def stored_parts(body: dict[str, Any], fields: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored request's params and options, once its version and ``fields`` are checked."""
    if body.get("v") != FORMAT_VERSION:
        raise InvalidRequest(f"request format version {body.get('v')!r} is not supported")
    unknown = set(body) - fields
    if unknown:
        raise InvalidRequest(f"request has unknown fields: {', '.join(sorted(unknown))}")
    params, options = body.get("params") or {}, body.get("options") or {}
    if not isinstance(params, dict) or not isinstance(options, dict):
        raise InvalidRequest("request params and options must be JSON objects")
    return params, options


def chat_messages(
    user_message: str,
    *,
    system_prompt: str | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Messages in the order a model expects: system prompt, then history, then the user turn."""
    if not isinstance(user_message, str):
        raise InvalidRequest(f"user_message must be a string, got {type(user_message).__name__}")
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    if history is not None:
        if isinstance(history, str | bytes) or not isinstance(history, Sequence):
            raise InvalidRequest("history must be a list of message objects")
        messages.extend(dict(m) if isinstance(m, Mapping) else m for m in history)
    messages.append({"role": "user", "content": user_message})
    return messages


def build_request(
    messages: object,
    model: object,
    params: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    max_bytes: int,
) -> ChatRequest:
    """Validate everything a job carries; raise :class:`InvalidRequest` saying what is wrong."""
    check_depth(messages, "messages")
    check_depth(params, "params")
    checked = _check_messages(messages)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidRequest(f"model must be a non-empty string, got {model!r}")
    request = ChatRequest(checked, model, _check_params(params), check_options(options or {}))
    try:
        size = len(request.to_json().encode())
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"request is not JSON-serialisable: {exc}") from None
    if size > max_bytes:
        raise InvalidRequest(
            f"request is {size} bytes; the limit is {max_bytes} (STREAMQ_MAX_REQUEST_BYTES)"
        )
    return request


def check_depth(value: object, name: str, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`InvalidRequest` if ``value`` nests lists and objects deeper than ``limit``."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            raise InvalidRequest(f"{name} is nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def _check_messages(messages: object) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise InvalidRequest("messages must be a non-empty list of message objects")
    messages = [dict(m) if isinstance(m, Mapping) else m for m in messages]
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"{where}.role is {role!r}; expected one of {sorted(ROLES)}")
        _check_content(message, where)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise InvalidRequest(f"{where} has role 'tool' but no string 'tool_call_id'")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
            raise InvalidRequest(f"{where}.tool_calls must be a list on an assistant message")
    return messages


def _check_content(message: dict[str, Any], where: str) -> None:
    content = message.get("content")
    if isinstance(content, str):
        return
    if content is None and message["role"] == "assistant" and message.get("tool_calls"):
        return
    if isinstance(content, list) and content:
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(f"{where}.content[{j}] must be an object with a 'type'")
        return
    raise InvalidRequest(
        f"{where}.content must be a string or a non-empty list of content parts, "
        f"got {type(content).__name__}"
    )


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """streamq's own options of a job, checked; unset ones (None, False) left out."""
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name not in OPTIONS:
            raise InvalidRequest(f"unknown option {name!r}; expected one of {sorted(OPTIONS)}")
        if value is None or value is False:
            continue
        if name == "buffered":
            if value is not True:
                raise InvalidRequest(f"buffered must be true or false, got {value!r}")
            checked[name] = True
            continue
        if name == "upstream_api":
            if not isinstance(value, str) or value not in UPSTREAM_APIS:
                raise InvalidRequest(
                    f"upstream_api must be one of {sorted(UPSTREAM_APIS)}, got {value!r}"
                )
            checked[name] = value
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1e7:
            raise InvalidRequest(f"{name} must be a positive number of seconds, got {value!r}")
        checked[name] = float(value)
    return checked


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
        _check_param_value(name, value)
    return dict(params)


def check_number(name: str, value: Any, low: float, high: float) -> None:
    """Raise :class:`InvalidRequest` unless ``value`` is a finite number from low to high."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number from {low} to {high}, got {value!r}")


def check_integer(name: str, value: Any, low: int = 1) -> None:
    """Raise :class:`InvalidRequest` unless ``value`` is an integer of at least ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidRequest(f"{name} must be an integer of at least {low}, got {value!r}")


def _check_param_value(name: str, value: Any) -> None:
    match name:
        case "temperature":
            check_number(name, value, 0, 2)
        case "top_p":
            check_number(name, value, 0, 1)
        case "presence_penalty" | "frequency_penalty":
            check_number(name, value, -2, 2)
        case "n" | "max_tokens" | "max_completion_tokens":
            check_integer(name, value)
        case "seed" if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"seed must be an integer, got {value!r}")
        case "stop" if not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(s, str) for s in value))
        ):
            raise InvalidRequest("stop must be a string or a list of strings")
        case "tools" if not (isinstance(value, list) and all(isinstance(t, dict) for t in value)):
            raise InvalidRequest("tools must be a list of tool objects")
        case "extra_body" | "metadata" | "response_format" if not isinstance(value, dict):
            raise InvalidRequest(f"{name} must be an object")
        case "extra_body":
            check_extra_body(value)
        case _:
            pass


def check_extra_body(
    extra_body: Mapping[str, Any],
    *,
    reserved: frozenset[str] = RESERVED,
    params: frozenset[str] = PARAMS,
) -> None:
    """``extra_body`` is merged into the upstream request last: it must not carry what streamq
    sets (``model``, ``stream``...) nor a parameter that would then escape validation."""
    for name in extra_body:
        if name in reserved:
            raise InvalidRequest(
                f"extra_body cannot set {name!r}: streamq or the worker sets it"
                + (" (pass model= to choose the model)" if name == "model" else "")
            )
        if name in params:
            raise InvalidRequest(f"extra_body cannot set {name!r}: pass it as its own parameter")
