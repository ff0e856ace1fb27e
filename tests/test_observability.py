"""Static checks of the observability profile: the Grafana dashboard, its provisioning, the
Prometheus config and their place in docker-compose.yml. Every PromQL query must name a metric
streamq really exports: the names come from the metrics themselves, created and listed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from jsonschema import validators
from prometheus_client import REGISTRY

from streamq import Settings
from streamq.core import _prometheus, metrics
from streamq.dev.local_redis import free_port
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.waiting import WaitTimeout, poll_until

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamq.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamq.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
PROFILE = "observability"
PROMETHEUS_BIN = shutil.which("prometheus")
METRIC = re.compile(r"\bstreamq_[a-z0-9_]+")
# What the issue asks the board to show, each by the metric that measures it.
WANTED = {
    "queue wait": "streamq_queue_wait_seconds_bucket",
    "TTFT": "streamq_time_to_first_token_seconds_bucket",
    "tokens/s": "streamq_tokens_total",
    "in-flight": "streamq_streams_in_flight",
    "outcomes": "streamq_jobs_total",
    "retries by code": "streamq_retries_total",
    "publish lag": "streamq_publish_lag_seconds_bucket",
    "reader lag": "streamq_reader_lag_seconds_bucket",
    "admission waits": "streamq_admission_wait_seconds_bucket",
}
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def exported_series() -> set[str]:
    """Every series name streamq's metrics expose, from the registry once they exist."""
    metrics.enable()
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("streamq_"):
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} should hold a mapping"
    return data


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


def test_every_query_names_an_exported_metric(dashboard: dict[str, Any]) -> None:
    """No panel asks for a metric streamq does not export (a renamed metric breaks this)."""
    exported = exported_series()
    assert "streamq_jobs_total" in exported  # the registry listing itself works
    found = queries(dashboard)
    assert len(found) >= 20
    for title, expr in found:
        named = METRIC.findall(expr)
        assert named, f"{title!r}: {expr!r} names no streamq metric"
        unknown = set(named) - exported
        assert not unknown, f"{title!r}: {sorted(unknown)} are not exported"
        assert expr.count("(") == expr.count(")"), f"{title!r}: unbalanced {expr!r}"


def test_dashboard_shows_what_operators_asked_for(dashboard: dict[str, Any]) -> None:
    """Queue wait, TTFT, tokens/s, in-flight, outcomes, retries, lags and admission waits."""
    used = {name for _, expr in queries(dashboard) for name in METRIC.findall(expr)}
    missing = {what: metric for what, metric in WANTED.items() if metric not in used}
    assert not missing


def test_dashboard_is_well_formed(dashboard: dict[str, Any]) -> None:
    """Unique panel ids, panels inside Grafana's 24-column grid, the provisioned datasource."""
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "streamq"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"]


