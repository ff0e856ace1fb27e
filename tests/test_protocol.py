"""The clients' sans-IO core: pure rules that both the async and the sync shell drive."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from streamq import (
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobRestarted,
    ReadTimeout,
    Reset,
    Settings,
    Start,
    ToolCallDelta,
)
from streamq.core.events import encode
from streamq.core.keys import Keys
from streamq.core.protocol import (
    MAX_BLOCK_SECONDS,
    JobStatus,
    ResultBuilder,
    StreamReader,
    cancel_call,
    ended_at_or_before,
    enqueue_call,
    lease_member,
    max_block,
    read_interrupted,
    stored_status,
    text_of,
    validated_job,
    with_lease,
)
from streamq.core.queue import JOB_FUNCTION
from streamq.worker.fleet import Run

SETTINGS = Settings(key_prefix="pfx", queue_name="pfx:queue", stream_ttl=600)
MESSAGES = [{"role": "user", "content": "hi"}]


def entry(event: Event, cursor: str, *, attempt: int = 1, seq: int = 0) -> tuple[bytes, Any]:
    """One entry as XREAD answers it: its id and its fields, all bytes."""
    fields = encode(event, attempt=attempt, seq=seq)
    return cursor.encode(), {k.encode(): v.encode() for k, v in fields.items()}


def reply(*entries: tuple[bytes, Any]) -> list[Any]:
    return [[b"pfx:{j}:events", list(entries)]]


def test_lease_member_is_what_the_worker_leases() -> None:
    """The status check reads the member the worker's run holds in the running set."""
    assert lease_member(3, "job-1") == "3:job-1"
    assert Run("job-1", 3).member == lease_member(3, "job-1")


def test_validated_job_gives_a_new_id_and_the_stored_request() -> None:
    """No id: a fresh hex one; the request carries the model, params and streamq's options."""
    options = {"deadline": 30.0, "idle_timeout": None, "buffered": True}
    job_id, raw = validated_job(SETTINGS, MESSAGES, "m", None, {"temperature": 0.5}, options)
    other_id, _ = validated_job(SETTINGS, MESSAGES, "m", None, {}, {})
    assert len(job_id) == 32
    assert int(job_id, 16) >= 0
    assert job_id != other_id
    stored = json.loads(raw)
    assert stored["model"] == "m"
    assert stored["messages"] == MESSAGES
    assert stored["params"] == {"temperature": 0.5}
    assert stored["options"]["deadline"] == 30.0
    assert stored["options"]["buffered"] is True


@pytest.mark.parametrize(
    ("messages", "job_id", "params"),
    [([], "ok", {}), (MESSAGES, "has space", {}), (MESSAGES, "ok", {"api_key": "sk-x"})],
)
def test_validated_job_refuses_bad_input(
    messages: list[dict[str, str]], job_id: str, params: dict[str, Any]
) -> None:
    """Bad messages, ids or parameters raise InvalidRequest, before any I/O could happen."""
    with pytest.raises(InvalidRequest):
        validated_job(SETTINGS, messages, None, job_id, params, {})


def test_enqueue_call_names_streamqs_and_arqs_keys() -> None:
    """KEYS: request, arq's job and result keys, the queue; ARGV ends with the wake channel."""
    keys, args = enqueue_call(SETTINGS, "job-1", '{"r": 1}', 1_700_000_000_000)
    assert keys == [
        "pfx:{job-1}:request",
        "arq:job:pfx:job-1",
        "arq:result:pfx:job-1",
        "pfx:queue",
    ]
    request, ttl, arq_id, envelope, _, now_ms, wake = args
    assert (request, ttl, arq_id, now_ms, wake) == (
        '{"r": 1}',
        600,
        "pfx:job-1",
        1_700_000_000_000,
        "pfx:queue:wake",
    )
    assert isinstance(envelope, bytes)
    body = json.loads(envelope)
    assert body["f"] == JOB_FUNCTION
    assert body["et"] == 1_700_000_000_000


def test_ended_at_or_before_needs_a_terminal_entry_not_after_the_cursor() -> None:
    """Only a terminal newest entry at or before the cursor means nothing is left to read."""
    done = [entry(Done(finish_reason="stop"), "5-1")]
    assert ended_at_or_before("5-1", done)
    assert ended_at_or_before("6-0", done)
    assert not ended_at_or_before("5-0", done)
    assert not ended_at_or_before("9-0", [entry(Delta(text="x"), "5-1")])
    assert not ended_at_or_before("9-0", [])


def test_read_interrupted_resumes_only_after_a_lost_link_or_an_unblock() -> None:
    """A dropped link or CLIENT UNBLOCK's error resumes the read; a data error does not."""
    assert read_interrupted(RedisConnectionError("gone"))
    assert read_interrupted(ResponseError("UNBLOCKED client unblocked via CLIENT UNBLOCK"))
    assert not read_interrupted(ResponseError("WRONGTYPE Operation against a key"))


def test_max_block_stays_under_the_clients_socket_timeout() -> None:
    """A socket timeout shortens each XREAD BLOCK to 80% of it; none leaves the 5 s default."""
    assert max_block(redis.Redis(socket_timeout=2)) == pytest.approx(1.6)
    assert max_block(redis.Redis(socket_timeout=60)) == MAX_BLOCK_SECONDS
    assert max_block(redis.Redis()) == MAX_BLOCK_SECONDS


