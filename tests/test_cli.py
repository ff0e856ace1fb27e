"""The `streamq` command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis

from streamq import Settings, StreamQ, __version__
from streamq.admin.presence import WorkerPresence, announce
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.local_redis import free_port
from streamq.dev.simulator import simulated_demo_text, simulated_text
from tests.harness.processes import (
    ROOT,
    STOP_TIMEOUT,
    run_cli,
    settings_environment,
    start_cli,
)
from tests.harness.redis_servers import blocked_in
from tests.harness.waiting import STARTUP, poll_until

COMMANDS = ("worker", "enqueue", "tail", "cancel", "simulate", "serve", "stats", "inspect",
            "health", "purge", "drain", "demo")  # fmt: skip


async def test_help_lists_every_command(settings: Settings) -> None:
    """`streamq --help` lists worker, enqueue, tail, simulate and demo."""
    code, out, _ = await run_cli(settings, "--help")
    assert code == 0
    for command in ("worker", "enqueue", "tail", "simulate", "demo"):
        assert command in out


@pytest.mark.usefixtures("worker")
async def test_enqueue_follow_streams_the_answer(settings: Settings) -> None:
    """`enqueue --follow` prints the answer on stdout and the job id on stderr."""
    code, out, err = await run_cli(
        settings, "enqueue", "Hi there", "--system", "Be kind", "--follow"
    )
    assert code == 0, err
    expected = simulated_text(chat_messages("Hi there", system_prompt="Be kind"))
    assert out == expected + "\n"
    assert "job " in err


@pytest.mark.usefixtures("worker")
async def test_enqueue_then_tail_text_json_and_from_cursor(settings: Settings) -> None:
    """`enqueue` prints an id; `tail` replays the text, `--json` every event, `--from` the rest."""
    code, out, _ = await run_cli(settings, "enqueue", "tail me", "--job-id", "cli-1")
    assert (code, out) == (0, "cli-1\n")
    expected = simulated_text(chat_messages("tail me"))

    code, out, _ = await run_cli(settings, "tail", "cli-1")
    assert (code, out) == (0, expected + "\n")

    code, out, _ = await run_cli(settings, "tail", "cli-1", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert events[0]["type"] == "start"
    assert events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "delta") == expected

    cursor = events[2]["cursor"]
    code, out, _ = await run_cli(settings, "tail", "cli-1", "--json", "--from", cursor)
    assert [json.loads(line) for line in out.splitlines()] == events[3:]


async def test_unknown_job_and_bad_input_exit_2_with_a_message(settings: Settings) -> None:
    """Errors are one line on stderr with exit code 2, never a traceback."""
    code, _, err = await run_cli(settings, "tail", "no-such-job")
    assert code == 2
    assert "no job with id 'no-such-job'" in err
    code, _, err = await run_cli(settings, "enqueue", "hi", "--job-id", "bad id")
    assert code == 2
    assert "invalid job id" in err
    code, _, err = await run_cli(settings, "tail", "x", "--from", "later")
    assert code == 2
    assert "invalid cursor" in err
    assert "Traceback" not in err


async def test_bad_setting_fails_at_start_naming_the_variable(settings: Settings) -> None:
    """A malformed variable stops the command with its name and the accepted values."""
    env = {**settings_environment(settings), "STREAMQ_CONCURRENCY": "lots"}
    code, _, err = await run_cli(settings, "worker", env=env)
    assert code == 2
    assert "STREAMQ_CONCURRENCY='lots'" in err
    assert "positive integer" in err


async def test_worker_without_api_key_or_base_url_refuses_to_start(settings: Settings) -> None:
    """With no key and no base URL the worker says what to set instead of failing later."""
    env = settings_environment(settings)
    env.pop("OPENAI_API_KEY")
    env.pop("OPENAI_BASE_URL")
    code, _, err = await run_cli(settings, "worker", env=env)
    assert code == 2
    assert "OPENAI_API_KEY" in err


async def test_ctrl_c_exits_cleanly(settings: Settings) -> None:
    """Ctrl-C while tailing exits with 130 and no traceback."""
    other = settings.replace(queue_name=settings.queue_name + ":idle")
    async with StreamQ.from_url(settings.redis_url, other) as sq:
        job = await sq.enqueue_chat("nobody serves this queue")
    process = await start_cli(settings_environment(other), "tail", job.id)
    async with Redis.from_url(settings.redis_url) as redis:  # past start-up: blocked reading
        await poll_until(
            lambda: blocked_in(redis, process.pid), STARTUP, "the tail to block in XREAD",
            give_up=lambda: None if process.returncode is None else "the tail exited",
        )  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT)
    assert process.returncode == 130
    assert b"Traceback" not in err


@pytest.mark.parametrize("redis_up", [True, False], ids=["redis-running", "no-redis"])
async def test_demo_streams_an_answer(settings: Settings, redis_up: bool) -> None:
    """`streamq demo` works with no API key, and starts its own Redis when none answers."""
    env = settings_environment(settings)
    env.pop("OPENAI_API_KEY")
    env.pop("OPENAI_BASE_URL")
    if not redis_up:
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    code, out, err = await run_cli(settings, "demo", "Say hi", env=env)
    assert code == 0, err
    assert out == simulated_demo_text(chat_messages("Say hi")) + "\n"
    assert "simulator" in err
    assert ("throwaway" in err) is not redis_up


async def test_simulate_serves_an_openai_compatible_api(settings: Settings) -> None:
    """`streamq simulate` serves /v1/models and streams chat completions over HTTP."""
    port = free_port()
    process = await start_cli(
        settings_environment(settings), "simulate", "--port", str(port), stdout=None
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), STARTUP)
        assert f"127.0.0.1:{port}" in line.decode()
        client = AsyncOpenAI(api_key="sk-any", base_url=f"http://127.0.0.1:{port}/v1")
        async with client:
            models = await client.models.list()
            assert models.data
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
            stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == simulated_text([{"role": "user", "content": "hi"}])
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


@pytest.mark.usefixtures("worker")
async def test_tail_never_glues_two_attempts_on_stdout(settings: Settings) -> None:
    """After a restart mid-answer, `tail` exits 3 naming the cursor of the new answer, or
    with `--on-restart final` prints only the final answer."""
    drop_once = {"simulator": {"fault": "disconnect", "after": 3, "fault_times": 1}}
    async with Redis.from_url(settings.redis_url) as redis, StreamQ(redis, settings) as sq:
        job = await sq.enqueue_chat("restart me", job_id="cli-restart", extra_body=drop_once)
        result = await job.result()
    assert result.attempt == 2
    expected = simulated_text(chat_messages("restart me"))

    code, out, err = await run_cli(settings, "tail", "cli-restart")
    assert code == 3
    assert expected.startswith(out)
    assert out != expected
    follow = err.split("its new answer: ")[1].split()
    code, out, _ = await run_cli(settings, *follow[1:])
    assert (code, out) == (0, expected + "\n")

    code, out, _ = await run_cli(settings, "tail", "cli-restart", "--on-restart", "final")
    assert (code, out) == (0, expected + "\n")


async def test_a_closed_stdout_pipe_ends_quietly(settings: Settings, worker: None) -> None:
    """`streamq tail ID --json | head -2`: once the reader has its lines and goes, tail stops
    with 0 and says nothing (no "Broken pipe", nothing blamed on Redis)."""
    slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 200}}
    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        job = await sq.enqueue_chat("pipe me", extra_body=slow)
    read_end, write_end = os.pipe()
    tail = await start_cli(settings_environment(settings), "tail", job.id, "--json",
                           stdout=write_end)  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:  # what `head -2` does: two lines, then exit
        first_two = [await asyncio.to_thread(pipe.readline) for _ in range(2)]
    _, err = await asyncio.wait_for(tail.communicate(), STOP_TIMEOUT)
    assert json.loads(first_two[0])["type"] == "start"
    assert (tail.returncode, err.decode()) == (0, "")


async def test_a_busy_port_is_one_line_naming_it(settings: Settings) -> None:
    """`simulate` and `serve` on a port in use: exit 2, one line naming the port and --port,
    no traceback and no word about Redis."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in (["simulate"], ["serve", "--open"], ["serve", "--demo"]):
            code, _, err = await run_cli(settings, *command, "--port", port)
            assert code == 2, err
            assert err == (
                f"streamq: error: cannot listen on 127.0.0.1:{port}: it is already in use; "
                "pick another port with --port N\n"
            )


