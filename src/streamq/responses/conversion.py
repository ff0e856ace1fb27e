"""Chat Completions and Responses requests, each in the other's terms.

A job runs against whichever API its upstream speaks: a Responses job on a chat-only engine is
sent as messages, a chat job on a Responses upstream as input items. What one API has and the
other lacks is refused with :class:`InvalidRequest` rather than dropped without a word.
"""

from __future__ import annotations

from typing import Any

from streamq.core.exceptions import InvalidRequest
from streamq.core.request import ChatRequest
from streamq.responses.request import ResponsesRequest

# Same name, same meaning in both APIs.
SHARED_PARAMS = (
    "temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier",
    "prompt_cache_key", "service_tier", "extra_body",
)  # fmt: skip
# Responses parameters with no Chat Completions counterpart that only tune the upstream's own
# bookkeeping: dropped when a Responses job runs on a chat upstream.
RESPONSES_ONLY_HINTS = ("metadata", "truncation", "include", "prompt_cache_retention")
# Chat parameters the Responses API does not take.
CHAT_ONLY = (
    "n", "stop", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "audio",
    "modalities", "prediction", "web_search_options",
)  # fmt: skip
LOGPROBS = "message.output_text.logprobs"  # what `include` names to get text log probabilities
_CHAT_PART = {"input_text": "text", "output_text": "text", "refusal": "refusal"}


def for_api(request: ChatRequest | ResponsesRequest, api: str) -> ChatRequest | ResponsesRequest:
    """``request`` as the ``api`` (``"chat"`` or ``"responses"``) asks it."""
    if api == "responses" and isinstance(request, ChatRequest):
        return responses_from_chat(request)
    if api == "chat" and isinstance(request, ResponsesRequest):
        return chat_from_responses(request)
    return request


def chat_from_responses(request: ResponsesRequest) -> ChatRequest:
    """The chat request that asks a chat-only upstream what ``request`` asks."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for item in request.input:
        _append_item(messages, item)
    if not messages:
        raise InvalidRequest("input holds nothing a chat model can read")
    params = {name: request.params[name] for name in SHARED_PARAMS if name in request.params}
    given = request.params
    if "max_output_tokens" in given:
        params["max_completion_tokens"] = given["max_output_tokens"]
    if "top_logprobs" in given:
        params |= {"logprobs": True, "top_logprobs": given["top_logprobs"]}
    elif LOGPROBS in (given.get("include") or ()):
        params["logprobs"] = True
    effort = (given.get("reasoning") or {}).get("effort")
    if effort is not None:
        params["reasoning_effort"] = effort
    text = given.get("text") or {}
    if text.get("verbosity") is not None:
        params["verbosity"] = text["verbosity"]
    response_format = _chat_response_format(text.get("format"))
    if response_format is not None:
        params["response_format"] = response_format
    if "tools" in given:
        params["tools"] = [_chat_tool(tool) for tool in given["tools"]]
    if "tool_choice" in given:
        params["tool_choice"] = _chat_tool_choice(given["tool_choice"])
    if "max_tool_calls" in given:
        raise InvalidRequest("max_tool_calls needs an upstream that speaks the Responses API")
    return ChatRequest(messages, request.model, params, dict(request.options))


def responses_from_chat(request: ChatRequest) -> ResponsesRequest:
    """The Responses request that asks a Responses upstream what ``request`` asks."""
    given = request.params
    for name in CHAT_ONLY:
        if name in given and not (name == "n" and given[name] == 1):
            raise InvalidRequest(
                f"{name} is not available when the upstream speaks the Responses API"
            )
    if given.get("store"):
        raise InvalidRequest(
            "store is not available when the upstream speaks the Responses API: streamq keeps "
            "the conversation and sends store=false"
        )
    items: list[dict[str, Any]] = []
    for message in request.messages:
        items.extend(_input_items(message))
    params = {name: given[name] for name in SHARED_PARAMS if name in given}
    limit = given.get("max_completion_tokens", given.get("max_tokens"))
    if limit is not None:
        params["max_output_tokens"] = limit
    if "top_logprobs" in given:
        params["top_logprobs"] = given["top_logprobs"]
    if given.get("logprobs") or "top_logprobs" in given:
        params["include"] = [LOGPROBS]
    if given.get("reasoning_effort") is not None:
        params["reasoning"] = {"effort": given["reasoning_effort"]}
    text: dict[str, Any] = {}
    if given.get("response_format") is not None:
        text["format"] = _responses_text_format(given["response_format"])
    if given.get("verbosity") is not None:
        text["verbosity"] = given["verbosity"]
    if text:
        params["text"] = text
    if given.get("metadata") is not None:
        params["metadata"] = given["metadata"]
    if "tools" in given:
        params["tools"] = [_responses_tool(tool) for tool in given["tools"]]
    if "tool_choice" in given:
        params["tool_choice"] = _responses_tool_choice(given["tool_choice"])
    return ResponsesRequest(items, request.model, None, params, dict(request.options))


def upstream_input(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` as a Responses upstream takes them: without the ``id`` and ``status`` that
    clients echo from earlier answers (streamq's ids, which the upstream never stored)."""
    echoed = ("message", "function_call", "function_call_output")
    return [
        {k: v for k, v in item.items() if k not in ("id", "status")}
        if item.get("type") in echoed
        else item
        for item in items
    ]


