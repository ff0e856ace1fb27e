"""`streamq serve` as a real process: the demo on a fresh machine, a clear error without the
gateway extra, and the allocator it runs on."""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from pathlib import Path

import httpx2

from streamq import Settings
from streamq.dev.local_redis import free_port
from tests.gateway.sse import frames, text_of
from tests.harness.processes import STOP_TIMEOUT, clean_environment, settings_environment, start_cli
from tests.harness.waiting import STARTUP


async def test_serve_demo_works_with_nothing_configured() -> None:
    """`streamq serve --demo` with no Redis and no upstream: its page and API answer."""
    port = free_port()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    env = clean_environment({"REDIS_URL": dead_redis})
    with tempfile.TemporaryDirectory() as cwd:
        serve = ("serve", "--demo", "--port", str(port))
        process = await start_cli(env, *serve, stdout=None, cwd=cwd)
        try:
            lines = await _until_serving(process)
            assert any("throwaway" in line for line in lines)
            assert any("simulator" in line for line in lines)
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert "streamq" in (await client.get("/")).text
                body = {"messages": [{"role": "user", "content": "hello"}]}
                job = (await client.post("/v1/jobs", json=body)).json()
                async with client.stream("GET", job["events_url"]) as response:
                    events = [f async for f in frames(response) if f.data]
            assert events[-1].event == "done"
            assert text_of(events)
        finally:
            process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    assert code in (0, 130)


async def _until_serving(process: asyncio.subprocess.Process) -> list[str]:
    """The lines `streamq serve` wrote to stderr up to the one saying it serves."""
    assert process.stderr is not None
    lines: list[str] = []
    while not any("gateway serving" in line for line in lines):
        line = await asyncio.wait_for(process.stderr.readline(), STARTUP)
        assert line, f"serve exited early: {lines}"
        lines.append(line.decode())
    return lines


async def test_serve_without_the_gateway_extra_says_how_to_get_it(settings: Settings) -> None:
    """Without starlette installed, `streamq serve` exits 2 naming the extra to install."""
    code = "import sys; sys.modules['starlette'] = None; from streamq.cli import main; "
    code += "sys.exit(main(['serve']))"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=settings_environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), STARTUP)
    assert process.returncode == 2
    assert "pip install 'streamq[gateway]'" in err.decode()


async def test_serve_without_tokens_refuses_to_run_open(settings: Settings) -> None:
    """No STREAMQ_GATEWAY_TOKENS and no --open: exit 2 explaining both ways out."""
    serve = ("serve", "--port", str(free_port()))
    process = await start_cli(settings_environment(settings), *serve, stdout=None)
    _, err = await asyncio.wait_for(process.communicate(), STARTUP)
    assert process.returncode == 2
    assert "STREAMQ_GATEWAY_TOKENS" in err.decode()
    assert "--open" in err.decode()


async def _allocator_when_serving(env: dict[str, str], *program: str) -> str:
    """Start `PROGRAM serve --open`; once it serves (under the pid it was started with), the
    PYTHONMALLOC of the program running there."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *program, "serve", "--open", "--port", str(port),
        env=env, cwd=tempfile.gettempdir(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _until_serving(process)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert "streamq" in (await client.get("/")).text
        import psutil  # type: ignore[import-untyped]  # (a dev requirement, not a runtime one)

        environ: dict[str, str] = psutil.Process(process.pid).environ()
        return environ.get("PYTHONMALLOC", "")
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


async def test_serve_runs_on_the_c_allocator_unless_told_otherwise(settings: Settings) -> None:
    """`streamq serve` (the installed command, or `python -m streamq`) runs itself again,
    same pid, with PYTHONMALLOC=malloc (so that the memory a crowd freed can go back); a
    PYTHONMALLOC already set is kept, and under `python -E`, which would ignore it, the
    process serves as it started."""
    env = settings_environment(settings)
    env.pop("PYTHONMALLOC", None)
    module = (sys.executable, "-m", "streamq")
    command = str(Path(sys.executable).with_name("streamq"))  # the venv's console script
    assert await _allocator_when_serving(env, command) == "malloc"
    assert await _allocator_when_serving(env, *module) == "malloc"
    assert await _allocator_when_serving({**env, "PYTHONMALLOC": "pymalloc"}, *module) == "pymalloc"
    assert await _allocator_when_serving(env, sys.executable, "-E", "-m", "streamq") == ""
