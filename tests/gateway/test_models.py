"""GET /v1/models and /v1/models/{id}, through the openai SDK: the models the fleet serves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

CONFIGURED = ("gpt-4o-mini", "meta-llama/Llama-3.1-8B-Instruct")


@pytest.fixture
async def configured_sdk(settings: Settings) -> AsyncIterator[AsyncOpenAI]:
    """The SDK at a gateway with STREAMQ_GATEWAY_MODELS set."""
    config = GatewayConfig(tokens=TOKENS, models=CONFIGURED)
    with GatewayThread(create_app(settings, config)) as gateway:
        async with AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN_A) as sdk:
            yield sdk


async def test_without_a_list_the_workers_default_model(
    sdk: AsyncOpenAI, settings: Settings
) -> None:
    """No STREAMQ_GATEWAY_MODELS: the one model workers use by default (OPENAI_MODEL)."""
    models = [model async for model in sdk.models.list()]
    assert [model.id for model in models] == [settings.openai_model]
    assert {(m.object, m.owned_by) for m in models} == {("model", "streamq")}
    assert (await sdk.models.retrieve(settings.openai_model)) == models[0]


async def test_the_configured_models(configured_sdk: AsyncOpenAI) -> None:
    """The configured list, in its order; names with a slash are found too."""
    page = await configured_sdk.models.list()
    assert page.object == "list"
    assert [model.id for model in page.data] == list(CONFIGURED)
    model = await configured_sdk.models.retrieve(CONFIGURED[1])
    assert model.id == CONFIGURED[1]
    assert isinstance(model.created, int)


async def test_an_unknown_model_is_not_found(configured_sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await configured_sdk.models.retrieve("gpt-2")
    assert raised.value.code == "model_not_found"


async def test_the_models_need_a_token(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="not-a-token").models.list()
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="not-a-token").models.retrieve("sim-model")


def test_the_settings_read_from_the_environment() -> None:
    """STREAMQ_GATEWAY_MODELS is comma-separated; STREAMQ_GATEWAY_HEADER_HOLD takes seconds
    or off."""
    config = GatewayConfig.from_env(
        {"STREAMQ_GATEWAY_MODELS": " a, b/c,,", "STREAMQ_GATEWAY_HEADER_HOLD": "off"},
        allow_anonymous=True,
    )
    assert config.models == ("a", "b/c")
    assert config.header_hold is None
    assert GatewayConfig.from_env({}, allow_anonymous=True).header_hold == 20
    assert (
        GatewayConfig.from_env(
            {"STREAMQ_GATEWAY_HEADER_HOLD": "2.5"}, allow_anonymous=True
        ).header_hold
        == 2.5
    )