def test_prometheus_scrapes_every_worker_and_the_gateway() -> None:
    """Workers by the service's DNS name (every replica) on the port compose gives them; the
    gateway on the port it serves."""
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = load_yaml(COMPOSE)["services"]
    worker_port = services["worker"]["environment"]["STREAMQ_METRICS_PORT"]
    assert worker_port == "${STREAMQ_METRICS_PORT:-9100}"
    [discovery] = jobs["streamq-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["port"] == 9100
    [static] = jobs["streamq-gateway"]["static_configs"]
    command = services["gateway"]["command"]
    gateway_port = command[command.index("--port") + 1]
    assert static["targets"] == [f"gateway:{gateway_port}"]
    assert jobs["streamq-gateway"]["metrics_path"] == "/metrics"


def test_compose_profile_adds_prometheus_and_grafana() -> None:
    """Both services only under the profile, pinned images, loopback ports, files mounted
    where the configs expect them; the whole file still matches the Compose schema."""
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    profiled = {name for name, spec in services.items() if PROFILE in spec.get("profiles", [])}
    assert profiled == {"prometheus", "grafana"}
    for name in profiled:
        image = services[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: pin {image!r}"
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"])
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in services["grafana"]["volumes"]}
    provider_path = load_yaml(PROVIDERS)["providers"][0]["options"]["path"]
    assert mounts[provider_path] == DASHBOARD.parent
    assert mounts["/etc/grafana/provisioning"] == DATASOURCES.parents[1]
    [prometheus_mount] = services["prometheus"]["volumes"]
    assert ROOT / prometheus_mount.split(":")[0] == PROMETHEUS
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = validators.validator_for(schema)(schema)
    assert [error.message for error in validator.iter_errors(compose)] == []


@pytest.mark.slow
@pytest.mark.skipif(
    PROMETHEUS_BIN is None, reason="prometheus not installed (apt-get install prometheus)"
)
async def test_board_queries_run_on_a_real_prometheus(settings: Settings, tmp_path: Path) -> None:
    """A real Prometheus scrapes a worker and the gateway (the deploy config, targets pointed
    at loopback) while jobs run; every query of the board evaluates without error, and the
    ones for what these jobs exercise return series."""
    metrics.enable()
    limited = settings.replace(model_limits={"*": 5})
    metrics_port, prometheus_port = free_port(), free_port()
    server = _prometheus.serve(metrics_port, _prometheus.registry())
    app = create_app(limited, GatewayConfig(tokens=TOKENS))
    try:
        with GatewayThread(app, worker=limited) as gateway:
            gateway_target = gateway.url.removeprefix("http://")
            config = load_yaml(PROMETHEUS)
            config["global"]["scrape_interval"] = "1s"
            for job in config["scrape_configs"]:
                job.pop("dns_sd_configs", None)
                target = gateway_target if job["job_name"] == "streamq-gateway" else None
                job["static_configs"] = [{"targets": [target or f"127.0.0.1:{metrics_port}"]}]
                if target:  # the gateway's /metrics takes the API's tokens
                    job["authorization"] = {"credentials": TOKEN_A}
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
            assert PROMETHEUS_BIN is not None
            process = await asyncio.create_subprocess_exec(
                PROMETHEUS_BIN, f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await _run_jobs_and_query(gateway.url, f"http://127.0.0.1:{prometheus_port}")
            finally:
                process.terminate()
                await process.wait()
    finally:
        server.shutdown()
        server.server_close()


async def _run_jobs_and_query(gateway_url: str, prometheus_url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    body = {"messages": [{"role": "user", "content": "graph me"}], "max_tokens": 5}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    async with (
        httpx2.AsyncClient(base_url=gateway_url, headers=headers, timeout=30) as http,
        httpx2.AsyncClient(base_url=prometheus_url, timeout=10) as prom,
    ):

        async def results(query: str) -> list[Any]:
            answer = (await prom.get("/api/v1/query", params={"query": query})).json()
            assert answer["status"] == "success", (query, answer)
            found: list[Any] = answer["data"]["result"]
            return found

        async def scraped() -> bool:
            try:
                return len([r for r in await results("up") if r["value"][1] == "1"]) == 2
            except (httpx2.TransportError, ValueError):  # not up, or "Service Unavailable"
                return False

        await poll_until(scraped, 30, "Prometheus to scrape both targets")
        # Two rounds with a scrape between them, so that rate() has two samples.
        for done in (3, 6):
            for _ in range(3):
                job_id = (await http.post("/v1/jobs", json=body)).json()["id"]
                await http.get(f"/v1/jobs/{job_id}/events")  # the whole stream: reader lag

            async def counted(done: int = done) -> bool:
                found = await results("sum(streamq_jobs_total)")
                return bool(found) and float(found[0]["value"][1]) >= done

            await poll_until(counted, 30, f"Prometheus to scrape {done} finished jobs")
        empty: list[str] = []

        async def every_panel_answers() -> bool:
            empty.clear()
            for title, expr in queries(dashboard):
                if not await results(expr.replace("$__rate_interval", "1m")):
                    empty.append(title)
            return set(empty) <= allowed_empty

        # Nothing here fails or retries; everything else these jobs exercise shows up.
        allowed_empty = {"Failures per minute by code", "Retries per minute by code"}
        with contextlib.suppress(WaitTimeout):  # the assert below names the empty panels
            await poll_until(every_panel_answers, 60, "every panel's query to answer")
    assert set(empty) <= allowed_empty, empty
