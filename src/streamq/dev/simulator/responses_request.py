"""Reading a Responses API request, and restating it as the chat request that plans its reply.

``instructions`` becomes a system message, a string ``input`` a user message, and input items
the chat messages they stand for (``input_text``/``output_text`` parts as ``text`` parts,
``function_call`` as an assistant ``tool_calls`` message, ``function_call_output`` as a
``tool`` message), and ``text.format`` as ``response_format``, so a Responses request gets
the reply of the equivalent chat request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from streamq.dev.simulator.errors import HTTPFailure
from streamq.dev.simulator.request import load_body

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text")


def parse_responses_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object, checked to have a model and a string or list ``input``."""
    body = load_body(raw)
    for name in ("model", "input"):
        if name not in body:
            message = f"Missing required parameter: '{name}'."
            raise HTTPFailure(400, message, param=name, code="missing_required_parameter")
    if not isinstance(body["model"], str) or not body["model"]:
        raise HTTPFailure(400, "Invalid value for 'model'.", param="model")
    items = body["input"]
    if not isinstance(items, str | list) or not items:
        raise HTTPFailure(400, "Invalid value for 'input'.", param="input")
    if isinstance(items, list) and not all(isinstance(item, dict) for item in items):
        raise HTTPFailure(400, "Each input item must be an object.", param="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise HTTPFailure(400, "'instructions' must be a string.", param="instructions")
    return body


def chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat completion request equivalent to the Responses request ``body``."""
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    tools = [_chat_tool(tool) for tool in body.get("tools") or () if _is_function(tool)]
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if _is_function(choice):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif isinstance(choice, str):
        chat["tool_choice"] = choice
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    for name in ("simulator", "seed"):
        if name in body:
            chat[name] = body[name]
    return chat


def _response_format(text: object) -> dict[str, Any] | None:
    """The chat ``response_format`` for the Responses ``text.format``: ``json_schema`` with its
    name, schema and strictness nested under ``json_schema``, or ``json_object``."""
    output_format = text.get("format") if isinstance(text, dict) else None
    if not isinstance(output_format, dict):
        return None
    kind = output_format.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        return None
    fields = ("name", "schema", "strict", "description")
    json_schema = {name: output_format[name] for name in fields if name in output_format}
    return {"type": "json_schema", "json_schema": json_schema}


def wants_reasoning(body: Mapping[str, Any]) -> bool:
    """Whether the request asks for reasoning: a ``reasoning`` object whose effort isn't none."""
    reasoning = body.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("effort") != "none"


def _is_function(value: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and value.get("type") == "function"


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str):
        raise HTTPFailure(400, "Each function tool needs a name.", param="tools")
    function = {"name": tool["name"]}
    if "parameters" in tool:
        function["parameters"] = tool["parameters"]
    return {"type": "function", "function": function}


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body["input"]
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _content(item.get("content"))})
        elif kind == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            call = {"id": item.get("call_id"), "type": "function", "function": function}
            last = messages[-1] if messages else {}
            if last.get("role") == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls share one chat message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = _content(item.get("output"))
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        elif kind != "reasoning":  # reasoning passed back carries nothing the reply depends on
            messages.append(dict(item))
    return messages


def _content(content: object) -> object:
    """Message content with the Responses text parts restated as chat ``text`` parts."""
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": part.get("text")}
        if isinstance(part, dict) and part.get("type") in _TEXT_PARTS
        else part
        for part in content
    ]