async def test_version_help_descriptions_and_defaults(settings: Settings) -> None:
    """`--version` prints the version; every command's --help opens with a description line;
    --host and --port show their defaults."""
    code, out, _ = await run_cli(settings, "--version")
    assert (code, out) == (0, f"streamq {__version__}\n")
    for command in COMMANDS:
        code, out, _ = await run_cli(settings, command, "--help")
        assert code == 0
        description = out.split("\n\n")[1]
        assert description[0].isupper(), (command, out)
        assert description.rstrip().endswith("."), (command, out)
    for command, port in (("simulate", 8000), ("serve", 8080)):
        _, out, _ = await run_cli(settings, command, "--help")
        assert re.search(r"--host HOST +default: 127\.0\.0\.1\n", out), out
        assert re.search(rf"--port PORT +default: {port}\n", out), out


async def test_the_readme_shows_the_real_help(settings: Settings) -> None:
    """The README's `streamq --help` block is what `streamq --help` prints (80 columns)."""
    env = {**settings_environment(settings), "COLUMNS": "80"}
    code, out, _ = await run_cli(settings, "--help", env=env)
    assert code == 0
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("$ streamq --help\n", 1)[1].split("\n$ ", 1)[0]
    assert shown.rstrip() == out.rstrip(), (
        "regenerate the README's block: COLUMNS=80 streamq --help"
    )
    assert set(COMMANDS) <= set(re.findall(r"^    (\w+) ", out, flags=re.M))


