"""The chat page in a real headless Chromium (Debian's, driven by Playwright) against a real
gateway, worker, Redis and the simulator: a conversation through the Responses door, Stop,
reload mid-answer, a second tab following live, and model markdown that cannot run script. A
screenshot of each is kept in test-artifacts/ (look at them)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright
from redis.asyncio import Redis

from streamq import Settings
from streamq.core.keys import Keys
from streamq.dev.simulator import SimulatorConfig, SimulatorThread, simulated_text
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REPLY_TOKENS = 60  # at 15 tokens/s: 4 s an answer, time enough to act mid-answer
WAIT_MS = 20_000
XSS_ANSWER = (
    "# Rendered, not run\n\n"
    "- a **list** item\n- `inline code`\n\n"
    "<script>document.title = 'pwned by script'</script>\n\n"
    '<img src="nothing.png" alt="broken" onerror="document.title = \'pwned by onerror\'">\n\n'
    '<a href="javascript:document.title=1">a javascript: link</a>\n\n'
    "```html\n<script>alert('shown as code')</script>\n```\n"
)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium not installed: `apt-get install -y chromium` (.ci/run installs it)",
)


@contextlib.contextmanager
def chat_gateway(settings: Settings, simulator: SimulatorConfig) -> Iterator[GatewayThread]:
    """The gateway (tokens required) with a worker, answered by a simulator of ``simulator``."""
    with SimulatorThread(simulator) as upstream:
        upstream_settings = settings.replace(openai_base_url=upstream.base_url)
        app = create_app(upstream_settings, GatewayConfig(tokens=TOKENS, keepalive=0.2))
        with GatewayThread(app, worker=upstream_settings) as server:
            yield server


@pytest.fixture
def slow_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """Plain simulated answers of REPLY_TOKENS words at 15 tokens/s."""
    config = SimulatorConfig(tokens_per_second=15, reply_tokens=REPLY_TOKENS)
    with chat_gateway(settings, config) as server:
        yield server


@pytest.fixture
def single_slot_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """A worker that runs one job at a time: later ones wait in the queue."""
    config = SimulatorConfig(tokens_per_second=200, reply_tokens=REPLY_TOKENS)
    with chat_gateway(settings.replace(concurrency=1), config) as server:
        yield server


@pytest.fixture
def demo_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """The demo's answers (simulator mode demo), as `streamq serve --demo` gives them."""
    with chat_gateway(settings, SimulatorConfig(tokens_per_second=200, mode="demo")) as server:
        yield server


@pytest.fixture
def scripted_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """Every answer is XSS_ANSWER, markdown with script in it."""
    config = SimulatorConfig(tokens_per_second=200, reply_text=XSS_ANSWER)
    with chat_gateway(settings, config) as server:
        yield server


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser(chromium: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile: its own cookies, sessionStorage and localStorage."""
    context = await chromium.new_context(viewport={"width": 1000, "height": 800})
    try:
        yield context
    finally:
        await context.close()


class Tab:
    """One tab of the chat page, recording its script errors and console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.console: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "401 (Unauthorized)" not in message.text:
            self.console.append(message.text)  # a 401 is how the page learns it needs a token

    @classmethod
    async def open(cls, browser: BrowserContext, url: str) -> Tab:
        """A new tab on ``url``."""
        tab = cls(await browser.new_page())
        await tab.page.goto(url)
        return tab

    async def give_token(self) -> None:
        """Answer the page's request for the gateway token (it keeps it for the tab)."""
        await self.page.wait_for_selector("#token-form:not([hidden])")
        await self.page.fill("#token", TOKEN_A)
        await self.page.click("#token-form button")

    async def send(self, prompt: str, *, first: bool = False) -> None:
        """Type ``prompt`` and press Enter; ``first``: the tab has no token yet, so give it
        when asked and press Enter again."""
        await self.page.fill("#prompt", prompt)
        await self.page.press("#prompt", "Enter")
        if first:
            await self.give_token()
            assert await self.page.input_value("#prompt") == prompt  # kept meanwhile
            await self.page.press("#prompt", "Enter")

    def turn(self, number: int) -> str:
        return f".turn:nth-of-type({number + 1})"  # after the intro section

    async def answer(self, number: int) -> str:
        """The raw text of turn ``number``'s answer so far (1-based)."""
        selector = f"{self.turn(number)} .answer"
        if not await self.page.query_selector(selector):
            return ""
        return await self.page.get_attribute(selector, "data-text") or ""

    async def answer_longer_than(self, number: int, length: int) -> str:
        """Turn ``number``'s answer once it is longer than ``length`` (polled: the CSP forbids
        the eval that wait_for_function needs)."""
        text = ""
        for _ in range(800):
            text = await self.answer(number)
            if len(text) > length:
                return text
            await self.page.wait_for_timeout(25)
        raise AssertionError(f"the answer stayed at {len(text)} characters")

    async def ended(self, number: int, status: str = "completed") -> str:
        """Turn ``number``'s answer once the turn has ``status``."""
        await self.page.wait_for_selector(
            f"{self.turn(number)}[data-status={status}]", timeout=WAIT_MS
        )
        return await self.answer(number)

    async def response_id(self, number: int) -> str:
        return await self.page.get_attribute(self.turn(number), "data-id") or ""

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / name))  # what the window shows


