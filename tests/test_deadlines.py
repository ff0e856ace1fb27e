"""Deadlines: a total one per job and an idle one for an upstream that stops sending."""

from __future__ import annotations

import pytest

from streamq import Error, JobFailed, Reset, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text

pytestmark = pytest.mark.usefixtures("worker")


async def test_an_upstream_that_stalls_once_is_retried(sq: StreamQ) -> None:
    """No data for `idle_timeout` fails the attempt; the retry completes the job."""
    stall = {"fault": "stall", "after": 2, "fault_times": 1, "fault_key": "stall-once"}
    job = await sq.enqueue_chat("stall", idle_timeout=0.3, extra_body={"simulator": stall})
    result = await job.result()
    assert result.text == simulated_text(chat_messages("stall"))
    assert result.attempt == 2
    assert any(isinstance(e, Reset) for e in [e async for e in job.events()])


async def test_an_upstream_that_keeps_stalling_ends_with_timeout(sq: StreamQ) -> None:
    """When every attempt stalls, the job ends with `error` code `timeout`."""
    stall = {"fault": "stall", "after": 1}
    job = await sq.enqueue_chat("stuck", idle_timeout=0.2, extra_body={"simulator": stall})
    with pytest.raises(JobFailed) as failed:
        await job.result()
    assert failed.value.error.code == "timeout"
    assert failed.value.error.attempt == sq.settings.max_attempts


async def test_the_total_deadline_ends_the_job_without_retry(sq: StreamQ) -> None:
    """A job slower than its `deadline` ends with a non-retryable `timeout` on attempt 1."""
    slow = {"simulator": {"tokens_per_second": 10, "reply_tokens": 100}}
    job = await sq.enqueue_chat("too slow", deadline=0.5, extra_body=slow)
    events = [e async for e in job.events()]
    error = events[-1]
    assert isinstance(error, Error)
    assert (error.code, error.retryable, error.attempt) == ("timeout", False, 1)
    assert "deadline" in error.message
