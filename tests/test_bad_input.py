"""Bad input never runs code, never kills a worker, and always gets a clear answer."""

from __future__ import annotations

import contextlib
import json
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from streamq import Error, InvalidRequest, JobFailed, Settings, StreamQ
from streamq.core.events import decode
from streamq.core.exceptions import EventDecodeError
from streamq.core.keys import Keys
from streamq.core.queue import JOB_FUNCTION, deserialize_job
from streamq.core.request import ChatRequest, chat_messages
from streamq.dev.simulator import simulated_text

pytestmark = pytest.mark.usefixtures("worker")

values = json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_request_decoder_fuzz_bytes(raw: bytes) -> None:
    """Any bytes either parse to a valid request or raise InvalidRequest, nothing else."""
    with contextlib.suppress(InvalidRequest):
        ChatRequest.from_json(raw, max_bytes=10_000)


@given(
    st.fixed_dictionaries(
        {"v": st.just(1)},
        optional={
            "model": json_values,
            "messages": st.lists(
                st.dictionaries(st.sampled_from(["role", "content"]), json_values)
            ),
            "params": json_values,
            "options": json_values,
            "extra": json_values,
        },
    )
)
@hypothesis_settings(suppress_health_check=[HealthCheck.too_slow])
def test_request_decoder_fuzz_json(body: dict[str, object]) -> None:
    """Any JSON request either validates or raises InvalidRequest with a message."""
    try:
        request = ChatRequest.from_json(json.dumps(body), max_bytes=100_000)
    except InvalidRequest as exc:
        message = str(exc)
        assert message
    else:
        assert request.messages


@given(
    st.text(max_size=20),
    st.dictionaries(st.sampled_from(["v", "type", "attempt", "seq", "data", "choice"]), st.text()),
)
def test_event_decoder_fuzz(cursor: str, fields: dict[str, str]) -> None:
    """Any entry either decodes to an event or raises EventDecodeError."""
    with contextlib.suppress(EventDecodeError):
        decode(cursor, fields)


def test_pickle_is_never_deserialized(tmp_path: Path) -> None:
    """The queue's deserializer is JSON: a pickle payload is rejected without running."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    with pytest.raises(ValueError, match=r"codec|Expecting|Extra|Invalid"):
        deserialize_job(pickle.dumps(Exploit()))
    assert not marker.exists()


async def put_raw_job(redis: Redis, settings: Settings, job_id: str, payload: bytes) -> None:
    """Write an arq job straight into Redis, bypassing the producer."""
    arq_id = Keys(settings.key_prefix).arq_job_id(job_id)
    await redis.set(f"arq:job:{arq_id}", payload, ex=60)
    await redis.zadd(settings.queue_name, {arq_id: 1})


async def test_garbage_and_pickle_on_the_queue_do_not_hurt_the_worker(
    sq: StreamQ, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """Raw bytes and a crafted pickle on the queue are rejected; the worker keeps serving."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    await put_raw_job(redis, settings, "garbage", b"\x80\x04\x95not-json")
    await put_raw_job(redis, settings, "pickled", pickle.dumps(Exploit()))
    await put_raw_job(redis, settings, "wrong-shape", json.dumps([1, 2, 3]).encode())
    job = await sq.enqueue_chat("still alive?")
    assert "".join([c async for c in job]) == simulated_text(chat_messages("still alive?"))
    assert not marker.exists()


def stored(**fields: object) -> bytes:
    """A stored request with one user message, plus ``fields``."""
    body = {"v": 1, "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8 JSON"),
        (b'{"v": 1, "messages": "hi"}', "messages must be"),
        (b'{"v": 1, "messages": [{"role": "user", "content": "hi"}], "evil": 1}', "unknown fields"),
        (
            b'{"v": 1, "messages": [{"role": "user", "content": "hi"}], "params": {"seed": 1.5}}',
            "seed",
        ),
        (
            b'{"v": 1, "messages": [{"role": "user", "content": "x"}], "params": {"api_key": 1}}',
            "cannot",
        ),
        (b'{"v": 2, "messages": []}', "version"),
        (
            b'{"v": 1, "messages": [{"role": "user", "content": "' + b"x" * 1_000_001 + b'"}]}',
            "limit",
        ),
    ],
)
async def test_requests_that_bypassed_the_producer_end_with_a_clear_error(
    redis: Redis, settings: Settings, payload: bytes, reason: str
) -> None:
    """The worker validates stored requests again: each bad one ends with `invalid_request`."""
    small = settings.replace(max_request_bytes=1000)
    async with StreamQ(redis, small) as sq:
        job_id = "raw-" + str(abs(hash(payload)))
        await redis.set(Keys(settings.key_prefix).request(job_id), payload)
        await sq._queue.enqueue_job(
            JOB_FUNCTION, _job_id=Keys(settings.key_prefix).arq_job_id(job_id)
        )
        with pytest.raises(JobFailed) as failed:
            await sq.job(job_id).result()
    assert failed.value.error.code == "invalid_request"
    assert reason in failed.value.error.message


async def test_an_arq_job_id_outside_the_prefix_is_rejected(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """An arq job whose id is not `<prefix>:<valid id>` is logged and dropped, not run."""
    await redis.set("arq:job:elsewhere:{bad}", json.dumps({"t": 1, "f": JOB_FUNCTION}), ex=60)
    await redis.zadd(settings.queue_name, {"elsewhere:{bad}": 1})
    job = await sq.enqueue_chat("after the bad id")
    assert (await job.result()).text == simulated_text(chat_messages("after the bad id"))
    await redis.delete("arq:job:elsewhere:{bad}")


@pytest.mark.parametrize("fault", ["bad_json", "bad_utf8"])
async def test_bad_upstream_bytes_end_the_job_with_an_error(sq: StreamQ, fault: str) -> None:
    """Invalid JSON or UTF-8 in the upstream's SSE ends the job with `upstream_protocol`."""
    job = await sq.enqueue_chat("garbled", extra_body={"simulator": {"fault": fault}})
    events = [e async for e in job.events()]
    assert isinstance(events[-1], Error)
    assert events[-1].code == "upstream_protocol"
