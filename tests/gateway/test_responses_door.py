"""/v1/responses driven by the real `openai` SDK pointed at the gateway, with a real worker and
the simulator behind it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel
from redis.asyncio import Redis

from streamq import Settings
from streamq.core.keys import Keys
from streamq.dev.simulator import simulated_json
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_B, GatewayThread
from tests.harness.waiting import poll_until

pytestmark = pytest.mark.usefixtures("worker")

MODEL = "gpt-4o-mini"
INSTRUCTIONS = "Be kind."
PROMPT = "Stream me through the responses door"
# Slow enough to be caught mid-answer, whatever the machine.
SLOW = {"simulator": {"tokens_per_second": 20, "reply_tokens": 60}}
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def sdk_b(gateway: GatewayThread) -> AsyncIterator[AsyncOpenAI]:
    """The openai SDK as tenant B."""
    async with AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN_B, max_retries=0) as client:
        yield client


async def chat_answer(sdk: AsyncOpenAI) -> str:
    """The simulator's answer to the same prompt through the chat door."""
    completion = await sdk.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": PROMPT},
        ],
    )
    return completion.choices[0].message.content or ""


async def stored_request(redis: Redis, settings: Settings, response_id: str) -> dict[str, Any]:
    """The request the response's job carries, as stored."""
    raw = await redis.get(Keys(settings.key_prefix).request(response_id.removeprefix("resp_")))
    assert raw is not None
    body: dict[str, Any] = json.loads(raw)
    return body


async def test_streamed_response_is_the_simulators_text(sdk: AsyncOpenAI) -> None:
    """stream=True: Responses events numbered from 0 without a gap, whose deltas join into the
    chat door's answer to the same prompt, ending with response.completed."""
    stream = await sdk.responses.create(
        model=MODEL, instructions=INSTRUCTIONS, input=PROMPT, stream=True
    )
    events = [event async for event in stream]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == await chat_answer(sdk)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.status == "completed"
    assert last.response.output_text == text
    assert last.response.id.startswith("resp_")
    assert last.response.instructions == INSTRUCTIONS


async def test_stream_helper_and_non_streamed_create_agree(sdk: AsyncOpenAI) -> None:
    """The SDK's responses.stream() helper's final response, and a non-streamed create, hold
    the same text; the stored response reads back the same."""
    async with sdk.responses.stream(model=MODEL, instructions=INSTRUCTIONS, input=PROMPT) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    created = await sdk.responses.create(model=MODEL, instructions=INSTRUCTIONS, input=PROMPT)
    assert created.status == "completed"
    assert created.output_text == final.output_text == await chat_answer(sdk)
    assert created.usage is not None
    assert created.usage.output_tokens > 0
    again = await sdk.responses.retrieve(created.id)
    assert again.output_text == created.output_text
    assert again.status == "completed"


class Weather(BaseModel):
    city: str
    degrees: int


async def test_parse_sends_the_json_schema(
    sdk: AsyncOpenAI, redis: Redis, settings: Settings
) -> None:
    """responses.parse(text_format=...) reaches the job as a json_schema text format, echoed in
    the Response, and the simulator's JSON for that schema parses into the model."""
    parsed = await sdk.responses.parse(model=MODEL, input=PROMPT, text_format=Weather)
    request = await stored_request(redis, settings, parsed.id)
    text_format = request["params"]["text"]["format"]
    assert text_format["type"] == "json_schema"
    assert parsed.text is not None
    assert parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"
    answer = simulated_json([{"role": "user", "content": PROMPT}], text_format["schema"])
    assert parsed.output_parsed == Weather.model_validate_json(answer)


