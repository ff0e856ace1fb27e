"""Per-tenant limits over real HTTP: a tenant over its stream limit or its request rate gets a
429 with Retry-After, in the usual error shape, while another tenant stays served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI

from streamq import Settings
from streamq.core.exceptions import ConfigError
from streamq.dev.simulator import simulated_text
from streamq.gateway import GatewayConfig, create_app
from tests.gateway.sse import frames
from tests.harness.gateway import TOKEN_A, TOKEN_B, TOKENS, GatewayThread
from tests.harness.waiting import poll_until

MAX_STREAMS = 3
BURST = 5
MESSAGES: list[Any] = [{"role": "user", "content": "Are the others still served?"}]
# Long enough to outlast the test: tenant A's streams stay open until it closes them.
SLOW: dict[str, Any] = {"extra_body": {"simulator": {"tokens_per_second": 0.5}}}


@pytest.fixture
def gateway_config() -> GatewayConfig:
    """A small stream limit, no rate limit (the rate test sets its own)."""
    return GatewayConfig(tokens=TOKENS, keepalive=0.2, max_streams=MAX_STREAMS, rate_limit=None)


@pytest.fixture
def rate_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """One request a second per tenant, in bursts of BURST."""
    config = GatewayConfig(tokens=TOKENS, rate_limit=1, rate_burst=BURST)
    with GatewayThread(create_app(settings, config)) as server:
        yield server


def sdk(gateway: GatewayThread, token: str) -> AsyncOpenAI:
    """The openai SDK as a tenant, without its own retries (so a 429 reaches the test)."""
    return AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0)


def assert_too_many(response: httpx2.Response, code: str) -> None:
    """A 429 in the gateway's error shape, with a Retry-After of whole seconds."""
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "rate_limit_error"


@contextlib.asynccontextmanager
async def open_stream(client: httpx2.AsyncClient, url: str) -> AsyncIterator[httpx2.Response]:
    """An event stream, open (its first frame read) for as long as the block runs."""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200, await response.aread()
        events = frames(response)  # kept: finalising the generator would close the response
        await anext(events)
        yield response


@pytest.mark.usefixtures("worker")
async def test_a_tenant_at_its_stream_limit_gets_429_while_another_is_served(
    gateway: GatewayThread, client: httpx2.AsyncClient, client_b: httpx2.AsyncClient
) -> None:
    """Tenant A holds MAX_STREAMS event streams: its next stream, on either door, is a 429;
    tenant B meanwhile enqueues, follows and completes a job through the SDK. A closed stream
    frees its slot."""
    created = await client.post("/v1/jobs", json={"messages": MESSAGES, **SLOW})
    assert created.status_code == 202
    events_url = created.json()["events_url"]
    async with contextlib.AsyncExitStack() as held:
        streams = [
            await held.enter_async_context(open_stream(client, events_url))
            for _ in range(MAX_STREAMS)
        ]
        assert_too_many(await client.get(events_url), "too_many_streams")
        async with sdk(gateway, TOKEN_A) as greedy:
            with pytest.raises(openai.RateLimitError) as refused:
                await greedy.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert refused.value.code == "too_many_streams"
        assert not (await client.get(created.json()["url"])).is_error  # not a stream: served

        async with sdk(gateway, TOKEN_B) as other:
            stream = await other.chat.completions.create(
                model="sim-model", messages=MESSAGES, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == simulated_text(MESSAGES)
        job = await client_b.post("/v1/jobs", json={"messages": MESSAGES})
        assert job.status_code == 202
        async with open_stream(client_b, job.json()["events_url"]):
            pass

        await streams[0].aclose()
        await until_accepted(client, events_url)
    assert (await client.delete(created.json()["url"])).status_code in (200, 202)


async def until_accepted(client: httpx2.AsyncClient, url: str) -> None:
    """Wait for the gateway to notice a closed stream: its slot serves the next one."""

    async def accepted() -> bool:
        async with client.stream("GET", url) as response:
            if response.status_code == 200:
                return True
            await response.aread()
            assert_too_many(response, "too_many_streams")
            return False

    await poll_until(accepted, 30, "the gateway to free the slot", interval=0.05)


async def test_a_tenant_over_its_rate_gets_429_while_another_is_served(
    rate_gateway: GatewayThread,
) -> None:
    """Tenant A fires requests as fast as it can: after its burst they are 429s with
    Retry-After. Tenant B's requests, sent meanwhile, are all answered."""
    url = rate_gateway.url
    a = httpx2.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN_A}"})
    b = httpx2.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN_B}"})

    async def polite() -> None:
        created = await b.post("/v1/jobs", json={"messages": MESSAGES})
        assert created.status_code == 202, created.text
        assert (await b.get(created.json()["url"])).status_code == 200

    async with a, b, httpx2.AsyncClient(base_url=url) as nobody:
        flood = asyncio.gather(*[a.get("/v1/jobs/unknown") for _ in range(BURST * 4)])
        greedy, _ = await asyncio.gather(flood, polite())
        refused = [r for r in greedy if r.status_code == 429]
        assert refused, [r.status_code for r in greedy]
        assert sum(r.status_code == 404 for r in greedy) >= BURST
        for response in refused:
            assert_too_many(response, "rate_limit_exceeded")
        await polite()
        async with sdk(rate_gateway, TOKEN_A) as greedy_sdk:
            with pytest.raises(openai.RateLimitError):
                await greedy_sdk.chat.completions.create(model="m", messages=MESSAGES)
        assert (await nobody.get("/v1/jobs/unknown")).status_code == 401


def test_limits_come_from_the_environment() -> None:
    """STREAMQ_GATEWAY_* set the timeouts and limits; `off` lifts a limit; zero is refused."""
    config = GatewayConfig.from_env(
        {
            "STREAMQ_GATEWAY_HEADER_TIMEOUT": "5",
            "STREAMQ_GATEWAY_BODY_TIMEOUT": "12.5",
            "STREAMQ_GATEWAY_MAX_STREAMS": "off",
            "STREAMQ_GATEWAY_RATE_LIMIT": "2.5",
            "STREAMQ_GATEWAY_RATE_BURST": "7",
        },
        allow_anonymous=True,
    )
    assert (config.header_timeout, config.body_timeout) == (5.0, 12.5)
    assert (config.max_streams, config.rate_limit, config.rate_burst) == (None, 2.5, 7)
    defaults = GatewayConfig.from_env({}, allow_anonymous=True)
    assert (defaults.header_timeout, defaults.body_timeout) == (10.0, 30.0)
    assert (defaults.max_streams, defaults.rate_limit, defaults.rate_burst) == (100, 50.0, 100)
    with pytest.raises(ConfigError, match="STREAMQ_GATEWAY_MAX_STREAMS"):
        GatewayConfig.from_env({"STREAMQ_GATEWAY_MAX_STREAMS": "0"}, allow_anonymous=True)
    with pytest.raises(ConfigError, match="rate_burst"):
        GatewayConfig(rate_burst=0)
