"""The start gate: a worker starts only so many jobs at once, each letting the next one in
when its request goes upstream."""

from __future__ import annotations

import asyncio

from streamq import Delta, StreamQ
from streamq.core.settings import Settings
from streamq.worker.arq_worker import create_worker, running_worker
from streamq.worker.start_gate import StartGate, started
from tests.harness.waiting import poll_until

SLOW = {"simulator": {"tokens_per_second": 20, "reply_tokens": 40}}


async def test_at_most_limit_jobs_start_at_once_and_started_lets_the_next_in() -> None:
    """Five starts through a gate of two: never more than two inside; one that says it has
    started lets the next in before its block ends."""
    gate = StartGate(2)
    inside: list[int] = []
    proceed = [asyncio.Event() for _ in range(5)]

    async def job(i: int) -> None:
        async with gate.start():
            inside.append(gate.starting)
            if i == 0:
                started()  # the request went out: no longer starting
                started()  # twice gives back one slot only
            await proceed[i].wait()

    tasks = [asyncio.create_task(job(i)) for i in range(5)]
    await poll_until(lambda: len(inside) == 3, 5, "job 0's early release to let a third in")
    assert gate.starting == 2
    proceed[1].set()
    await poll_until(lambda: len(inside) == 4, 5, "a fourth start")
    for event in proceed:
        event.set()
    await asyncio.gather(*tasks)
    assert max(inside) <= 2
    assert gate.starting == 0


async def test_a_job_streaming_upstream_no_longer_holds_the_gate(
    sq: StreamQ, settings: Settings
) -> None:
    """With a gate of one, two slow jobs stream at the same time: the first gave its slot
    back when its request went upstream, not when it ended."""
    async with running_worker(settings) as worker:
        worker.start_gate = StartGate(1)
        first = await sq.enqueue_chat("one", extra_body=SLOW)
        async for event in first.events():
            if isinstance(event, Delta):
                break
        second = await sq.enqueue_chat("two", extra_body=SLOW)
        async for event in second.events():
            if isinstance(event, Delta):
                break
        assert (await first.status()).state == "running"  # the first is still streaming
        await asyncio.gather(first.result(timeout=30), second.result(timeout=30))
        assert worker.start_gate.starting == 0


async def test_the_gate_is_as_wide_as_the_setting(settings: Settings) -> None:
    """``STREAMQ_START_CONCURRENCY`` sets the worker's gate; the default is 8."""
    assert create_worker(Settings(), handle_signals=False).start_gate.limit == 8
    wide = settings.replace(start_concurrency=24)
    assert create_worker(wide, handle_signals=False).start_gate.limit == 24
