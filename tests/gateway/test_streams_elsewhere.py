"""The gateway with job streams on a Redis of their own (``STREAMQ_STREAMS_URL``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from streamq import Settings
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import simulated_text
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread


@pytest.fixture
def split_settings(settings: Settings) -> Iterator[Settings]:
    """The test's settings with streams on a throwaway redis-server of their own."""
    with LocalRedis() as streams:
        yield settings.replace(streams_url=streams.url)


async def test_resuming_reads_the_cursor_where_the_streams_live(split_settings: Settings) -> None:
    """A Last-Event-ID is checked against the streams' Redis, not the queue's: resuming a
    finished job's events after its first one gives the rest."""
    app = create_app(split_settings, GatewayConfig(tokens=TOKENS, keepalive=0.2))
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    with GatewayThread(app, worker=split_settings) as gateway:
        async with httpx2.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
            created = await http.post("/v1/jobs", json={"messages": chat_messages("elsewhere")})
            job_id = created.json()["id"]
            everything = await http.get(f"/v1/jobs/{job_id}/events")
            ids = [line[4:] for line in everything.text.splitlines() if line.startswith("id: ")]
            rest = await http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": ids[0]})
    assert rest.status_code == 200
    resumed = [line[4:] for line in rest.text.splitlines() if line.startswith("id: ")]
    assert resumed == ids[1:]
    expected = simulated_text(chat_messages("elsewhere"))
    assert expected.split()[0] in rest.text
