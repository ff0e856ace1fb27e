"""Cursors Redis would refuse are a 400 before the stream starts, never a cut body or a 500."""

from __future__ import annotations

import httpx2
import pytest

from tests.gateway.sse import frames, read_events
from tests.gateway.sse import text_of as joined

BEYOND_64_BITS = str(2**64)  # 18446744073709551616
# Python refuses int() of strings over 4,300 digits (ValueError) unless told otherwise.
THOUSANDS_OF_DIGITS = "1" + "0" * 5000

BAD_CURSORS = [
    f"1-{BEYOND_64_BITS}",
    f"{BEYOND_64_BITS}-0",
    f"{THOUSANDS_OF_DIGITS}-0",
    f"1-{THOUSANDS_OF_DIGITS}",
    "1-0-0",
    "-1-0",
    "1.5-0",
    "0x10-0",
]
# Only a query string can carry these: HTTP header values are Latin-1 without line breaks.
BAD_IN_QUERY_ONLY = ["1-0\n", "1-0 ", "\u0661-\u0662"]  # Arabic-Indic digits one and two


async def finished_job(client: httpx2.AsyncClient) -> tuple[str, list[str]]:
    """A job of tenant A that has ended, and the ids of its events."""
    response = await client.post("/v1/jobs", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    events = await read_events(client, f"/v1/jobs/{job_id}/events")
    assert events[-1].event == "done"
    return job_id, [str(frame.id) for frame in events]


def assert_invalid_cursor(response: httpx2.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "invalid_request"
    assert "cursor" in response.json()["error"]["message"]
    assert len(response.content) < 1000  # a 5,000-digit cursor is not echoed back


@pytest.mark.usefixtures("worker")
async def test_cursors_out_of_range_or_malformed_are_400(client: httpx2.AsyncClient) -> None:
    """Each bad cursor, as Last-Event-ID or as ?after=, is a 400 with a JSON error, on a job
    whose stream has entries (where an out-of-range id used to pass the check, answer 200 and
    then cut the body when Redis refused it)."""
    job_id, _ = await finished_job(client)
    url = f"/v1/jobs/{job_id}/events"
    for cursor in BAD_CURSORS:
        assert_invalid_cursor(await client.get(url, headers={"Last-Event-ID": cursor}))
        assert_invalid_cursor(await client.get(url, params={"after": cursor}))
    for cursor in BAD_IN_QUERY_ONLY:
        assert_invalid_cursor(await client.get(url, params={"after": cursor}))


@pytest.mark.usefixtures("worker")
async def test_the_largest_ids_are_checked_against_the_stream(client: httpx2.AsyncClient) -> None:
    """2^64-1 in either part is a valid id, so it reaches the stream check: after the newest
    entry, a 400 too."""
    job_id, _ = await finished_job(client)
    top = str(2**64 - 1)
    for cursor in (f"{top}-{top}", f"{top}-0", f"1-{top}"):
        response = await client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": cursor})
        if cursor == f"1-{top}":  # before the first entry: a valid resume point
            assert response.status_code == 200
            continue
        assert_invalid_cursor(response)


@pytest.mark.usefixtures("worker")
async def test_a_cursor_with_leading_zeros_resumes_after_that_entry(
    client: httpx2.AsyncClient,
) -> None:
    """Leading zeros do not change the id: the stream resumes right after it, in full."""
    job_id, ids = await finished_job(client)
    all_events = await read_events(client, f"/v1/jobs/{job_id}/events")
    milliseconds, sequence = ids[2].split("-")
    padded = f"000{milliseconds}-00{sequence}"
    async with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": padded}
    ) as response:
        assert response.status_code == 200
        rest = [frame async for frame in frames(response) if frame.data]
    assert [frame.id for frame in rest] == ids[3:]
    assert joined(all_events[:3]) + joined(rest) == joined(all_events)
