"""The `streamq` command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.local_redis import free_port
from streamq.dev.simulator import simulated_demo_text, simulated_text
from tests.harness.processes import STOP_TIMEOUT, run_cli, settings_environment, start_cli
from tests.harness.redis_servers import blocked_in
from tests.harness.waiting import STARTUP, poll_until


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
