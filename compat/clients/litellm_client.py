"""The ``litellm`` client library against the door: ``litellm.completion`` with and without
``stream``, through its OpenAI-compatible route (``openai/<model>`` and ``api_base``). Run by
.venv-compat's python; protocol: driver.py.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import

import litellm
import openai
from driver import Outcome, Request, failure, outcome, serve


def arguments(request: Request) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": f"openai/{request['model']}",
        "api_base": request["base_url"],
        "api_key": request["api_key"],
        "messages": request["messages"],
        "max_retries": 0,
    }
    for name in ("tools", "tool_choice", "n"):
        if request.get(name):
            kwargs[name] = request[name]
    if request.get("include_usage"):
        kwargs["stream_options"] = {"include_usage": True}
    return kwargs


def usage_of(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def add_calls(calls: list[dict[str, str]], deltas: list[Any]) -> None:
    """Add streamed tool-call pieces to ``calls`` (by their index)."""
    for delta in deltas:
        calls.extend({"name": "", "arguments": ""} for _ in range(delta.index + 1 - len(calls)))
        calls[delta.index]["name"] += delta.function.name or ""
        calls[delta.index]["arguments"] += delta.function.arguments or ""


def completion_stream(request: Request) -> Outcome:
    texts: list[str] = []
    calls: list[dict[str, str]] = []
    usage = finish = None
    try:
        for chunk in litellm.completion(stream=True, **arguments(request)):
            usage = usage_of(getattr(chunk, "usage", None)) or usage
            for choice in chunk.choices:
                texts.extend([""] * (choice.index + 1 - len(texts)))
                texts[choice.index] += choice.delta.content or ""
                if choice.index == 0:
                    add_calls(calls, choice.delta.tool_calls or [])
                    finish = choice.finish_reason or finish
    except openai.APIError as exc:
        return failure(exc, texts or [""])
    return outcome(texts=texts or [""], tool_calls=calls, usage=usage, finish_reason=finish)


def completion(request: Request) -> Outcome:
    try:
        response: Any = litellm.completion(**arguments(request))
    except openai.APIError as exc:
        return failure(exc)
    first = response.choices[0]
    return outcome(
        texts=[choice.message.content or "" for choice in response.choices],
        tool_calls=[
            {"name": call.function.name, "arguments": call.function.arguments}
            for call in first.message.tool_calls or []
        ],
        usage=usage_of(getattr(response, "usage", None)),
        finish_reason=first.finish_reason,
    )


if __name__ == "__main__":
    serve({"completion-stream": completion_stream, "completion": completion})