@pytest.mark.usefixtures("worker")
async def test_inspect_is_readable_and_json_stays(settings: Settings) -> None:
    """`inspect` prints aligned lines with dates and seconds, not dicts and epoch floats;
    `--json` keeps the machine form."""
    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        job = await sq.enqueue_chat("inspect me", job_id="cli-inspect")
        await job.result()
    code, out, _ = await run_cli(settings, "inspect", job.id)
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith(" "))
    assert lines["state"] == "done"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \(\d+s ago\)", lines["started"])
    assert re.fullmatch(r"\d+\.\d{3}s after the start", lines["first"].split(None, 1)[1])
    assert "{" not in out
    assert re.search(r"^  #1 +on worker \S+$", out, flags=re.M)
    code, out, _ = await run_cli(settings, "inspect", job.id, "--json")
    data = json.loads(out)
    assert data["attempts"][0]["attempt"] == 1
    assert isinstance(data["started_at"], float)


async def test_an_empty_prompt_is_refused(settings: Settings, redis: Redis) -> None:
    """`enqueue ""` (or only blanks) exits 2 saying so, and queues nothing."""
    for prompt in ("", "  \n"):
        code, out, err = await run_cli(settings, "enqueue", prompt)
        assert (code, out) == (2, "")
        assert "the prompt is empty" in err
    assert await redis.zcard(settings.queue_name) == 0


@pytest.mark.usefixtures("worker")
async def test_enqueue_refuses_a_job_id_reused_for_another_prompt(settings: Settings) -> None:
    """The same --job-id and prompt: the same job; another prompt: exit 2 naming the conflict."""
    assert await run_cli(settings, "enqueue", "one", "--job-id", "cli-idem") == (
        0, "cli-idem\n", "",
    )  # fmt: skip
    assert (await run_cli(settings, "enqueue", "one", "--job-id", "cli-idem"))[:2] == (
        0, "cli-idem\n",
    )  # fmt: skip
    code, _, err = await run_cli(settings, "enqueue", "two", "--job-id", "cli-idem")
    assert code == 2
    assert "job id 'cli-idem' was already used for a different request" in err


