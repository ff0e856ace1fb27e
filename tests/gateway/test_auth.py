"""Bearer tokens, tenants and isolation: job ids are not capabilities; tokens are never logged."""

from __future__ import annotations

import logging

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import ConfigError, Settings
from streamq.gateway import GatewayConfig, create_app
from streamq.gateway.config import check_token, parse_tokens
from tests.harness.gateway import TOKEN_A, TOKEN_B, TOKENS, GatewayThread
from tests.harness.redis_servers import dump_keys

MESSAGES = [{"role": "user", "content": "whose job is this?"}]
ENDPOINTS = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/some-job"),
    ("DELETE", "/v1/jobs/some-job"),
    ("GET", "/v1/jobs/some-job/events"),
    ("POST", "/v1/chat/completions"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer wrong-token-0000000000", TOKEN_A]
)
async def test_every_endpoint_needs_a_known_bearer_token(
    gateway: GatewayThread, method: str, path: str, authorization: str | None
) -> None:
    """No token, an empty one, an unknown one, or a bare token without `Bearer`: 401."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        response = await client.request(method, path, headers=headers, json={"messages": MESSAGES})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "authentication_error"


async def test_another_tenants_job_is_not_found(
    client: httpx2.AsyncClient, client_b: httpx2.AsyncClient
) -> None:
    """Tenant B knowing tenant A's job id can neither see, follow nor cancel it."""
    job_id = (await client.post("/v1/jobs", json={"messages": MESSAGES})).json()["id"]
    for method, path in [("GET", ""), ("GET", "/events"), ("DELETE", "")]:
        response = await client_b.request(method, f"/v1/jobs/{job_id}{path}")
        assert response.status_code == 404, (method, path)
    assert (await client.get(f"/v1/jobs/{job_id}")).json()["state"] == "queued"


async def test_idempotency_keys_are_per_tenant(
    client: httpx2.AsyncClient, client_b: httpx2.AsyncClient
) -> None:
    """Two tenants using the same Idempotency-Key get two different jobs."""
    key = {"Idempotency-Key": "same-key"}
    a = (await client.post("/v1/jobs", json={"messages": MESSAGES}, headers=key)).json()["id"]
    b = (await client_b.post("/v1/jobs", json={"messages": MESSAGES}, headers=key)).json()["id"]
    assert a != b
    assert (await client_b.get(f"/v1/jobs/{b}")).status_code == 200
    assert (await client_b.get(f"/v1/jobs/{a}")).status_code == 404


async def test_tokens_are_never_logged_nor_stored(
    gateway: GatewayThread, redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """After requests with good and bad tokens, no token appears in any log record or key."""
    caplog.set_level(logging.DEBUG)
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        for token in (TOKEN_A, TOKEN_B, "bad-token-0123456789abcdef"):
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k"}
            response = await client.post("/v1/jobs", json={"messages": MESSAGES}, headers=headers)
            await client.get(f"/v1/jobs/{response.json().get('id', 'x')}", headers=headers)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "enqueued job" in logged  # the logs were captured
    assert "401" in logged
    stored = await dump_keys(redis, f"{settings.key_prefix}*")
    assert "tenant-a" in stored  # the owner is stored, by tenant name
    for token in (TOKEN_A, TOKEN_B, "bad-token-0123456789abcdef"):
        assert token not in logged
        assert token not in stored


def test_tokens_come_from_the_environment() -> None:
    """STREAMQ_GATEWAY_TOKENS is TOKEN=TENANT pairs; weak tokens and bad tenants are refused."""
    config = GatewayConfig.from_env(
        {
            "STREAMQ_GATEWAY_TOKENS": f" {TOKEN_A}=tenant-a , {TOKEN_B}=tenant-b ",
            "STREAMQ_GATEWAY_CORS_ORIGINS": "https://app.example.com",
            "STREAMQ_GATEWAY_MAX_STREAM_SECONDS": "30",
        }
    )
    assert config.tokens == TOKENS
    assert config.cors_origins == ("https://app.example.com",)
    assert config.max_stream_seconds == 30
    assert TOKEN_A not in repr(config)
    for bad in ("short=tenant", f"{TOKEN_A}", f"{TOKEN_A}=bad tenant", f"{TOKEN_A}=a,{TOKEN_A}=b"):
        with pytest.raises(ConfigError, match="STREAMQ_GATEWAY_TOKENS") as info:
            parse_tokens(bad)
        assert TOKEN_A not in str(info.value)


def test_no_tokens_means_no_gateway_unless_explicitly_open(settings: Settings) -> None:
    """Without tokens the app refuses to start, unless anonymous access is asked for."""
    with pytest.raises(ConfigError, match="--open"):
        create_app(settings, GatewayConfig())
    assert GatewayConfig(allow_anonymous=True).open
    assert not GatewayConfig(tokens=TOKENS, allow_anonymous=True).open


async def test_open_mode_serves_everyone_as_one_tenant(settings: Settings) -> None:
    """In open mode no token is needed; every caller is the tenant `anonymous`."""
    with GatewayThread(create_app(settings, GatewayConfig(allow_anonymous=True))) as server:
        async with httpx2.AsyncClient(base_url=server.url) as client:
            created = await client.post("/v1/jobs", json={"messages": MESSAGES})
            assert created.status_code == 202
            assert (await client.get(created.json()["url"])).status_code == 200


async def test_cors_is_off_unless_configured(settings: Settings, gateway: GatewayThread) -> None:
    """Configured origins get CORS headers (with the job id header exposed); others none."""
    origin = "https://app.example.com"
    config = GatewayConfig(tokens=TOKENS, cors_origins=(origin,))
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    with GatewayThread(create_app(settings, config)) as server:
        async with httpx2.AsyncClient(base_url=server.url) as client:
            allowed = await client.options("/v1/jobs", headers=preflight)
            assert allowed.headers["access-control-allow-origin"] == origin
            other = await client.options(
                "/v1/jobs", headers={**preflight, "Origin": "https://x.io"}
            )
            assert "access-control-allow-origin" not in other.headers
            simple = await client.get("/openapi.json", headers={"Origin": origin})
            exposed = simple.headers["access-control-expose-headers"]
            assert "X-Streamq-Job-Id" in exposed
            assert "x-request-id" in exposed
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        closed = await client.get("/openapi.json", headers={"Origin": origin})
        assert "access-control-allow-origin" not in closed.headers


async def test_the_page_and_schema_are_public(gateway: GatewayThread) -> None:
    """/, its static files and /openapi.json need no token; the page allows only itself."""
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "static/chat.js" in page.text
        assert (await client.get("/static/chat.js")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert set(schema["paths"]) == {
            "/v1/jobs",
            "/v1/jobs/{job_id}",
            "/v1/jobs/{job_id}/events",
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/responses/{response_id}",
            "/v1/responses/{response_id}/cancel",
            "/v1/responses/{response_id}/input_items",
            "/v1/models",
            "/v1/models/{model}",
        }


@pytest.mark.parametrize("tenant", ["acme\n", "acme\r", "\nacme", ""])
def test_tenant_names_with_newlines_are_refused(tenant: str) -> None:
    """A tenant name is matched whole: a trailing newline is not a valid name."""
    with pytest.raises(ConfigError, match="tenant"):
        check_token("x" * 32, tenant)