async def test_background_response_resumes_after_a_disconnect(
    sdk: AsyncOpenAI, settings: Settings, gateway_config: GatewayConfig
) -> None:
    """background=True answers queued at once; its events, read in two connections (the second
    from another gateway, starting_after the last sequence number seen), join into the whole
    text, none twice."""
    response = await sdk.responses.create(
        model=MODEL, input=PROMPT, background=True, extra_body=SLOW
    )
    assert response.status == "queued"
    assert response.background is True
    first: list[Any] = []
    stream = await sdk.responses.retrieve(response.id, stream=True)
    async for event in stream:
        first.append(event)
        if sum(e.type == "response.output_text.delta" for e in first) == 3:
            break
    await stream.close()
    with GatewayThread(create_app(settings, gateway_config)) as replica:
        elsewhere = sdk.with_options(base_url=f"{replica.url}/v1")
        resumed = await elsewhere.responses.retrieve(
            response.id, stream=True, starting_after=first[-1].sequence_number
        )
        rest = [event async for event in resumed]
    numbers = [e.sequence_number for e in first + rest]
    assert numbers == list(range(len(numbers)))
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert rest[-1].type == "response.completed"
    assert text == rest[-1].response.output_text
    assert text == (await sdk.responses.retrieve(response.id)).output_text


async def test_cancel_stops_a_running_response(sdk: AsyncOpenAI) -> None:
    """cancel: the Response comes back cancelled once the worker stopped it; a queued one too."""
    response = await sdk.responses.create(
        model=MODEL, input=PROMPT, background=True, extra_body=SLOW
    )

    async def answering() -> bool:
        now = await sdk.responses.retrieve(response.id)
        return now.status == "in_progress" and bool(now.output)

    await poll_until(answering, 60, "the response to start answering")
    began = time.monotonic()
    cancelled = await sdk.responses.cancel(response.id)
    print(f"cancel took {time.monotonic() - began:.3f}s")
    assert cancelled.status == "cancelled"
    assert (await sdk.responses.retrieve(response.id)).status == "cancelled"
    again = await sdk.responses.cancel(response.id)  # ended: unchanged
    assert again.status == "cancelled"


async def test_function_call_round_trip(sdk: AsyncOpenAI) -> None:
    """A forced function call, then its output in the next turn by previous_response_id: the
    answer arrives, built on the call."""
    first = await sdk.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    json.loads(calls[0].arguments)
    second = await sdk.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER_TOOL],
    )
    assert second.status == "completed"
    assert second.output_text
    assert second.previous_response_id == first.id


async def test_previous_response_id_carries_the_conversation(
    sdk: AsyncOpenAI, redis: Redis, settings: Settings
) -> None:
    """Turn 2 names turn 1: its job carries turn 1's input and answer before its own input."""
    first = await sdk.responses.create(model=MODEL, input="My name is Ada.")
    second = await sdk.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id
    )
    assert second.status == "completed"
    items = (await stored_request(redis, settings, second.id))["input"]
    assert items[0]["content"] == "My name is Ada."
    assert items[1]["role"] == "assistant"
    assert items[1]["content"][0]["text"] == first.output_text
    assert items[2]["content"] == "What is my name?"
    third = await sdk.responses.create(
        model=MODEL, input="And again?", previous_response_id=second.id
    )
    items = (await stored_request(redis, settings, third.id))["input"]
    assert [item["role"] for item in items] == ["user", "assistant"] * 2 + ["user"]


async def test_item_references_are_resolved_within_the_tenant(
    sdk: AsyncOpenAI, sdk_b: AsyncOpenAI, redis: Redis, settings: Settings
) -> None:
    """An item_reference (as the Vercel AI SDK sends earlier output) becomes the item it names:
    the job carries turn 1's assistant text, or its input item; another tenant's reference, or
    a malformed id, is a 400 item_not_found."""
    first = await sdk.responses.create(model=MODEL, input="My name is Ada.")
    said = first.output[0].id
    assert said is not None
    second = await sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "My name is Ada."},
            {"type": "item_reference", "id": said},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert second.status == "completed"
    items = (await stored_request(redis, settings, second.id))["input"]
    assert [item["type"] for item in items] == ["message"] * 3
    assert items[1]["role"] == "assistant"
    assert items[1]["content"][0]["text"] == first.output_text
    asked = (await sdk.responses.input_items.list(first.id)).data[0].id
    assert asked is not None
    assert asked != said
    third = await sdk.responses.create(model=MODEL, input=[{"type": "item_reference", "id": asked}])
    items = (await stored_request(redis, settings, third.id))["input"]
    assert items == [{"type": "message", "role": "user", "content": "My name is Ada."}]
    for client, wanted in ((sdk_b, said), (sdk_b, asked), (sdk, "msg_nope"), (sdk, "msg_x_y")):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                model=MODEL, input=[{"type": "item_reference", "id": wanted}]
            )
        assert refused.value.code == "item_not_found"
        assert wanted in refused.value.message


