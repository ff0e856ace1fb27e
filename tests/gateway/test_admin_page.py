"""The operators' page in a real headless Chromium while a worker runs jobs: its numbers are
`streamq stats --json`'s, a tenant's token does not open it, and its Cancel button ends a
running job with a `cancelled` event. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from streamq import Settings
from streamq.dev.simulator import SimulatorConfig, SimulatorThread
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.processes import run_cli
from tests.harness.waiting import poll_until

ADMIN_TOKEN = "operator-secret-token-0001"
SHORT = 30  # tokens of a quick job: 3 s
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium not installed: `apt-get install -y chromium` (.ci/run installs it)",
)


@pytest.fixture
def admin_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """The gateway with /admin and a worker; the upstream streams 10 tokens/s, 400 a reply."""
    with SimulatorThread(SimulatorConfig(tokens_per_second=10, reply_tokens=400)) as slow:
        slow_settings = settings.replace(openai_base_url=slow.base_url)
        config = GatewayConfig(tokens=TOKENS, keepalive=0.2, admin_tokens=(ADMIN_TOKEN,))
        with GatewayThread(create_app(slow_settings, config), worker=slow_settings) as server:
            yield server


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Debian Chromium with a fresh profile, wide enough for the page's charts."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


async def enqueue(http: httpx2.AsyncClient, prompt: str, **extra: Any) -> str:
    body = {"messages": [{"role": "user", "content": prompt}], **extra}
    response = await http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def state_of(http: httpx2.AsyncClient, job_id: str) -> str:
    return str((await http.get(f"/v1/jobs/{job_id}")).json()["state"])


async def text(page: Page, selector: str) -> str:
    return (await page.text_content(selector) or "").strip()


async def page_numbers(page: Page) -> dict[str, Any]:
    """What the page shows, in `streamq stats --json`'s terms."""
    return {
        "queued": int(await text(page, "#queued")),
        "running": int(await text(page, "#running")),
        "workers": int(await text(page, "#workers-alive")),
        "in_flight": int(await text(page, "#in-flight")),
        "jobs": json.loads(await page.get_attribute("#window-note", "data-jobs") or "{}"),
        "failures": json.loads(await page.get_attribute("#failures-total", "data-codes") or "{}"),
    }


def cli_numbers(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "queued": stats["queued"],
        "running": stats["running"],
        "workers": len(stats["workers"]),
        "in_flight": sum(worker["in_flight"] for worker in stats["workers"]),
        "jobs": stats["jobs"],
        "failures": stats["failures"],
    }


async def test_admin_page_shows_the_fleet_and_cancels_a_job(
    admin_gateway: GatewayThread, browser: BrowserContext, settings: Settings
) -> None:
    """A tenant token is refused; with the admin token the page shows what `streamq stats
    --json` says, follows a running job's text and cancels it from its Cancel button."""
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    async with httpx2.AsyncClient(base_url=admin_gateway.url, headers=headers, timeout=30) as http:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(f"{error} {error.stack}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"{admin_gateway.url}/admin")

        await page.wait_for_selector("#token-form:not([hidden])")
        await page.fill("#token", TOKEN_A)  # a tenant's token: 403, nothing shown
        await page.click("#token-form button")
        await page.wait_for_selector("#token-error:has-text('tenant token')")
        assert await page.is_hidden("#board")
        errors.clear()  # the browser logs the 403s it was meant to get

        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#token-form button")
        await page.wait_for_selector("#workers tr[data-worker-id]")

        # Jobs of a few seconds each: the page lists the jobs it saw queued or running.
        quick = [await enqueue(http, f"quick question {i}", max_tokens=SHORT) for i in range(3)]
        for job_id in quick:
            await poll_until(_state_is(http, job_id, "done"), 20, f"job {job_id} to end")
        long_job = await enqueue(http, "Tell me a long story about queues")
        await poll_until(_state_is(http, long_job, "running"), 20, "the long job to run")
        await page.wait_for_selector(f"#jobs tr[data-job-id='{long_job}'][data-state=running]")

        async def same_as_cli() -> bool:
            code, out, err = await run_cli(settings, "stats", "--json")
            assert code == 0, err
            expected = cli_numbers(json.loads(out))
            return expected == await page_numbers(page) and expected["jobs"] == {"done": 3}

        await poll_until(same_as_cli, 20, "the page to show what `streamq stats --json` says")
        assert (await page_numbers(page))["running"] == 1
        for job_id in quick:
            await page.wait_for_selector(f"#jobs tr[data-job-id='{job_id}'][data-state=done]")
        await page.wait_for_selector("#chart-jobs canvas")

        await page.click(f"#jobs tr[data-job-id='{long_job}'] td:first-child")
        await page.wait_for_selector("#stream-status[data-state=running]")
        await poll_until(
            lambda: _longer_than(page, "#stream-text", 10), 20, "the job's text to stream in"
        )
        await page.click(f"#jobs tr[data-job-id='{long_job}'] button.cancel")
        await page.wait_for_selector("#stream-status[data-state=cancelled]", timeout=20_000)
        assert await state_of(http, long_job) == "cancelled"
        events = await http.get(f"/v1/jobs/{long_job}/events", params={"after": "0-0"})
        assert "event: cancelled" in events.text
        await page.wait_for_selector(f"#jobs tr[data-job-id='{long_job}'][data-state=cancelled]")

        # One more running for the picture, with the cancelled one's text still open.
        another = await enqueue(http, "And another long one, please")
        await page.wait_for_selector(f"#jobs tr[data-job-id='{another}'][data-state=running]")
        await page.wait_for_timeout(1500)  # a few deltas, so its row shows a TTFT
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "gateway-admin-page.png"), full_page=True)
        assert errors == []


def _state_is(http: httpx2.AsyncClient, job_id: str, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await state_of(http, job_id) == state

    return check


async def _longer_than(page: Page, selector: str, length: int) -> bool:
    return len(await text(page, selector)) > length
