"""docs/examples, each run for real: the FastAPI SSE app under uvicorn, the background script,
and the Node.js reader, against a real Redis, worker and simulator."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamq import Delta, Settings, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.local_redis import free_port
from streamq.dev.simulator import simulated_text
from tests.harness.loop_thread import worker_thread
from tests.harness.processes import exited, settings_environment, stop
from tests.harness.waiting import STARTUP, poll_until_sync

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"
NODE_READER = EXAMPLES / "node_reader"
MIN_NODE = (18, 19)  # what the `redis` package in node_reader/package-lock.json needs


def expected(prompt: str) -> str:
    """What the simulator answers to the examples' prompts (they send "Be brief." first)."""
    return simulated_text(chat_messages(prompt, system_prompt="Be brief."))


# FastAPI + SSE


@pytest.fixture
def sse_app(settings: Settings) -> Iterator[str]:
    """docs/examples/fastapi_sse.py under a real uvicorn on a free port, and a worker."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "fastapi_sse:app", "--app-dir", str(EXAMPLES)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with (
        worker_thread(settings),
        tempfile.TemporaryDirectory() as cwd,  # no stray .env is picked up
        subprocess.Popen(command, env=settings_environment(settings), cwd=cwd) as server,
    ):
        try:
            poll_until_sync(
                lambda: port_open(port), STARTUP, "the example app to listen",
                give_up=functools.partial(exited, server),
            )  # fmt: skip
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(server)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def read_sse(url: str, last_event_id: str | None = None) -> list[dict[str, str]]:
    """Every event of an SSE response, read to its end, as {"id", "event", "data"} dicts."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
    except urllib.error.HTTPError as error:
        error.close()
        raise
    with response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        body = response.read().decode()
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append(fields)
    return events


def test_fastapi_streams_a_job_as_server_sent_events(sse_app: str) -> None:
    """POST enqueues; GET streams every event with its cursor as the SSE id, up to `done`."""
    status, created = post_json(
        f"{sse_app}/jobs", {"prompt": "SSE please", "system_prompt": "Be brief.", "job_id": "sse-1"}
    )
    assert status == 202
    assert created == {"job_id": "sse-1", "events": f"{sse_app}/jobs/sse-1/events"}
    events = read_sse(created["events"])
    assert [e["event"] for e in events[:1] + events[-1:]] == ["start", "done"]
    text = "".join(json.loads(e["data"])["text"] for e in events if e["event"] == "delta")
    assert text == expected("SSE please")
    assert [e["id"] for e in events] == [json.loads(e["data"])["cursor"] for e in events]

    resumed = read_sse(created["events"], last_event_id=events[2]["id"])
    assert resumed == events[3:]


def test_fastapi_answers_bad_requests_with_4xx(sse_app: str) -> None:
    """Unknown jobs are 404, invalid input 422, a malformed Last-Event-ID 400."""
    with pytest.raises(urllib.error.HTTPError) as unknown:
        read_sse(f"{sse_app}/jobs/no-such-job/events")
    assert unknown.value.code == 404
    status, _ = post_json(f"{sse_app}/jobs", {"prompt": "x", "job_id": "not valid!"})
    assert status == 422
    _, created = post_json(f"{sse_app}/jobs", {"prompt": "cursor"})
    with pytest.raises(urllib.error.HTTPError) as bad_cursor:
        read_sse(created["events"], last_event_id="yesterday")
    assert bad_cursor.value.code == 400


# The background script


@pytest.mark.usefixtures("worker")
async def test_background_script_prints_the_answer(settings: Settings) -> None:
    """The synchronous script enqueues its prompt and prints exactly the streamed answer."""
    with tempfile.TemporaryDirectory() as cwd:
        script = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "background_script.py"), "Write", "a", "haiku",
            env=settings_environment(settings), cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(script.communicate(), STARTUP)
    assert script.returncode == 0, err.decode()
    assert out.decode() == expected("Write a haiku") + "\n"


# The Node.js reader


@pytest.fixture(scope="session")
def node_reader() -> list[str]:
    """The command that runs node_reader/reader.mjs, its packages installed with `npm ci`."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"the Node.js reader example needs Node.js >= {MIN_NODE} and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    found = tuple(int(part) for part in version.stdout.strip().lstrip("v").split(".")[:2])
    if found < MIN_NODE:
        pytest.skip(f"the Node.js reader example needs Node.js >= {MIN_NODE}; found {found}")
    installed = NODE_READER / "node_modules" / ".package-lock.json"
    lock = NODE_READER / "package-lock.json"
    # `make test` runs two sessions at once, and `npm ci` starts by deleting node_modules: one
    # session's install must not pull the packages from under the other's reader.
    digest = hashlib.sha256(str(NODE_READER).encode()).hexdigest()[:16]
    guard = Path(tempfile.gettempdir()) / f"streamq-node-reader-{digest}.lock"
    with open(guard, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            subprocess.run(
                [npm, "ci", "--prefix", str(NODE_READER), "--no-audit", "--no-fund", "--silent"],
                check=True,
                timeout=300,
            )
    return [node, str(NODE_READER / "reader.mjs")]


async def run_reader(
    command: list[str], settings: Settings, job_id: str, *options: str
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, settings.redis_url, job_id, *options,
        env=settings_environment(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), STARTUP)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.usefixtures("worker")
async def test_node_reader_prints_a_live_job(node_reader: list[str], sq: StreamQ) -> None:
    """Started as the job runs, the Node.js reader prints exactly the job's text."""
    slow = {"simulator": {"tokens_per_second": 40}}
    job = await sq.enqueue_chat("read me from node", extra_body=slow)
    code, out, err = await run_reader(node_reader, sq.settings, job.id)
    assert code == 0, err
    assert out == (await job.result()).text == simulated_text(chat_messages("read me from node"))


@pytest.mark.usefixtures("worker")
async def test_node_reader_drops_an_abandoned_attempt(node_reader: list[str], sq: StreamQ) -> None:
    """On `reset` the reader says so (live) or drops the old text (--final); --after resumes."""
    fault = {
        "fault": "disconnect",
        "after": 3,
        "fault_times": 1,
        "fault_key": f"node-{sq.settings.key_prefix}",
    }
    job = await sq.enqueue_chat("restart in node", extra_body={"simulator": fault})
    result = await job.result()
    assert result.attempt == 2
    events = [event async for event in job.events()]
    (code, live, notice), (_, final, _), (_, after, _) = await asyncio.gather(
        run_reader(node_reader, sq.settings, job.id),
        run_reader(node_reader, sq.settings, job.id, "--final"),
        run_reader(node_reader, sq.settings, job.id, "--after", events[-3].cursor),
    )
    assert code == 0
    assert "restarted (attempt 2)" in notice
    abandoned = "".join(e.text for e in events if isinstance(e, Delta) and e.attempt == 1)
    assert live == abandoned + result.text
    assert final == result.text
    assert after == "".join(e.text for e in events[-2:] if isinstance(e, Delta))


@pytest.mark.usefixtures("worker")
async def test_node_reader_reports_failures(node_reader: list[str], sq: StreamQ) -> None:
    """A failed job exits 1 with the error; an unknown job exits 2."""
    failing = await sq.enqueue_chat("fail", extra_body={"simulator": {"fault": "http_400"}})
    code, _, err = await run_reader(node_reader, sq.settings, failing.id)
    assert code == 1
    assert "upstream_bad_request" in err
    code, _, err = await run_reader(node_reader, sq.settings, "never-enqueued")
    assert code == 2
    assert "no job" in err
