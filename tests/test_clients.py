"""The worker's OpenAI clients: streams spread over small connection pools."""

from __future__ import annotations

from openai import AsyncOpenAI

from streamq.worker.openai_pool import ClientPool


def make_client() -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-test-not-a-real-key", base_url="http://127.0.0.1:9/v1")


async def test_streams_fill_the_first_client_with_room_before_a_new_one() -> None:
    """Two streams per client: a third stream gets a second client; freed room is reused."""
    pool = ClientPool(make_client, per_client=2)
    with pool.lease() as first, pool.lease() as second, pool.lease() as third:
        assert first is second
        assert third is not first
    with pool.lease() as again:
        assert again is first
    assert pool.clients == 2
    await pool.aclose()
    assert pool.clients == 0


async def test_warm_makes_the_first_client_once() -> None:
    """warm() builds a client at start-up (a bad configuration fails there), and only one."""
    pool = ClientPool(make_client)
    pool.warm()
    pool.warm()
    assert pool.clients == 1
    await pool.aclose()
