"""The fast chunk path and the SDK path give identical events on every simulator scenario."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI

from streamq.core.events import Event, Meta
from streamq.core.request import ChatRequest
from streamq.dev.simulator import SimulatorThread
from streamq.worker.upstream import error_event, stream_chat

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

SCENARIOS: dict[str, dict[str, Any]] = {
    "text": {},
    "n=2": {"n": 2},
    "max_tokens": {"max_tokens": 5},
    "seed": {"seed": 42},
    "tools": {"tools": TOOLS, "tool_choice": "required"},
    "two tools": {"tools": TOOLS, "extra_body": {"simulator": {"mode": "tools", "tool_calls": 2}}},
    "reasoning": {"extra_body": {"simulator": {"mode": "reasoning"}}},
    "refusal": {"extra_body": {"simulator": {"mode": "refusal"}}},
    "no role chunk": {"extra_body": {"simulator": {"role_chunk": False}}},
    "usage on finish": {"extra_body": {"simulator": {"usage_in_last_choice_chunk": True}}},
    "no [DONE]": {"extra_body": {"simulator": {"fault": "no_done"}}},
    "silent end": {"extra_body": {"simulator": {"fault": "silent_end", "after": 3}}},
    "disconnect": {"extra_body": {"simulator": {"fault": "disconnect", "after": 3}}},
    "bad json": {"extra_body": {"simulator": {"fault": "bad_json", "after": 2}}},
    "bad utf-8": {"extra_body": {"simulator": {"fault": "bad_utf8", "after": 2}}},
    "429": {"extra_body": {"simulator": {"fault": "http_429"}}},
    "500": {"extra_body": {"simulator": {"fault": "http_500"}}},
    "400": {"extra_body": {"simulator": {"fault": "http_400"}}},
    "401": {"extra_body": {"simulator": {"fault": "http_401"}}},
}


async def run(base_url: str, params: dict[str, Any], fast: bool) -> list[Any]:
    """The events of one request, then the error it ended with (code, message, retryable)."""
    request = ChatRequest([{"role": "user", "content": "compare"}], params=params)
    client = AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
    seen: list[Event | tuple[str, str, bool]] = []
    async with client:
        try:
            async for event in stream_chat(client, request, "sim", fast=fast):
                # Each response has an id and time of its own; the rest must match.
                seen.append(
                    replace(event, id=None, created=None) if isinstance(event, Meta) else event
                )
        except Exception as exc:
            error = error_event(exc)
            seen.append((error.code, error.message, error.retryable))
    return seen


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
async def test_both_parsers_give_the_same_events(simulator: SimulatorThread, scenario: str) -> None:
    """Content, tool calls, reasoning, usage, errors and faults come out the same either way."""
    params = SCENARIOS[scenario]
    fast = await run(simulator.base_url, params, fast=True)
    sdk = await run(simulator.base_url, params, fast=False)
    assert fast == sdk
    assert fast  # every scenario yields something: events or an error


def test_error_messages_mask_the_api_key_but_not_a_placeholder() -> None:
    """A key quoted by the server is masked; a one-letter placeholder key garbles nothing."""
    request = httpx2.Request("POST", "http://upstream.test/v1/chat/completions")
    refused = openai.APIConnectionError(message="key sk-live-123456: max_tokens", request=request)
    assert "sk-live" not in error_event(refused, secret="sk-live-123456").message
    assert "max_tokens" in error_event(refused, secret="x").message
