"""Compat matrix fixtures: third-party servers, client drivers and doors, started once per
session; and the matrix table printed (and written to test-artifacts/compat-matrix.md) at
the end of a session that ran any of its cells."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamq.dev.simulator import SimulatorConfig, SimulatorThread
from tests.compat import matrix, parts
from tests.compat.parts import (
    AIMOCK_MODEL,
    MOCK_LLM_MODEL,
    ROOT,
    SIMULATOR_MODELS,
    Door,
    Parts,
)

ARTIFACT = ROOT / "test-artifacts" / "compat-matrix.md"
RESULTS = pytest.StashKey[dict[tuple[str, str, str], matrix.Result]]()


@pytest.fixture(scope="session")
def compat_parts() -> Iterator[Parts]:
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        yield Parts(stack, Path(workdir))


@pytest.fixture(scope="session", autouse=True)
def _start_early(request: pytest.FixtureRequest, compat_parts: Parts) -> None:
    """Start the slow parts that this session's cells need (the LiteLLM proxy and the Python
    client drivers boot for seconds) before the first cell, so they boot while others run.
    A cell's parameters say what they need in a ``parts`` attribute."""
    needed: list[str] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        for value in callspec.params.values() if callspec else ():
            needed += [name for name in getattr(value, "parts", ()) if name not in needed]
    for name in needed:
        compat_parts.start(name)


def _simulator_door(
    redis_url: str, name: str, config: SimulatorConfig, upstream_api: str = "chat"
) -> Iterator[Door]:
    with (
        SimulatorThread(config) as simulator,
        parts.door(
            name, redis_url, simulator.base_url, SIMULATOR_MODELS[0], "sk-simulated", upstream_api
        ) as door,
    ):
        yield door


@pytest.fixture(scope="session")
def simulator_door(redis_url: str) -> Iterator[Door]:
    """The door with the simulator upstream: it knows only SIMULATOR_MODELS."""
    config = SimulatorConfig(models=SIMULATOR_MODELS, tokens_per_second=1000)
    yield from _simulator_door(redis_url, "simulator", config)


@pytest.fixture(scope="session")
def simulator_responses_door(redis_url: str) -> Iterator[Door]:
    """The simulator door whose worker asks the simulator's Responses API."""
    config = SimulatorConfig(models=SIMULATOR_MODELS, tokens_per_second=1000)
    yield from _simulator_door(redis_url, "simulator-responses", config, "responses")


@pytest.fixture(scope="session")
def restart_door(redis_url: str) -> Iterator[Door]:
    """The door with a simulator that drops the connection after 3 chunks, once per distinct
    conversation: the worker's first attempt dies mid-answer and its second one finishes."""
    config = SimulatorConfig(
        models=SIMULATOR_MODELS, tokens_per_second=1000, fault="disconnect", after=3, fault_times=1
    )
    yield from _simulator_door(redis_url, "restart", config)


@pytest.fixture(scope="session")
def aimock_door(redis_url: str, compat_parts: Parts) -> Iterator[Door]:
    upstream = compat_parts.server("aimock") + "/v1"
    with parts.door("aimock", redis_url, upstream, AIMOCK_MODEL, parts.UPSTREAM_KEY) as door:
        yield door


@pytest.fixture(scope="session")
def litellm_door(redis_url: str, compat_parts: Parts) -> Iterator[Door]:
    upstream = compat_parts.server("litellm-proxy") + "/v1"
    key = parts.LITELLM_MASTER_KEY
    with parts.door("litellm-proxy", redis_url, upstream, AIMOCK_MODEL, key) as door:
        yield door


@pytest.fixture(scope="session")
def aimock_responses_door(redis_url: str, compat_parts: Parts) -> Iterator[Door]:
    """aimock behind a worker that asks its /v1/responses."""
    upstream = compat_parts.server("aimock") + "/v1"
    with parts.door(
        "aimock-responses", redis_url, upstream, AIMOCK_MODEL, parts.UPSTREAM_KEY, "responses"
    ) as door:
        yield door


@pytest.fixture(scope="session")
def litellm_responses_door(redis_url: str, compat_parts: Parts) -> Iterator[Door]:
    """The LiteLLM proxy behind a worker that asks its /v1/responses (relayed to aimock's)."""
    upstream = compat_parts.server("litellm-proxy") + "/v1"
    key = parts.LITELLM_MASTER_KEY
    with parts.door(
        "litellm-responses", redis_url, upstream, AIMOCK_MODEL, key, "responses"
    ) as door:
        yield door


@pytest.fixture(scope="session")
def mock_llm_door(redis_url: str, compat_parts: Parts) -> Iterator[Door]:
    upstream = compat_parts.server("mock-llm") + "/v1"
    with parts.door("mock-llm", redis_url, upstream, MOCK_LLM_MODEL, parts.UPSTREAM_KEY) as door:
        yield door


# The table -------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{matrix.MARKER}(grid, row, column): a compat matrix cell")
    config.stash[RESULTS] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker(matrix.MARKER)
    if marker is not None:
        key = (str(marker.args[0]), str(marker.args[1]), str(marker.args[2]))
        label = _label(report)  # None for a setup or teardown that went well
        if label is not None:
            xfail = item.get_closest_marker("xfail")
            reason = xfail.kwargs.get("reason") if xfail and label != matrix.PASS else None
            item.config.stash[RESULTS][key] = (label, reason)
    return report


def _label(report: pytest.TestReport) -> str | None:
    if hasattr(report, "wasxfail"):
        return matrix.XFAIL if report.skipped else matrix.XPASS
    if report.failed:
        if report.when != "call":
            return matrix.ERROR
        return matrix.XPASS if "[XPASS(strict)]" in str(report.longrepr) else matrix.FAIL
    if report.skipped:
        return matrix.SKIP
    return matrix.PASS if report.when == "call" else None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, {})
    if not results:
        return
    ran = {grid for grid, _, _ in results}
    tables = [
        matrix.render(name, grid, results) for name, grid in matrix.GRIDS.items() if name in ran
    ]
    text = "## streamq compat matrix\n\n" + "\n".join(tables)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(text)
    terminalreporter.write_sep("=", "compat matrix")
    for line in text.splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(also in {ARTIFACT.relative_to(ROOT)})")
