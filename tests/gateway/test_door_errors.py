"""A job that fails before any text reaches the door's client as OpenAI answers a failed
request: the HTTP status and a JSON error body, streamed or not, so the SDKs raise their own
status errors (NotFoundError, RateLimitError...) and routers can decide retries."""

from __future__ import annotations

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.gateway.sse import chunks_of, door_stream
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

pytestmark = pytest.mark.usefixtures("worker")

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Fail, please."}]
FAILURES = [
    ("http_400", 400, openai.BadRequestError, "upstream_bad_request"),
    ("http_404", 404, openai.NotFoundError, "upstream_not_found"),
    ("http_429", 429, openai.RateLimitError, "upstream_rate_limited"),
    # The upstream refused the worker's key: a fault of the service, not of the client's key.
    ("http_401", 502, openai.InternalServerError, "upstream_unauthorized"),
    ("http_503", 502, openai.InternalServerError, "upstream_server_error"),
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One attempt per job: retryable failures (429, 5xx) end the job at once."""
    return settings.replace(max_attempts=1)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize(("fault", "status", "exception", "code"), FAILURES)
async def test_the_sdk_raises_the_status_error(
    sdk: AsyncOpenAI,
    stream: bool,
    fault: str,
    status: int,
    exception: type[openai.APIStatusError],
    code: str,
) -> None:
    """The upstream fails before any text: the SDK's own exception for the status, from create()
    itself, with streamq's error code."""
    with pytest.raises(exception) as raised:
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=stream,
            extra_body={"simulator": {"fault": fault, "retry_after": 0}},
        )
    assert raised.value.status_code == status
    assert raised.value.code == code
    assert raised.value.response.headers["x-streamq-job-id"]


async def test_the_error_body_is_openais(client: httpx2.AsyncClient) -> None:
    """Over plain HTTP: the status, and {"error": {message, type, param, code}} as JSON."""
    body = {"model": "m", "messages": MESSAGES, "simulator": {"fault": "http_404"}}
    response, frames = await door_stream(client, body)
    assert frames == []
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_not_found"
    assert "404" in error["message"]


async def test_after_the_hold_a_failure_is_an_error_frame(settings: Settings) -> None:
    """A job silent for longer than STREAMQ_GATEWAY_HEADER_HOLD gets its 200 head and
    keep-alives, so proxies keep the connection; a failure after that is an error frame."""
    config = GatewayConfig(tokens=TOKENS, keepalive=0.2, header_hold=0.2)
    body = {
        "model": "m",
        "messages": MESSAGES,
        "deadline": 1,  # the job times out while the upstream is still silent
        "simulator": {"time_to_first_token": 5},
    }
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    with GatewayThread(create_app(settings, config)) as gateway:
        async with httpx2.AsyncClient(base_url=gateway.url, headers=headers) as client:
            response, frames = await door_stream(client, body)
    assert response.status_code == 200
    assert frames[0].comments == ["keep-alive"]  # the head went out before the job ended
    [error] = chunks_of(frames)
    assert error["error"]["code"] == "timeout"
    assert all(frame.data != "[DONE]" for frame in frames)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_an_upstream_429_passes_its_retry_after_on(sdk: AsyncOpenAI, stream: bool) -> None:
    """The upstream's retry-after travels in the job's error event to the door's 429."""
    with pytest.raises(openai.RateLimitError) as raised:
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=stream,
            extra_body={"simulator": {"fault": "http_429", "retry_after": 7}},
        )
    assert raised.value.response.headers["retry-after"] == "7"