async def stored_response(gateway: GatewayThread, response_id: str) -> dict[str, Any]:
    """The Response as the API gives it, to compare the page with."""
    async with httpx2.AsyncClient(base_url=gateway.url) as client:
        headers = {"Authorization": f"Bearer {TOKEN_A}"}
        reply = await client.get(f"/v1/responses/{response_id}", headers=headers)
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


async def test_token_streamed_answer_stop_and_favicon(
    slow_gateway: GatewayThread, browser: BrowserContext
) -> None:
    """The page asks for the token, Enter sends and clears the prompt, the answer streams in
    (with time to first token and tokens/s), Stop cancels the next one half-way; /favicon.ico
    is served."""
    tab = await Tab.open(browser, f"{slow_gateway.url}/")
    prompt = "Tell me about message queues"
    await tab.send(prompt, first=True)
    partial = await tab.answer_longer_than(1, 0)
    assert await tab.page.input_value("#prompt") == ""
    answer = await tab.ended(1)
    assert answer == simulated_text([{"role": "user", "content": prompt}], length=REPLY_TOKENS)
    assert partial != answer  # the text arrived in pieces
    meta = await tab.page.text_content(f"{tab.turn(1)} .meta") or ""
    assert "first token" in meta
    assert "tokens/s" in meta
    assert f"{REPLY_TOKENS} tokens" in meta

    await tab.send("Now something long, then stop")
    await tab.answer_longer_than(2, 20)
    await tab.page.click("#stop")
    stopped = await tab.ended(2, "cancelled")
    assert "Stopped." in (await tab.page.text_content(f"{tab.turn(2)} .notices") or "")
    response = await stored_response(slow_gateway, await tab.response_id(2))
    assert response["status"] == "cancelled"
    assert stopped == output_text(response)
    assert len(stopped.split()) < REPLY_TOKENS
    await tab.screenshot("chat-stop.png")

    async with httpx2.AsyncClient(base_url=slow_gateway.url) as client:
        icon = await client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert tab.errors == []
    assert tab.console == []


async def test_two_turns_share_the_conversation(
    demo_gateway: GatewayThread, browser: BrowserContext, settings: Settings, redis: Redis
) -> None:
    """The second turn is chained to the first (previous_response_id): its job carries turn 1,
    and the demo's answer quotes it; markdown, the reasoning block and a tool call render."""
    tab = await Tab.open(browser, f"{demo_gateway.url}/")
    await tab.send("What is a queue?", first=True)
    first = await tab.ended(1)
    assert first.startswith("**This answer comes from streamq's built-in simulator**")
    await tab.send("And a stream?")
    second = await tab.ended(2)
    assert "This is turn 2 of our conversation" in second
    assert "“What is a queue?”" in second

    job_id = (await tab.response_id(2)).removeprefix("resp_")
    stored = json.loads(await redis.get(Keys(settings.key_prefix).request(job_id)) or "{}")
    said = json.dumps(stored)
    assert "What is a queue?" in said
    assert "built-in simulator" in said  # turn 1's answer, as context
    answer = f"{tab.turn(2)} .answer"
    assert (
        await tab.page.text_content(f"{answer} strong")
        == "This answer comes from streamq's built-in simulator"
    )
    assert await tab.page.query_selector(f"{answer} ul > li")
    assert "enqueue_chat" in (await tab.page.text_content(f"{answer} pre code") or "")
    assert "What is a queue?" in (
        await tab.page.text_content(f"{tab.turn(1)} details.reasoning") or ""
    )

    await tab.send("Use a tool: what is the weather in Oslo?")
    await tab.ended(3)
    tool = f"{tab.turn(3)} details.tool"
    assert await tab.page.text_content(f"{tool} summary") == "Tool call: get_weather"
    assert "city" in json.loads(await tab.page.text_content(f"{tool} code") or "{}")
    await tab.page.set_viewport_size({"width": 1000, "height": 1900})  # all three turns
    await tab.screenshot("chat-conversation.png")
    await tab.page.set_viewport_size({"width": 390, "height": 844})
    await tab.page.emulate_media(color_scheme="dark")
    await tab.screenshot("chat-phone-dark.png")
    assert tab.errors == []
    assert tab.console == []


