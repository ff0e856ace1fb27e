"""``langchain-openai``'s ChatOpenAI against the door: ``stream``, ``astream`` and ``invoke``,
with tools through ``bind_tools``; the ``responses-*`` entries set ``use_responses_api=True``
(``/v1/responses``). Run by .venv-compat's python; protocol: driver.py.

ChatOpenAI.invoke returns one message, so ``n > 1`` goes through ``generate``, which keeps
every choice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
from driver import Outcome, Request, failure, outcome, serve
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

# One event loop for every astream call, as in an app: ChatOpenAI shares its async HTTP client
# between instances, and that client's connections belong to the loop that opened them.
LOOP = asyncio.new_event_loop()


def chat_model(request: Request) -> ChatOpenAI:
    if request["entry"].startswith("responses-"):  # the Responses API has no `n`
        return ChatOpenAI(
            model=request["model"],
            base_url=request["base_url"],
            api_key=request["api_key"],
            max_retries=0,
            use_responses_api=True,
        )
    return ChatOpenAI(
        model=request["model"],
        base_url=request["base_url"],
        api_key=request["api_key"],
        max_retries=0,
        n=request.get("n") or 1,
        stream_usage=bool(request.get("include_usage")),
    )


def runnable(request: Request) -> Runnable[LanguageModelInput, BaseMessage]:
    model = chat_model(request)
    if request.get("tools"):
        return model.bind_tools(request["tools"], tool_choice=request.get("tool_choice"))
    return model


def message_outcome(message: AIMessage) -> Outcome:
    usage = message.usage_metadata
    return outcome(
        texts=[message.text],
        tool_calls=[
            {"name": call["name"], "arguments": json.dumps(call["args"])}
            for call in message.tool_calls
        ],
        usage=None
        if usage is None
        else {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["total_tokens"],
        },
        finish_reason=finish_reason(message),
    )


def finish_reason(message: AIMessage) -> str | None:
    """The chat API's finish reason, or what a Responses answer's status and output say."""
    metadata = message.response_metadata
    if "finish_reason" in metadata or "status" not in metadata:
        return metadata.get("finish_reason")
    if metadata["status"] == "incomplete":
        return "length"
    return "tool_calls" if message.tool_calls else "stop"


def stream(request: Request) -> Outcome:
    total: AIMessageChunk | None = None
    try:
        for chunk in runnable(request).stream(request["messages"]):
            assert isinstance(chunk, AIMessageChunk)
            total = chunk if total is None else total + chunk
    except (openai.APIError, ValueError) as exc:  # ValueError: a response.failed event
        return failure(exc, [total.text if total else ""])
    assert total is not None
    return message_outcome(total)


def astream(request: Request) -> Outcome:
    async def main() -> Outcome:
        total: AIMessageChunk | None = None
        try:
            async for chunk in runnable(request).astream(request["messages"]):
                assert isinstance(chunk, AIMessageChunk)
                total = chunk if total is None else total + chunk
        except (openai.APIError, ValueError) as exc:  # ValueError: a response.failed event
            return failure(exc, [total.text if total else ""])
        assert total is not None
        return message_outcome(total)

    return LOOP.run_until_complete(main())


def invoke(request: Request) -> Outcome:
    try:
        if (request.get("n") or 1) > 1:
            return generate(request)
        message = runnable(request).invoke(request["messages"])
    except (openai.APIError, ValueError) as exc:  # ValueError: a response.failed event
        return failure(exc)
    assert isinstance(message, AIMessage)
    return message_outcome(message)


def generate(request: Request) -> Outcome:
    result = chat_model(request).generate([convert_to_messages(request["messages"])])
    [generations] = result.generations
    first: Any = generations[0]
    found = message_outcome(first.message)
    return {**found, "texts": [generation.text for generation in generations]}


if __name__ == "__main__":
    serve(
        {
            "stream": stream,
            "astream": astream,
            "invoke": invoke,
            "responses-stream": stream,
            "responses-invoke": invoke,
        }
    )
