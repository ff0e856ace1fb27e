"""``/admin/api``: operators only (401 without a token, 403 for a tenant's), and the same
answers as ``streamq stats --json`` and ``streamq inspect --json``."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import ConfigError, Settings, StreamQ
from streamq.admin import dashboard
from streamq.core.keys import Keys
from streamq.gateway import GatewayConfig, create_app
from streamq.gateway import admin as admin_module
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.processes import run_cli
from tests.harness.waiting import poll_until

ADMIN_TOKEN = "operator-secret-token-0001"
ENDPOINTS = [
    ("GET", "/admin/api/stats"),
    ("GET", "/admin/api/overview"),
    ("GET", "/admin/api/history"),
    ("GET", "/admin/api/jobs/some-job"),
    ("GET", "/admin/api/jobs/some-job/events"),
    ("POST", "/admin/api/jobs/some-job/cancel"),
]


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(tokens=TOKENS, keepalive=0.2, admin_tokens=(ADMIN_TOKEN,))


@pytest.fixture
async def admin(gateway: GatewayThread) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client with the operators' token."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx2.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
        yield http


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong-token-0000000000", 401), (f"Bearer {TOKEN_A}", 403)],
)
async def test_admin_api_is_for_operators_only(
    gateway: GatewayThread, method: str, path: str, authorization: str | None, status: int
) -> None:
    """No token or an unknown one: 401; a tenant's token: 403, on every admin endpoint."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    assert "STREAMQ_GATEWAY_ADMIN_TOKENS" in response.json()["error"]["message"]


async def test_page_has_a_strict_csp_and_no_data(gateway: GatewayThread) -> None:
    """The page is static (no data without the token) and may load only its own files."""
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        page = await client.get("/admin")
        script = await client.get("/static/admin/admin.js")
    assert page.status_code == 200
    assert script.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text


def test_admin_is_off_without_admin_tokens(settings: Settings) -> None:
    """Without STREAMQ_GATEWAY_ADMIN_TOKENS there is no /admin at all."""
    app = create_app(settings, GatewayConfig(tokens=TOKENS))
    paths = {getattr(route, "path", "") for route in app.routes}
    assert not any(path.startswith("/admin") for path in paths)


def test_admin_tokens_are_checked() -> None:
    """Admin tokens are read from the environment and may not double as tenant tokens."""
    config = GatewayConfig.from_env({"STREAMQ_GATEWAY_ADMIN_TOKENS": f" {ADMIN_TOKEN} ,"})
    assert config.admin_tokens == (ADMIN_TOKEN,)
    assert ADMIN_TOKEN not in repr(config)
    with pytest.raises(ConfigError, match="also a tenant token"):
        GatewayConfig(tokens=TOKENS, admin_tokens=(TOKEN_A,))
    with pytest.raises(ConfigError, match="ADMIN_TOKENS item 1"):
        GatewayConfig(admin_tokens=("short",))


@pytest.mark.usefixtures("worker")
async def test_stats_and_inspect_match_the_cli(
    admin: httpx2.AsyncClient, settings: Settings, sq: StreamQ
) -> None:
    """/admin/api/stats is `streamq stats --json`; /admin/api/jobs/ID is `streamq inspect`."""
    job = await sq.enqueue([{"role": "user", "content": "count me"}], max_tokens=4)
    await job.result()

    async def counted() -> bool:  # the worker counts a job just after its last event
        return bool((await admin.get("/admin/api/stats")).json()["jobs"] == {"done": 1})

    await poll_until(counted, 10, "the finished job to be counted")
    code, out, err = await run_cli(settings, "stats", "--json")
    assert code == 0, err
    page = (await admin.get("/admin/api/stats")).json()
    cli = json.loads(out)
    for name in ("queued", "running", "jobs", "failures"):
        assert page[name] == cli[name], name
    assert [w["id"] for w in page["workers"]] == [w["id"] for w in cli["workers"]]
    code, out, err = await run_cli(settings, "inspect", job.id, "--json")
    assert code == 0, err
    record, cli_record = (await admin.get(f"/admin/api/jobs/{job.id}")).json(), json.loads(out)
    assert abs(record.pop("ttl_s") - cli_record.pop("ttl_s")) <= 2  # a second may tick between
    assert record == cli_record
    overview = (await admin.get("/admin/api/overview")).json()
    history = (await admin.get("/admin/api/history")).json()["minutes"]
    assert len(history) == dashboard.HISTORY_MINUTES
    assert sum(m["jobs"].get("done", 0) for m in history) == 1
    assert overview["stats"]["jobs"] == {"done": 1}
    assert (await admin.get("/admin/api/jobs/no-such-job")).status_code == 404


async def test_admission_state_reads_slots_and_pauses(redis: Redis, settings: Settings) -> None:
    """Slots whose lease has not run out count as in use; a pause shows its time left."""
    keys = Keys(settings.key_prefix)
    now_ms = int((await redis.time())[0]) * 1000
    slots = keys.admission_slots("abc123", "gpt-x")
    await redis.zadd(slots, {"held": now_ms + 60_000, "lapsed": now_ms - 1000})
    await redis.set(keys.admission_pause("abc123", "gpt-x"), 1, px=5000)
    pairs = await dashboard.admission_pairs(redis, keys)
    assert pairs == [("abc123", "gpt-x")]
    [state] = await dashboard.admission_state(redis, keys, pairs)
    assert state.slots_in_use == 1
    assert state.paused_for_s is not None
    assert 0 < state.paused_for_s <= 5


def test_vendored_chart_library_matches_its_record() -> None:
    """uPlot is vendored as VENDOR.md records it (version, sha256), with its licence."""
    folder = Path(admin_module.__file__).parent / "static" / "admin"
    record = (folder / "VENDOR.md").read_text(encoding="utf-8")
    for name, digest in re.findall(r"\| `([^`]+)` \|[^|]+\|[^|]+\| `([0-9a-f]{64})` \|", record):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (folder / "uPlot.LICENSE").read_text(encoding="utf-8")
    assert "1.6.32" in record


async def test_stats_window_is_checked(admin: httpx2.AsyncClient) -> None:
    """`?window=MINUTES` as `streamq stats --window`; anything else is a 400, not a 500."""
    assert (await admin.get("/admin/api/stats", params={"window": "1"})).json()["window_s"] <= 60
    for bad in ("abc", "0", "-3", "1000"):
        response = await admin.get("/admin/api/stats", params={"window": bad})
        assert response.status_code == 400, bad
