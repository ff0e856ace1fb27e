"""Bodies nested too deep for the interpreter, or just deeper than any chat request: a JSON 400
on every door that parses JSON, and no traceback in the logs."""

from __future__ import annotations

import logging

import httpx2
import openai
import pytest
from openai import AsyncOpenAI

from streamq.gateway.body import MAX_DEPTH
from tests.harness.gateway import TOKEN_A, GatewayThread

PATHS = ["/v1/jobs", "/v1/chat/completions"]
MESSAGES = b'{"messages":[{"role":"user","content":"x"}],'


def nested(levels: int) -> bytes:
    """A chat body whose ``extra_body`` makes it ``levels`` deep in all."""
    inner = levels - 1  # the body's own object is the first level
    return MESSAGES + b'"extra_body":' + b'{"a":' * inner + b"1" + b"}" * inner + b"}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(nested(100_000), id="100k-objects"),
        pytest.param(b"[" * 900_000, id="900k-arrays"),
        pytest.param(nested(900), id="900-below-the-recursion-limit"),
        pytest.param(nested(MAX_DEPTH + 1), id="one-past-the-limit"),
    ],
)
async def test_too_deep_is_a_400_without_traceback(
    client: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    """The decoder's RecursionError and the gateway's own bound both answer 400 in the usual
    error shape; nothing is enqueued, nothing is logged as an error."""
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "json_too_deep"
    assert error["type"] == "invalid_request_error"
    assert str(MAX_DEPTH) in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_the_limit_itself_is_accepted(client: httpx2.AsyncClient) -> None:
    """A body exactly MAX_DEPTH deep is a valid job."""
    response = await client.post(
        "/v1/jobs", content=nested(MAX_DEPTH), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text


async def test_the_sdk_sees_a_bad_request(gateway: GatewayThread) -> None:
    """Through the openai SDK, a too deep extra_body is its BadRequestError, not a server error."""
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(MAX_DEPTH):
        inner["a"] = inner = {}
    async with AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN_A, max_retries=0) as sdk:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk.chat.completions.create(
                model="sim-model",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"deep": deep},
            )
    assert raised.value.code == "json_too_deep"
