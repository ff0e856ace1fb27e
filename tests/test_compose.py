"""Static checks of the deployment files: docker-compose.yml, Dockerfile and .env.example."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import validators

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"

# Something shaped like a real OpenAI key; "sk-simulator" and similar placeholders are fine.
REAL_LOOKING_KEY = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
# ${VAR}, ${VAR:-default}, ${VAR?err}, ... but not the escaped $${VAR}.
INTERPOLATED_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _mapping(value: object, what: str) -> dict[str, Any]:
    assert isinstance(value, dict), f"{what} should be a mapping, got {type(value).__name__}"
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yml (YAML anchors and merge keys resolved)."""
    return _mapping(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), "docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of docker-compose.yml, by name."""
    raw = _mapping(compose.get("services"), "services")
    return {name: _mapping(spec, f"service {name!r}") for name, spec in raw.items()}


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's `environment`, in either the mapping or the list form."""
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {
        str(key): None if value is None else str(value)
        for key, value in _mapping(env, "env").items()
    }


def _command(service: dict[str, Any]) -> list[str]:
    """A service's `command` as an argument list (the string form is shell-split)."""
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"command should be a string or a list, got {command!r}"
    return [str(arg) for arg in command]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def test_compose_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    """The Compose Specification dropped the top-level `version:` key."""
    assert "version" not in compose


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    """redis, simulator, worker and producer are all defined."""
    assert {"redis", "simulator", "worker", "producer"} <= services.keys()


def test_redis_has_healthcheck_and_persistence(services: dict[str, dict[str, Any]]) -> None:
    """redis pings itself for health and runs with AOF persistence (`--appendonly yes`)."""
    redis = services["redis"]
    healthcheck = _mapping(redis.get("healthcheck"), "redis healthcheck")
    test = healthcheck.get("test")
    test_text = " ".join(test) if isinstance(test, list) else str(test)
    assert "redis-cli" in test_text
    assert "ping" in test_text
    assert healthcheck.get("disable") is not True
    command = " ".join(_command(redis))
    assert "--appendonly yes" in command


def test_redis_data_is_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """redis keeps /data on a top-level named volume, so the AOF survives `down`/`up`."""
    volumes = services["redis"].get("volumes")
    assert isinstance(volumes, list)
    declared = _mapping(compose.get("volumes"), "top-level volumes")
    mounts = [
        (v.partition(":")[0], v.partition(":")[2].split(":")[0])
        if isinstance(v, str)
        else (v.get("source"), v.get("target"))
        for v in volumes
    ]
    assert any(source in declared and target == "/data" for source, target in mounts)


def test_worker_waits_for_healthy_redis(services: dict[str, dict[str, Any]]) -> None:
    """worker depends on redis with `condition: service_healthy`."""
    depends_on = _mapping(services["worker"].get("depends_on"), "worker depends_on")
    redis = _mapping(depends_on.get("redis"), "worker depends_on redis")
    assert redis.get("condition") == "service_healthy"


def test_worker_and_producer_commands(services: dict[str, dict[str, Any]]) -> None:
    """worker runs `worker`; producer runs `enqueue PROMPT ... --follow`."""
    assert _command(services["worker"]) == ["worker"]
    producer = _command(services["producer"])
    assert producer[0] == "enqueue"
    assert len(producer) >= 2
    assert not producer[1].startswith("-"), "the prompt should come right after `enqueue`"
    assert "--follow" in producer[2:]


@pytest.mark.parametrize("name", ["worker", "producer"])
def test_redis_url_points_at_redis_service(services: dict[str, dict[str, Any]], name: str) -> None:
    """REDIS_URL in worker and producer points at the compose `redis` service."""
    url = _environment(services[name]).get("REDIS_URL")
    assert url, f"{name} does not set REDIS_URL"
    parts = urlsplit(url)
    assert parts.scheme in {"redis", "rediss"}
    assert parts.hostname == "redis"
    assert parts.hostname in services


