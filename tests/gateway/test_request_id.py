"""Every response has an ``x-request-id``, as OpenAI's do."""

from __future__ import annotations

import httpx2
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.harness.gateway import GatewayThread

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Which request?"}]


@pytest.mark.usefixtures("worker")
async def test_every_response_has_a_request_id(gateway: GatewayThread, sdk: AsyncOpenAI) -> None:
    """x-request-id, as OpenAI's (req_ and 32 hex digits), fresh for each request: streamed,
    not streamed, refused, and on the models list."""
    ids: list[str | None] = []
    raw = await sdk.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True
    )
    ids.append(raw.headers["x-request-id"])
    assert [chunk async for chunk in raw.parse()]
    completion = await sdk.chat.completions.create(model="m", messages=MESSAGES)
    ids.append(completion._request_id)
    models = await sdk.models.with_raw_response.list()
    ids.append(models.headers["x-request-id"])
    async with httpx2.AsyncClient(base_url=gateway.url) as anonymous:
        ids.append((await anonymous.get("/v1/models")).headers["x-request-id"])
    assert all(isinstance(i, str) and len(i) == 36 and i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)
