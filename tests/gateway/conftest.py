"""Gateway fixtures: the app under a real uvicorn server, and HTTP clients per tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from openai import AsyncOpenAI

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKEN_B, TOKENS, GatewayThread


@pytest.fixture
def gateway_config() -> GatewayConfig:
    """Two tenants, and keep-alives often enough to see in a test."""
    return GatewayConfig(tokens=TOKENS, keepalive=0.2)


@pytest.fixture
def gateway(settings: Settings, gateway_config: GatewayConfig) -> Iterator[GatewayThread]:
    """The gateway for this test's settings, on a free port (workers come from `worker`)."""
    with GatewayThread(create_app(settings, gateway_config)) as server:
        yield server


@pytest.fixture
async def client(gateway: GatewayThread) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client of tenant A."""
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    async with httpx2.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture
async def client_b(gateway: GatewayThread) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client of tenant B."""
    headers = {"Authorization": f"Bearer {TOKEN_B}"}
    async with httpx2.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture
async def sdk(gateway: GatewayThread) -> AsyncIterator[AsyncOpenAI]:
    """The openai SDK with the gateway as its base URL and tenant A's token as its key."""
    async with AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN_A, max_retries=0) as client:
        yield client