def test_worker_follows_env_and_falls_back_to_the_simulator(
    services: dict[str, dict[str, Any]],
) -> None:
    """The key and base URL from .env (or the shell) reach the workers as they are; only with
    neither set does the entrypoint point them at the bundled simulator."""
    worker = services["worker"]
    env = _environment(worker)
    assert env.get("OPENAI_BASE_URL") == "${OPENAI_BASE_URL:-}"
    assert env.get("OPENAI_API_KEY") == "${OPENAI_API_KEY:-}"
    assert "STREAMQ_CONCURRENCY" in env
    shell, flag, script, name = worker["entrypoint"]
    assert (shell, flag, name) == ("/bin/sh", "-c", "streamq")
    fallback = 'if [ -z "$${OPENAI_API_KEY}$${OPENAI_BASE_URL}" ]; then'
    assert script.startswith(fallback)
    assert "export OPENAI_BASE_URL=http://simulator:8000/v1" in script
    assert script.rstrip().endswith('exec streamq "$$@"')
    depends_on = _mapping(worker.get("depends_on"), "worker depends_on")
    assert "simulator" in depends_on


def test_worker_entrypoint_picks_the_upstream_as_documented(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The entrypoint script, run by a real /bin/sh, keeps a real key (no simulator) and
    falls back to the simulator only without key and base URL."""
    _, flag, script, name = services["worker"]["entrypoint"]
    script = script.replace("$$", "$").replace("exec streamq", "exec env")  # compose's escaping
    cases = {
        ("sk-real", ""): ("sk-real", ""),
        ("", "http://vllm:8000/v1"): ("", "http://vllm:8000/v1"),
        ("", ""): ("sk-simulator", "http://simulator:8000/v1"),
    }
    for (key, url), expected in cases.items():
        env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": key, "OPENAI_BASE_URL": url}
        done = subprocess.run(
            ["/bin/sh", flag, script, name], env=env, capture_output=True, text=True, check=True
        )
        seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        assert (seen["OPENAI_API_KEY"], seen["OPENAI_BASE_URL"]) == expected
        assert ("simulator" in done.stderr) is (expected[0] == "sk-simulator")


def test_gateway_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    """The gateway is healthy while it answers HTTP on its port and Redis answers it."""
    check = _mapping(services["gateway"].get("healthcheck"), "gateway healthcheck")
    test = " ".join(check["test"])
    assert "http://127.0.0.1:8080/" in test
    assert "streamq health" in test


def test_the_build_backend_is_pinned_like_the_rest() -> None:
    """The image builds the wheel with hatchling from requirements-build.lock (hash-checked,
    the versions of requirements-dev.lock) and --no-build-isolation: nothing unpinned."""
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    assert any("--require-hashes -r requirements-build.lock" in run for run in runs), (
        "no hash-checked install of requirements-build.lock"
    )
    wheel = [run for run in runs if "pip wheel" in run]
    assert wheel
    assert all("--no-build-isolation" in run for run in wheel)
    build = _pins(ROOT / "requirements-build.lock")
    assert "hatchling" in build
    assert build.items() <= _pins(ROOT / "requirements-dev.lock").items()
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert [re.split(r"[<>=! ]", req)[0] for req in backend] == ["hatchling"]


def _pins(lock: Path) -> dict[str, tuple[str, ...]]:
    """``name -> (version, hashes...)`` of a hash-pinned lock file."""
    pins: dict[str, tuple[str, ...]] = {}
    for block in re.findall(r"^([\w.-]+==\S+)((?:\s*\\\n\s+--hash=\S+)+)", lock.read_text(), re.M):
        name, version = block[0].split("==")
        pins[name.lower()] = (version, *sorted(re.findall(r"--hash=(\S+)", block[1])))
    return pins


@pytest.mark.parametrize("path", [COMPOSE_FILE, DOCKERFILE, DOCKERIGNORE])
def test_no_real_looking_api_key(path: Path) -> None:
    """No literal that looks like a real OpenAI key (`sk-` and 20+ more characters)."""
    assert not REAL_LOOKING_KEY.findall(path.read_text(encoding="utf-8"))


def test_worker_can_scale(services: dict[str, dict[str, Any]]) -> None:
    """worker has no container_name and no host ports, and its replica count is a variable."""
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "network_mode" not in worker
    deploy = _mapping(worker.get("deploy"), "worker deploy")
    assert str(deploy.get("replicas", "")).startswith("${WORKERS")


def test_worker_gets_time_to_drain(services: dict[str, dict[str, Any]]) -> None:
    """worker restarts unless stopped and has a stop grace period of 30s or more."""
    worker = services["worker"]
    assert worker.get("restart") == "unless-stopped"
    grace = re.fullmatch(r"(\d+)s", str(worker.get("stop_grace_period", "")))
    assert grace, "stop_grace_period should be given in seconds, e.g. 60s"
    assert int(grace.group(1)) >= 30


def test_env_file_is_optional(services: dict[str, dict[str, Any]]) -> None:
    """Every env_file entry uses the long syntax with `required: false`, so .env is optional."""
    entries = [
        entry for service in services.values() for entry in service.get("env_file", None) or []
    ]
    assert entries, "expected the worker to read an optional .env"
    for entry in entries:
        assert isinstance(entry, dict), f"use the long syntax for env_file {entry!r}"
        assert entry.get("required") is False


def test_compose_matches_compose_spec_schema(compose: dict[str, Any]) -> None:
    """docker-compose.yml is valid against the vendored Compose Specification JSON schema."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.path))
    messages = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    assert not messages, "\n".join(messages)


def test_compose_schema_rejects_unknown_keys() -> None:
    """The vendored schema is not vacuous: a misspelt service key fails validation."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = validators.validator_for(schema)(schema)
    assert validator.is_valid({"services": {"worker": {"image": "streamq:local"}}})
    assert not validator.is_valid({"services": {"worker": {"imagee": "streamq:local"}}})
    assert not validator.is_valid({"services": {"worker": {"deploy": {"replicas": [2]}}}})


def test_dockerfile_entrypoint_is_streamq() -> None:
    """The image's ENTRYPOINT is the streamq console script and its default CMD is worker."""
    instructions = _dockerfile_instructions()
    entrypoints = [json.loads(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert entrypoints[-1] == ["streamq"]
    cmds = [json.loads(args) for keyword, args in instructions if keyword == "CMD"]
    assert cmds
    assert cmds[-1] == ["worker"]


def test_dockerfile_installs_locked_dependencies_with_hashes() -> None:
    """Dependencies come from requirements.lock with --require-hashes; the package --no-deps."""
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    locked = [
        run
        for run in runs
        if "--require-hashes" in run and re.search(r"(-r|--requirement)[ =]requirements\.lock", run)
    ]
    assert locked, "no `pip install --require-hashes -r requirements.lock`"
    assert all("--no-cache-dir" in run for run in locked)
    assert any("--no-deps" in run for run in runs), "the package should be installed --no-deps"


def test_dockerfile_runs_unprivileged() -> None:
    """The final stage switches to a non-root user, stops with SIGTERM and runs unbuffered."""
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final = instructions[last_from:]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage never sets USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    assert any(keyword == "ENV" and "PYTHONUNBUFFERED=1" in args for keyword, args in instructions)
    assert "python:3.11-slim" in DOCKERFILE.read_text(encoding="utf-8")


def test_compose_variables_are_documented() -> None:
    """Every variable docker-compose.yml reads from the host is mentioned in .env.example."""
    # Both ${VAR} interpolations and pass-through `environment` keys (no value) count;
    # WORKERS* (a compose-only knob, not a streamq setting) is exempt.
    assert ENV_EXAMPLE.is_file(), ".env.example is missing"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    services = _mapping(_mapping(yaml.safe_load(text), "compose").get("services"), "services")
    passed_through = {
        key
        for spec in services.values()
        for key, value in _environment(_mapping(spec, "service")).items()
        if value is None
    }
    variables = set(INTERPOLATED_VAR.findall(text)) | passed_through
    documented = ENV_EXAMPLE.read_text(encoding="utf-8")
    missing = sorted(
        name
        for name in variables
        if not name.startswith("WORKERS") and not re.search(rf"\b{re.escape(name)}\b", documented)
    )
    assert not missing, f"not documented in .env.example: {', '.join(missing)}"
