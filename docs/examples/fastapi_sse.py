"""A FastAPI service: POST a prompt to enqueue a chat job, GET its events as Server-Sent Events.

    uvicorn fastapi_sse:app --app-dir docs/examples    # REDIS_URL etc. from the environment
    streamq worker                                     # in another shell, or on another machine

    curl -X POST localhost:8000/jobs -H 'content-type: application/json' -d '{"prompt": "hi"}'
    curl -N localhost:8000/jobs/JOB_ID/events

Each SSE event carries one streamq event: ``id:`` is its cursor, ``event:`` its type and
``data:`` the event as JSON. A browser's ``EventSource`` reconnects on its own and sends the
last id it saw as ``Last-Event-ID``; the stream resumes right after it. Every open stream is
served by one multiplexer: a thousand viewers need three Redis connections, not a thousand.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from streamq import InvalidRequest, Multiplexer, ReadTimeout, Settings, StreamQ
from streamq.core.events import Event, event_to_dict
from streamq.job import check_cursor


class ChatIn(BaseModel):
    prompt: str
    system_prompt: str | None = None
    job_id: str | None = None


class JobOut(BaseModel):
    job_id: str
    events: str


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; ``settings`` default to the environment, read when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or Settings.from_env()
        async with StreamQ.from_url(config.redis_url, config) as sq, sq.multiplexer() as mux:
            app.state.sq, app.state.mux = sq, mux
            yield

    app = FastAPI(title="streamq SSE example", lifespan=lifespan)

    @app.post("/jobs", status_code=202)
    async def enqueue(chat: ChatIn, request: Request) -> JobOut:
        sq: StreamQ = request.app.state.sq
        try:
            job = await sq.enqueue_chat(
                chat.prompt, system_prompt=chat.system_prompt, job_id=chat.job_id
            )
        except InvalidRequest as exc:
            raise HTTPException(422, str(exc)) from None
        return JobOut(job_id=job.id, events=str(request.url_for("events", job_id=job.id)))

    @app.get("/jobs/{job_id}/events", name="events")
    async def events(
        job_id: str,
        request: Request,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        sq: StreamQ = request.app.state.sq
        mux: Multiplexer = request.app.state.mux
        try:
            cursor = check_cursor(last_event_id)
            exists = await sq.job(job_id).exists()
        except InvalidRequest as exc:  # a bad job id or Last-Event-ID
            raise HTTPException(400, str(exc)) from None
        if not exists:
            raise HTTPException(404, f"no job with id {job_id!r}")
        return StreamingResponse(
            sse(mux, job_id, cursor),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


async def sse(mux: Multiplexer, job_id: str, cursor: str) -> AsyncIterator[str]:
    """The job's events after ``cursor`` as SSE, up to the terminal one."""
    yield "retry: 1000\n\n"
    try:
        async with aclosing(mux.follow(job_id, after=cursor)) as events:
            async for event in events:
                yield format_event(event)
    except ReadTimeout:
        # Nothing for a long while: end the response; EventSource reconnects with Last-Event-ID.
        yield ": idle, reconnect\n\n"


def format_event(event: Event) -> str:
    """One SSE event: the cursor as its id, the type as its name, the event as JSON data. A
    ``queued`` event (a place in line, while the job waits) is no entry: it has no cursor, and
    its frame no id, so a reconnect still resumes after the last entry."""
    body = event_to_dict(event)
    frame = f"event: {body['type']}\ndata: {json.dumps(body)}\n\n"
    return f"id: {event.cursor}\n{frame}" if event.cursor else frame


app = create_app()
