"""The real parts of the compat matrix: third-party servers as subprocesses, and doors.

A door is what a client of streamq talks to: the gateway (``POST /v1/chat/completions``) with a
real worker process behind it, whose upstream is the simulator or a third-party server.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis as redis_lib

from streamq import Settings
from streamq.dev.local_redis import free_port
from streamq.gateway import GatewayConfig, create_app
from tests.compat.clients import Client, Driver, OpenAIPython, driver, node_driver, python_driver
from tests.harness.gateway import GatewayThread
from tests.harness.processes import exited, stop, worker_processes
from tests.harness.waiting import WaitTimeout, poll_until_sync

ROOT = Path(__file__).parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
SIMULATOR_MODELS = ("gpt-4o-mini",)  # any other model is a 404 from the simulator
AIMOCK_MODEL = "aimock-model"
MOCK_LLM_MODEL = "mock-llm-model"
NODE_BIN = ROOT / "compat" / "node_modules" / ".bin"
COMPAT_BIN = ROOT / ".venv-compat" / "bin"
LOGS = ROOT / "test-artifacts" / "compat"
TOKEN = "compat-matrix-token-0000000001"
UPSTREAM_KEY = "sk-compat-upstream-key"
MISSING = "run `make compat`: it installs compat/node_modules and .venv-compat first"


def answers(url: str) -> bool:
    """Whether ``url`` answers 200."""
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except (OSError, urllib.error.HTTPError):
        return False
    return True


def log_file(name: str) -> Path:
    """Where the output of part ``name`` goes (kept for a failing run's post-mortem)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{name}.log"


class ServerProcess:
    """A server subprocess on a free loopback port; ``wait_ready`` awaits its health URL.

    Starting and waiting are apart so that a slow starter (the LiteLLM proxy) boots while
    other tests run.
    """

    def __init__(
        self, name: str, argv: Sequence[str], health: str, port: int, env: dict[str, str]
    ) -> None:
        self.name = name
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.health = self.origin + health
        self.log = log_file(name)
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                list(argv), stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, **env},
            )  # fmt: skip
        self._ready = False

    def wait_ready(self, timeout: float = 120) -> str:
        """The server's origin, once its health URL answers 200 (the process's log if it ends)."""
        if not self._ready:
            try:
                poll_until_sync(
                    functools.partial(answers, self.health), timeout, f"{self.name} to answer",
                    interval=0.05, give_up=functools.partial(exited, self.process),
                )  # fmt: skip
            except WaitTimeout as exc:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{exc}:\n{tail}") from None
            self._ready = True
        return self.origin

    def stop(self) -> None:
        stop(self.process)


def aimock(name: str, fixtures: Path, *args: str) -> ServerProcess:
    """@copilotkit/aimock serving ``fixtures`` (a file or a directory)."""
    llmock = NODE_BIN / "llmock"
    assert llmock.exists(), MISSING
    port = free_port()
    argv = [str(llmock), "--host", "127.0.0.1", "--port", str(port), "--fixtures", str(fixtures),
            "--log-level", "warn", *args]  # fmt: skip
    return ServerProcess(name, argv, "/health", port, {})


def mock_llm(name: str, config: Path) -> ServerProcess:
    """@dwmkerr/mock-llm with the rules of ``config``."""
    binary = NODE_BIN / "mock-llm"
    assert binary.exists(), MISSING
    port = free_port()
    env = {"HOST": "127.0.0.1", "PORT": str(port)}
    return ServerProcess(name, [str(binary), "--config", str(config)], "/health", port, env)


LITELLM_MASTER_KEY = "sk-litellm-compat-master-key-0123456789abcdef"