# Responses → chat


def _append_item(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    kind = item["type"]
    if kind == "message":
        messages.append(_chat_message(item))
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        elif last is not None and last["role"] == "assistant":
            last["tool_calls"] = [call]
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item["output"]
        if isinstance(output, list):
            output = "".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
    elif kind == "reasoning":
        pass  # a chat upstream takes no reasoning items: the model reasons afresh
    else:
        raise InvalidRequest(
            f"input items of type {kind!r} need an upstream that speaks the Responses API"
        )


def _chat_message(item: dict[str, Any]) -> dict[str, Any]:
    role, content = item["role"], item["content"]
    if isinstance(content, str):
        return {"role": role, "content": content}
    text_only = all(part["type"] in _CHAT_PART for part in content)
    if role != "user" or text_only:  # text goes as a string: chat-only engines all read that
        text = "".join(str(part.get("text") or part.get("refusal") or "") for part in content)
        return {"role": role, "content": text}
    return {"role": role, "content": [_chat_part(part) for part in content]}


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest("an input_image without image_url needs a Responses upstream")
        image = {"url": url} | ({"detail": part["detail"]} if part.get("detail") else {})
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        fields = ("file_id", "file_data", "filename")
        return {"type": "file", "file": {name: part[name] for name in fields if name in part}}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio", {})}
    raise InvalidRequest(f"content parts of type {kind!r} need a Responses upstream")


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool["type"] != "function":
        raise InvalidRequest(
            f"tools of type {tool['type']!r} need an upstream that speaks the Responses API"
        )
    fields = ("name", "description", "parameters", "strict")
    function = {name: tool[name] for name in fields if tool.get(name) is not None}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice["type"] == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice["type"] == "allowed_tools":
        tools = choice.get("tools") or []
        if not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
            raise InvalidRequest("tool_choice allowed_tools: each tool needs a string 'name'")
        named = [_chat_tool_choice(tool) for tool in tools]
        allowed = {"mode": choice.get("mode", "auto"), "tools": named}
        return {"type": "allowed_tools", "allowed_tools": allowed}
    raise InvalidRequest(f"tool_choice of type {choice['type']!r} needs a Responses upstream")


def _chat_response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None or fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    fields = ("name", "schema", "strict", "description")
    return {"type": "json_schema", "json_schema": {k: fmt[k] for k in fields if k in fmt}}


# chat → Responses


def _input_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    role, content = message["role"], message.get("content")
    if role == "tool":
        output = content if isinstance(content, str) else _joined_text(content)
        return [
            {"type": "function_call_output", "call_id": message["tool_call_id"], "output": output}
        ]
    items: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        items.append({"type": "message", "role": role, "content": content})
    elif isinstance(content, list):
        parts = [_responses_part(part, role) for part in content]
        items.append({"type": "message", "role": role, "content": parts})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments") or "",
            }
        )
    return items


def _joined_text(content: object) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


def _responses_part(part: dict[str, Any], role: str) -> dict[str, Any]:
    kind = part["type"]
    if kind == "text":
        return {
            "type": "output_text" if role == "assistant" else "input_text",
            "text": part["text"],
        }
    if kind == "image_url":
        image = part.get("image_url")
        image = image if isinstance(image, dict) else {"url": image}
        return {
            "type": "input_image",
            "image_url": image.get("url"),
            "detail": image.get("detail", "auto"),
        }
    if kind == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part.get("refusal", "")}
    raise InvalidRequest(f"content parts of type {kind!r} cannot go to a Responses upstream")


def _responses_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(
            f"tools of type {tool.get('type')!r} cannot go to a Responses upstream"
        )
    function = tool.get("function") or {}
    fields = ("name", "description", "parameters")
    tool = {"type": "function", **{k: function[k] for k in fields if function.get(k) is not None}}
    # Responses makes a function strict unless told otherwise; chat, not.
    return tool | {"strict": bool(function.get("strict"))}


def _responses_tool_choice(choice: object) -> object:
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    if choice.get("type") == "allowed_tools":  # chat nests what Responses puts flat
        allowed = choice.get("allowed_tools") or {}
        tools = [_responses_tool_choice(tool) for tool in allowed.get("tools") or ()]
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"), "tools": tools}
    raise InvalidRequest(
        f"tool_choice of type {choice.get('type')!r} cannot go to a Responses upstream"
    )


def _responses_text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    if response_format.get("type") == "json_schema":
        return {"type": "json_schema", **(response_format.get("json_schema") or {})}
    return {"type": response_format.get("type", "text")}