async def test_another_tenant_sees_nothing(sdk: AsyncOpenAI, sdk_b: AsyncOpenAI) -> None:
    """Every read of another tenant's response is a 404, and naming it as the previous
    response is refused as an unknown one."""
    response = await sdk.responses.create(model=MODEL, input=PROMPT)
    with pytest.raises(openai.NotFoundError):
        await sdk_b.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk_b.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk_b.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk_b.responses.input_items.list(response.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk_b.responses.create(model=MODEL, input="Hello?", previous_response_id=response.id)
    assert refused.value.code == "previous_response_not_found"
    assert (await sdk.responses.retrieve(response.id)).status == "completed"


async def test_store_false_leaves_nothing_to_read(sdk: AsyncOpenAI) -> None:
    """store=False: the answer, then a 404 for every read; background needs store."""
    response = await sdk.responses.create(model=MODEL, input=PROMPT, store=False)
    assert response.status == "completed"
    assert response.output_text
    assert response.model_dump()["store"] is False
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.input_items.list(response.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.responses.create(model=MODEL, input="Hi", previous_response_id=response.id)
    assert refused.value.code == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError, match="store"):
        await sdk.responses.create(model=MODEL, input=PROMPT, store=False, background=True)


def message_texts(page: Any) -> list[str]:
    """The text of each message of a page of input items."""
    return [item.model_dump()["content"][0]["text"] for item in page.data]


async def test_input_items_pages(sdk: AsyncOpenAI) -> None:
    """input_items: this turn's items with ids, newest first by default, limit and after."""
    sent = ["one", "two", "three"]
    response = await sdk.responses.create(
        model=MODEL, input=[{"role": "user", "content": text} for text in sent]
    )
    newest = await sdk.responses.input_items.list(response.id)
    assert message_texts(newest) == sent[::-1]
    page = await sdk.responses.input_items.list(response.id, order="asc", limit=2)
    assert message_texts(page) == sent[:2]
    assert page.has_more
    rest = await sdk.responses.input_items.list(
        response.id, order="asc", limit=2, after=page.data[-1].id
    )
    assert message_texts(rest) == sent[2:]
    assert not rest.has_more
    assert len({item.id for item in newest.data}) == 3


async def test_delete_forgets_the_response(sdk: AsyncOpenAI) -> None:
    """delete: response.deleted, then 404 for reads and for a second delete."""
    response = await sdk.responses.create(model=MODEL, input=PROMPT)
    deleted = await sdk.responses.with_raw_response.delete(response.id)
    assert deleted.http_request.method == "DELETE"
    body = json.loads(deleted.content)
    assert body == {"id": response.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(response.id)


async def test_a_failure_before_output_is_an_http_error(sdk: AsyncOpenAI) -> None:
    """An upstream 400 before any output: BadRequestError, streamed or not."""
    fault = {"simulator": {"fault": "http_400"}}
    with pytest.raises(openai.BadRequestError):
        await sdk.responses.create(model=MODEL, input=PROMPT, extra_body=fault)
    with pytest.raises(openai.BadRequestError):
        await sdk.responses.create(model=MODEL, input=PROMPT, stream=True, extra_body=fault)