async def test_a_misspelled_variable_warns_once_naming_the_right_one(settings: Settings) -> None:
    """STREAMQ_CONCURENCY is reported once, with the closest known name; the command runs."""
    env = {**settings_environment(settings), "STREAMQ_CONCURENCY": "4"}
    code, _, err = await run_cli(settings, "stats", env=env)
    assert code == 0
    warning = (
        "streamq: warning: STREAMQ_CONCURENCY is not a streamq setting and is ignored: "
        "did you mean STREAMQ_CONCURRENCY?\n"
    )
    assert err == warning


async def test_an_unreachable_upstream_is_named_in_the_error(settings: Settings) -> None:
    """ "Connection error." says which URL failed, and how."""
    port = free_port()
    env = settings_environment(settings)
    env |= {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "STREAMQ_MAX_ATTEMPTS": "1"}
    code, _, err = await run_cli(settings, "demo", "anyone there?", env=env)
    assert code == 1
    assert f"the request to http://127.0.0.1:{port}/v1/chat/completions failed" in err
    assert settings.openai_api_key is None or settings.openai_api_key not in err


async def test_ctrl_c_during_the_demo_ends_quietly_and_leaves_no_key_without_ttl(
    settings: Settings, redis: Redis
) -> None:
    """Ctrl-C mid-answer: exit 130, no ERROR or traceback, and every key the demo left in
    Redis expires by itself (its queue is gone)."""
    env = settings_environment(settings)
    env.pop("OPENAI_API_KEY")
    env.pop("OPENAI_BASE_URL")
    process = await start_cli(env, "demo", "Interrupt me")
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.read(1), STARTUP)  # the answer has begun
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT)
    assert process.returncode == 130, err
    assert b"ERROR" not in err
    assert b"Traceback" not in err
    assert [key async for key in redis.scan_iter(match="streamq:demo:*")] == []
    async for key in redis.scan_iter(match=f"{settings.key_prefix}*"):
        assert await redis.ttl(key) != -1, key


async def test_purge_says_what_it_removes_and_drain_drops_queued_jobs(
    settings: Settings, redis: Redis
) -> None:
    """`purge --help` says it never touches jobs; `drain` needs --yes, then cancels the
    queued jobs (their readers see `cancelled`) and empties the queue."""
    _, out, _ = await run_cli(settings, "purge", "--help")
    assert "never touches queued or running jobs" in " ".join(out.split())
    assert "streamq drain" in out
    idle = settings.replace(queue_name=settings.queue_name + ":drain")
    env = settings_environment(idle)
    async with StreamQ.from_url(settings.redis_url, idle) as sq:
        jobs = [await sq.enqueue_chat(f"queued {i}") for i in range(3)]
        code, out, err = await run_cli(idle, "drain", env=env)
        assert (code, out) == (2, f"would cancel 3 queued job(s) of queue {idle.queue_name!r}\n")
        assert "add --yes" in err
        assert await redis.zcard(idle.queue_name) == 3
        code, out, _ = await run_cli(idle, "drain", "--yes", "--json", env=env)
        assert code == 0
        assert json.loads(out) == {"dry_run": False, "cancelled": 3, "cancelling": 0}
        assert await redis.zcard(idle.queue_name) == 0
        for job in jobs:
            assert (await job.status()).state == "cancelled"


async def test_dead_workers_age_out_of_the_index(settings: Settings, redis: Redis) -> None:
    """A worker that died without withdrawing leaves the index at the next heartbeat of a live
    one, and the index expires once no worker beats."""
    keys = Keys(settings.key_prefix)
    dead = WorkerPresence("dead", "host", 1, "0", settings.queue_name, 1, 0, 0.0)
    live = WorkerPresence("live", "host", 2, "0", settings.queue_name, 1, 0, 0.0)
    await announce(redis, keys, dead, ttl_ms=50)

    async def expired() -> bool:
        return not await redis.exists(keys.worker("dead"))

    await poll_until(expired, STARTUP, "the dead worker's presence to expire")
    await announce(redis, keys, live, ttl_ms=60_000)
    assert await redis.zrange(keys.workers(), 0, -1) == [b"live"]
    assert 0 < await redis.pttl(keys.workers()) <= 60_000