async def test_reload_mid_answer_continues_where_it_was(
    slow_gateway: GatewayThread, browser: BrowserContext
) -> None:
    """Reloaded mid-answer, the page restores the conversation from its URL and its saved state,
    resumes after the last event it had (starting_after=N), and ends with the model's text,
    exactly once."""
    tab = await Tab.open(browser, f"{slow_gateway.url}/")
    prompt = "Survive a reload"
    await tab.send(prompt, first=True)
    before = await tab.answer_longer_than(1, 40)
    assert "#r=resp_" in tab.page.url
    streams: list[str] = []
    tab.page.on("request", lambda request: streams.append(request.url))
    await tab.page.reload()
    restored = await tab.answer(1)  # shown from the saved state, before the stream answers
    assert restored.startswith(before)
    await tab.screenshot("chat-reload.png")  # mid-answer, just after the reload
    assert await tab.page.text_content(f"{tab.turn(1)} .user") == prompt
    answer = await tab.ended(1)
    expected = simulated_text([{"role": "user", "content": prompt}], length=REPLY_TOKENS)
    assert answer == expected
    assert (await tab.page.text_content(f"{tab.turn(1)} .answer") or "").strip() == expected
    resumed = [url for url in streams if "stream=true" in url]
    assert resumed
    assert all("starting_after=-1" not in url for url in resumed)  # no replay from the start
    assert tab.errors == []
    assert tab.console == []


async def test_a_second_browser_follows_the_same_answer_live(
    slow_gateway: GatewayThread, browser: BrowserContext, chromium: Browser
) -> None:
    """The page's link, opened in a second tab of another profile (nothing saved there),
    shows the conversation and follows the running answer live; both tabs end with the same
    text, the model's."""
    first = await Tab.open(browser, f"{slow_gateway.url}/")
    prompt = "Watch me from two tabs"
    await first.send(prompt, first=True)
    await first.answer_longer_than(1, 10)
    link = await first.page.get_attribute("#share", "href")
    assert link == first.page.url
    elsewhere = await chromium.new_context(viewport={"width": 1000, "height": 800})
    try:
        second = await Tab.open(elsewhere, link)
        await second.give_token()
        await second.answer_longer_than(1, 0)
        assert await second.page.get_attribute(second.turn(1), "data-status") == "in_progress"
        assert await second.page.text_content(f"{second.turn(1)} .user") == prompt
        await second.screenshot("chat-second-tab.png")  # following the answer live
        expected = simulated_text([{"role": "user", "content": prompt}], length=REPLY_TOKENS)
        assert await second.ended(1) == expected
        assert await first.ended(1) == expected
        assert second.errors == []
        assert second.console == []
    finally:
        await elsewhere.close()
    assert first.errors == []


async def test_a_queued_answer_shows_its_place_until_its_text(
    single_slot_gateway: GatewayThread, browser: BrowserContext
) -> None:
    """Three jobs of the same tenant first (one runs, stalled; two wait): the turn says "2 ahead
    of you…", then, once they are cancelled, its answer and no place."""
    stall = {"extra_body": {"simulator": {"fault": "stall", "after": 1}}}
    auth = {"Authorization": f"Bearer {TOKEN_A}"}
    async with httpx2.AsyncClient(base_url=single_slot_gateway.url, headers=auth) as http:
        ahead = []
        for i in range(3):
            body = {"messages": [{"role": "user", "content": f"ahead {i}"}], **stall}
            ahead.append((await http.post("/v1/jobs", json=body)).json()["id"])
        tab = await Tab.open(browser, f"{single_slot_gateway.url}/")
        prompt = "Am I next?"
        await tab.send(prompt, first=True)
        place = f"{tab.turn(1)} .notice.queue"
        await tab.page.wait_for_selector(f'{place}:has-text("2 ahead of you…")', timeout=WAIT_MS)
        await tab.screenshot("chat-queued.png")
        for job_id in ahead:
            await http.delete(f"/v1/jobs/{job_id}")
    answer = await tab.ended(1)
    assert answer == simulated_text([{"role": "user", "content": prompt}], length=REPLY_TOKENS)
    assert await tab.page.query_selector(place) is None
    assert tab.errors == []
    assert tab.console == []


async def test_model_markdown_cannot_run_script(
    scripted_gateway: GatewayThread, browser: BrowserContext
) -> None:
    """An answer with <script>, an onerror= attribute and a javascript: link renders its
    markdown; the HTML shows as text, nothing of it reaches the DOM or tries to run (the CSP
    would report the attempt)."""
    tab = await Tab.open(browser, f"{scripted_gateway.url}/")
    await tab.send("Show me some HTML", first=True)
    assert await tab.ended(1) == XSS_ANSWER
    answer = f"{tab.turn(1)} .answer"
    assert await tab.page.text_content(f"{answer} h1") == "Rendered, not run"
    assert await tab.page.query_selector(f"{answer} li strong")
    shown = await tab.page.text_content(answer) or ""
    assert "<script>document.title = 'pwned by script'</script>" in shown
    assert "onerror=" in shown
    for dangerous in ("script", "img", "[onerror]", "a[href^=javascript]", "[style]"):
        assert await tab.page.query_selector(f"{answer} {dangerous}") is None, dangerous
    code = await tab.page.text_content(f"{answer} pre code")
    assert code == "<script>alert('shown as code')</script>\n"
    assert await tab.page.title() == "streamq chat"
    await tab.screenshot("chat-markdown-safe.png")
    assert tab.errors == []
    assert tab.console == []