def test_stream_reader_moves_its_cursor_and_stops_at_the_terminal_event() -> None:
    """Events come out decoded in order, the cursor follows them, nothing after the end."""
    reader = StreamReader("j", "pfx:{j}:events", "0-0", timeout=10, max_block=5)
    streams, block_ms = reader.next_read()
    assert streams == {"pfx:{j}:events": "0-0"}
    assert block_ms == 5000
    got = list(reader.received(reply(entry(Delta(text="a"), "1-0"), entry(Delta(text="b"), "2-0"))))
    assert [e.text for e in got if isinstance(e, Delta)] == ["a", "b"]
    assert reader.cursor == "2-0"
    assert not reader.ended
    assert reader.next_read()[0] == {"pfx:{j}:events": "2-0"}
    last = reply(entry(Done(finish_reason="stop"), "3-0"), entry(Delta(text="late"), "4-0"))
    assert [type(e) for e in reader.received(last)] == [Done]
    assert reader.ended
    assert reader.cursor == "3-0"


def test_stream_reader_backs_off_after_a_lost_link_and_reraises_other_errors() -> None:
    """Pauses double while the link stays down; an error of the job's data is raised."""
    reader = StreamReader("j", "k", "0-0", timeout=60, max_block=5)
    reader.next_read()
    assert reader.failed(RedisConnectionError()) == pytest.approx(0.05)
    assert reader.failed(RedisConnectionError()) == pytest.approx(0.1)
    wrong = ResponseError("WRONGTYPE")
    with pytest.raises(ResponseError) as caught:
        reader.failed(wrong)
    assert caught.value is wrong


def test_stream_reader_times_out_without_events() -> None:
    """A reader that has waited its whole timeout raises ReadTimeout instead of reading."""
    reader = StreamReader("j", "k", "0-0", timeout=0, max_block=5)
    with pytest.raises(ReadTimeout, match="no event from job 'j'"):
        reader.next_read()


def test_stored_status_and_lease() -> None:
    """The state hash says queued, running or ended; the lease says if the worker is alive."""
    assert stored_status({}) == JobStatus("queued", 0)
    assert stored_status({b"attempt": b"2", b"terminal": b"done"}) == JobStatus("done", 2)
    running = stored_status({b"attempt": b"2"})
    assert running == JobStatus("running", 2)
    alive = with_lease(running, expiry=10_500.0, redis_time=(10, 0))
    assert not alive.stalled
    assert alive.lease_remaining == pytest.approx(0.5)
    lapsed = with_lease(running, expiry=9_000.0, redis_time=(10, 0))
    assert lapsed.stalled
    assert lapsed.lease_remaining == pytest.approx(-1.0)
    assert with_lease(running, expiry=None, redis_time=(10, 0)).stalled


def test_cancel_call_carries_the_cancelled_entry() -> None:
    """The cancel script gets the job's state and stream, and the entry it may append."""
    keys, args = cancel_call(Keys("pfx"), "j", 600)
    assert keys == ["pfx:{j}:state", "pfx:{j}:events"]
    assert args[:3] == ["600", "pfx:cancel", "j"]
    fields = dict(zip(args[3::2], args[4::2], strict=True))
    assert fields["type"] == "cancelled"
    assert fields["attempt"] == "0"


def test_result_builder_keeps_only_the_final_attempt() -> None:
    """A reset discards the earlier attempt; tool call fragments join in index order."""
    builder = ResultBuilder()
    events: list[Event] = [
        Start(job_id="j", model="m"),
        Delta(text="stale"),
        Reset(reason="worker lost", attempt=2),
        Delta(text="Hel", attempt=2),
        Delta(text="lo", attempt=2),
        Delta(text="other", choice=1, attempt=2),
        ToolCallDelta(index=1, id="b", name="g", arguments="{}", attempt=2),
        ToolCallDelta(index=0, id="a", name="f", arguments='{"x"', attempt=2),
        ToolCallDelta(index=0, arguments=":1}", attempt=2),
    ]
    assert all(builder.take("j", event) is None for event in events)
    done = Done(finish_reason="stop", finish_reasons=["stop", "length"], attempt=2, cursor="9-0")
    result = builder.take("j", done)
    assert result is not None
    assert (result.text, result.attempt, result.cursor) == ("Hello", 2, "9-0")
    assert [c.finish_reason for c in result.choices] == ["stop", "length"]
    assert result.choices[1].text == "other"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("a", "f", '{"x":1}'),
        ("b", "g", "{}"),
    ]


def test_result_builder_raises_how_the_job_ended() -> None:
    """An error or a cancel ends result() with JobFailed or JobCancelled."""
    with pytest.raises(JobFailed):
        ResultBuilder().take("j", Error(code="upstream", message="boom"))
    with pytest.raises(JobCancelled):
        ResultBuilder().take("j", Cancelled(reason="asked"))


def test_text_of_never_joins_two_attempts() -> None:
    """First-choice text passes; a restart after text was yielded raises JobRestarted."""
    assert text_of("j", Delta(text="a"), yielded=False) == "a"
    assert text_of("j", Delta(text="a", choice=1), yielded=False) is None
    assert text_of("j", Reset(attempt=2, cursor="3-0"), yielded=False) is None
    with pytest.raises(JobRestarted) as caught:
        text_of("j", Reset(attempt=2, cursor="3-0"), yielded=True)
    assert (caught.value.attempt, caught.value.cursor) == (2, "3-0")
