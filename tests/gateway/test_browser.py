"""The chat page in a real headless Chromium (Debian's, driven by Playwright): text streams in,
Stop cancels, and forced reconnects neither lose nor repeat text. A screenshot is kept in
test-artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from streamq import Settings
from streamq.dev.simulator import SimulatorConfig, SimulatorThread, simulated_text
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

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
def page_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """The gateway with a worker, an upstream at 20 tokens/s, and event streams cut every
    0.4 s, so each answer needs several reconnects."""
    with SimulatorThread(SimulatorConfig(tokens_per_second=20)) as slow:
        slow_settings = settings.replace(openai_base_url=slow.base_url)
        config = GatewayConfig(tokens=TOKENS, keepalive=0.2, max_stream_seconds=0.4)
        app = create_app(slow_settings, config)
        with GatewayThread(app, worker=slow_settings) as server:
            yield server


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with a fresh profile."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            await context.close()


async def text_longer_than(page: Page, length: int) -> str:
    """The answer once it is longer than ``length`` (polled: the page's CSP forbids eval)."""
    for _ in range(400):
        text = await page.text_content("#answer") or ""
        if len(text) > length:
            return text
        await page.wait_for_timeout(25)
    raise AssertionError(f"the answer stayed at {len(text)} characters")


async def send(page: Page, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.click("#send")


async def test_chat_page_streams_stops_and_resumes(
    page_gateway: GatewayThread, browser: BrowserContext
) -> None:
    """Prompt, token, streamed answer identical to the model's text despite cut connections;
    then a second answer stopped half-way with the Stop button."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{page_gateway.url}/")

    prompt = "Tell me about message queues"
    await send(page, prompt)
    await page.wait_for_selector("#token-form:not([hidden])")  # 401: the page asks for a token
    await page.fill("#token", TOKEN_A)
    await page.click("#token-form button")
    await page.click("#send")

    partial = await text_longer_than(page, 0)
    await page.wait_for_selector("#status[data-state=done]", timeout=20_000)
    answer = await page.text_content("#answer")
    expected = simulated_text([{"role": "user", "content": prompt}])
    assert answer == expected
    assert partial != answer  # the text arrived in pieces
    assert int(await page.get_attribute("#status", "data-reconnects") or 0) >= 1

    await send(page, "Now something long, then stop")
    await text_longer_than(page, 20)
    await page.click("#stop")
    await page.wait_for_selector("#status[data-state=cancelled]", timeout=20_000)
    stopped = await page.text_content("#answer") or ""
    full = simulated_text([{"role": "user", "content": "Now something long, then stop"}])
    assert full.startswith(stopped)
    assert len(stopped) < len(full)

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "gateway-chat-page.png"), full_page=True)
    assert errors == []