def litellm_proxy(name: str, upstream: str, model: str, workdir: Path) -> ServerProcess:
    """The LiteLLM proxy (``litellm[proxy]`` in .venv-compat) routing ``model`` to ``upstream``
    (an OpenAI-compatible base URL). Clients send LITELLM_MASTER_KEY as their API key."""
    binary = COMPAT_BIN / "litellm"
    assert binary.exists(), MISSING
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream}\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        # No retries or cooldowns of its own: after one failure (the error cells) the proxy
        # would refuse every request for 5 s ("No deployments available").
        "router_settings:\n"
        "  num_retries: 0\n"
        "  disable_cooldowns: true\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
    )
    argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    # The model price list ships in the package: no download at start.
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "WARNING"}
    return ServerProcess(name, argv, "/health/liveliness", port, env)


@dataclass(frozen=True)
class Door:
    """A gateway at ``base_url`` (``.../v1``) with a real worker process behind it."""

    name: str
    base_url: str
    origin: str
    api_key: str
    settings: Settings


@contextlib.contextmanager
def door(
    name: str, redis_url: str, upstream: str, model: str, api_key: str, upstream_api: str = "chat"
) -> Iterator[Door]:
    """The gateway and one worker process for ``upstream`` (an OpenAI-compatible base URL)
    speaking ``upstream_api`` to it, on a queue and key prefix of their own, deleted
    afterwards."""
    scope = f"streamq-compat-{name}-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=redis_url,
        openai_api_key=api_key,
        openai_base_url=upstream,
        openai_model=model,
        queue_name=f"{scope}:queue",
        key_prefix=scope,
        poll_interval=0.01,
        read_timeout=30,
        upstream_api=upstream_api,
    )
    config = GatewayConfig(tokens={TOKEN: "compat"}, rate_limit=None)
    try:
        with (
            worker_processes(settings, 1, log_dir=LOGS / f"worker-{name}"),
            GatewayThread(create_app(settings, config)) as gateway,
        ):
            yield Door(name, f"{gateway.url}/v1", gateway.url, TOKEN, settings)
    finally:
        with redis_lib.Redis.from_url(redis_url) as client:
            keys = list(client.scan_iter(match=f"{scope}*", count=1000))
            if keys:
                client.delete(*keys)


class Parts:
    """The session's servers and client drivers, each started on first use (or early, by
    conftest's ``_start_early``) and stopped at the end of the session."""

    def __init__(self, stack: contextlib.ExitStack, workdir: Path) -> None:
        self.stack = stack
        self.workdir = workdir
        self.servers: dict[str, ServerProcess] = {}
        self.drivers: dict[str, Driver] = {}
        self.factories: dict[str, Callable[[], ServerProcess]] = {
            # One aimock per server row: its sequenced (fault) fixtures count per process.
            "aimock": lambda: aimock("aimock", FIXTURES / "matrix.json"),
            "aimock-litellm": lambda: aimock("aimock-litellm", FIXTURES / "matrix.json"),
            "litellm-proxy": lambda: litellm_proxy(
                "litellm-proxy", self.server("aimock-litellm") + "/v1", AIMOCK_MODEL, workdir
            ),
            "mock-llm": lambda: mock_llm("mock-llm", FIXTURES / "mock-llm.yaml"),
        }
        self.driver_argv = {
            "openai-node": node_driver("openai_node.mjs"),
            "vercel-ai": node_driver("vercel_ai.mjs"),
            "langchain": python_driver("langchain_client.py"),
            "litellm": python_driver("litellm_client.py"),
        }

    def start(self, name: str) -> None:
        """Start part ``name`` (a server or a driver) if it is not running yet."""
        if name in self.driver_argv:
            if name not in self.drivers:
                log = log_file(f"driver-{name}")
                log.write_bytes(b"")
                argv = self.driver_argv[name]
                self.drivers[name] = self.stack.enter_context(driver(name, argv, log))
        elif name not in self.servers:
            server = self.factories[name]()
            self.stack.callback(server.stop)
            self.servers[name] = server

    def server(self, name: str) -> str:
        """The origin of server ``name``, once it is ready."""
        self.start(name)
        return self.servers[name].wait_ready()

    def client(self, name: str) -> Client:
        if name == "openai-py":
            return OpenAIPython()
        self.start(name)
        return self.drivers[name]
