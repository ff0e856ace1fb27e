"""One job on one worker: claim an attempt, stream it, retry what can be retried, end it.

Each attempt is claimed in Redis (which fences out any earlier one), opens with ``start``
(after a ``reset`` from the second on), and is bounded by the job's total deadline and an
idle timeout. A retryable failure is tried again after a backoff, as a new attempt, while
attempts and time remain; otherwise the stream ends with ``error``. A cancel request stops
the upstream stream and ends the job with ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import openai
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamq.admin.counters import EndCounts
from streamq.core import metrics, scripts
from streamq.core.clock import ServerClock
from streamq.core.events import Cancelled, Delta, Done, Error, Event, Queued, Reset, Start
from streamq.core.exceptions import EntryRejected, Fenced, InvalidRequest, PublishFailed
from streamq.core.keys import Keys
from streamq.core.protocol import lease_member
from streamq.core.redis_errors import is_transient
from streamq.core.request import ChatRequest
from streamq.core.settings import Settings
from streamq.responses.conversion import for_api
from streamq.responses.request import ResponsesRequest, load_request
from streamq.worker.admission import Admission
from streamq.worker.budgets import Ask, Budgets, used_tokens
from streamq.worker.fleet import Fleet, Run
from streamq.worker.openai_pool import ClientPool
from streamq.worker.publisher import Publisher, StreamWriter
from streamq.worker.retry import RetryPolicy, retry_after
from streamq.worker.start_gate import started
from streamq.worker.upstream import error_event, stream_chat
from streamq.worker.upstream_responses import stream_responses

IDLE_SLACK = 1.0  # seconds

logger = logging.getLogger("streamq.worker")


@dataclass(frozen=True)
class Claim:
    """A claimed attempt: its number (0: the job had ended), whether a cancel was asked, the
    seconds since the job's first attempt started, and the job's request."""

    attempt: int
    cancel: bool
    elapsed: float
    request: bytes | None


@dataclass
class Outcome:
    """How an attempt ended: ``event`` is terminal unless the attempt will be retried."""

    event: Event | None  # Done (already written), Error or Cancelled (to write), None: done
    cause: BaseException | None = None


class JobRunner:
    """Runs jobs for one worker process."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        clients: ClientPool,
        admission: Admission,
        publisher: Publisher,
        fleet: Fleet,
        name: str,
        streams: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.clients = clients
        self.admission = admission
        self.publisher = publisher
        self.fleet = fleet
        self.name = name
        self.keys = Keys(settings.key_prefix)
        self.policy = RetryPolicy(
            settings.max_attempts, settings.retry_delay, settings.max_retry_delay
        )
        self.streams = redis if streams is None else streams
        self.budgets = Budgets(
            settings.model_budgets,
            settings.tenant_budgets,
            window=settings.budget_window,
            output_tokens=settings.budget_output_tokens,
        )
        self._clock = ServerClock(redis)
        self._counts = EndCounts(redis, self.keys)
        self._claim = redis.register_script(scripts.CLAIM)
        self._claim_state = self.streams.register_script(scripts.CLAIM_STATE)
        self._lease = redis.register_script(scripts.LEASE)

    async def run(self, job_id: str, rejection: Error | None = None) -> str:
        """Run the job until it ends or another worker owns it; returns the outcome's name.

        With ``rejection`` (its queue entry was unreadable) the job ends at once with that error.
        """
        previous: Run | None = None  # a failed attempt: its lease holds the job until the claim
        while True:
            claim = await self._claim_attempt(job_id, retry=previous is not None)
            if previous is not None:
                await self.fleet.release(previous)
            if not claim.attempt:
                return "already_ended"
            run = self._begin(job_id, claim)
            try:
                writer, outcome = await self._attempt_once(run, claim, rejection)
                delay = self._retry_delay(run, outcome, claim.elapsed)
                if delay is None:
                    return await self._end(run, writer, outcome)
                await self._wait_to_retry(run, writer, outcome, delay)
            except BaseException:
                await self.fleet.release(run)
                raise
            previous = run

    def _begin(self, job_id: str, claim: Claim) -> Run:
        """Track the claimed attempt (its lease was taken by the claim) and say it started."""
        run = Run(job_id, claim.attempt)
        self.fleet.track(run)
        if claim.cancel:
            run.cancel("cancel requested")
        logger.info(
            "job %s attempt %d started",
            job_id,
            claim.attempt,
            extra={"job_id": job_id, "attempt": claim.attempt, "transition": "started"},
        )
        metrics.attempt_started(claim.attempt)
        return run

    async def _attempt_once(
        self, run: Run, claim: Claim, rejection: Error | None
    ) -> tuple[StreamWriter, Outcome]:
        """Stream one attempt; its outcome (an ``EntryRejected`` ends the job, retry nothing)."""
        keys = self.keys
        writer = StreamWriter(
            self.publisher,
            keys.events(run.job_id),
            keys.state(run.job_id),
            run.attempt,
            keys.compacting(run.job_id),
        )
        try:
            return writer, await self._attempt(run, writer, claim.request, claim.elapsed, rejection)
        except EntryRejected as exc:  # this job's data, not Redis
            logger.error("job %s: %s", run.job_id, exc)
            await writer.recover()
            return writer, Outcome(Error(code="unpublishable", message=str(exc)), exc)

    async def _end(self, run: Run, writer: StreamWriter, outcome: Outcome) -> str:
        """Write the terminal event, let the job go and count its end."""
        await self._write_terminal(run, writer, outcome)
        self._log_end(run, outcome)
        await self._let_go(run, outcome)
        return _name(outcome)

    async def _wait_to_retry(
        self, run: Run, writer: StreamWriter, outcome: Outcome, delay: float
    ) -> None:
        """Wait out the backoff before the next attempt (a cancel request ends it early)."""
        await writer.sync()
        metrics.attempt_ended(_transition(run, "retrying", outcome))
        logger.info(
            "job %s attempt %d: retrying in %.2fs",
            run.job_id,
            run.attempt,
            delay,
            extra=_transition(run, "retrying", outcome, retry_in=round(delay, 3)),
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.cancelled.wait(), delay)

    async def _write_terminal(self, run: Run, writer: StreamWriter, outcome: Outcome) -> None:
        """Write the attempt's terminal event (a ``done`` already is) and wait for it."""
        try:
            if outcome.event is not None and not isinstance(outcome.event, Done):
                await writer.emit(outcome.event)
            await writer.sync()
        except EntryRejected as exc:  # Redis refuses this job's stream itself (tampered keys)
            logger.error("job %s: could not write its terminal event: %s", run.job_id, exc)

    async def _claim_attempt(self, job_id: str, retry: bool) -> Claim:
        """Start the job's next attempt (``attempt`` 0: the job had ended); ``retry`` after
        this runner's own attempt of it ended."""
        lease_ms = int(self.settings.lease * 1000)
        chain, own = self.publisher.chain_key, "1" if retry else "0"
        if self.streams is self.redis:  # one Redis: one round trip
            claimed = await self._claim(
                keys=[self.keys.state(job_id), self.keys.running(), self.keys.request(job_id)],
                args=[self.settings.stream_ttl, lease_ms, job_id, chain, own],
            )
            raw_request = claimed[3] if len(claimed) > 3 else None
            return Claim(int(claimed[0]), bool(claimed[1]), int(claimed[2]) / 1000, raw_request)
        claimed = await self._claim_state(
            keys=[self.keys.state(job_id)],
            args=[self.settings.stream_ttl, chain, own],
        )
        attempt = int(claimed[0])
        if not attempt:
            return Claim(0, bool(claimed[1]), 0.0, None)
        keys = [self.keys.running(), self.keys.request(job_id)]
        raw_request = await self._lease(keys=keys, args=[lease_ms, lease_member(attempt, job_id)])
        return Claim(attempt, bool(claimed[1]), int(claimed[2]) / 1000, raw_request)

    def _log_end(self, run: Run, outcome: Outcome) -> None:
        """Log the job's end (no prompt or completion text)."""
        extra = _transition(run, "ended", outcome)
        name = _name(outcome)
        logger.info("job %s ended %s in %.2fs", run.job_id, name, extra["duration_s"], extra=extra)
        metrics.attempt_ended(extra)

    async def _let_go(self, run: Run, outcome: Outcome) -> None:
        """In one round trip: keep the request as long as the stream (it has the TTL set at
        enqueue, so a failure costs only a shorter idempotency window), drop the lease, and
        send the process's counts of job ends for `streamq stats` when a second has passed
        since the last were sent. Four round trips here cost a job ~0.3 ms of CPU. None of it
        may fail the job: what fails is logged."""
        code = outcome.event.code if isinstance(outcome.event, Error) else None
        try:
            minute = await self._clock.now_ms() // 60_000
            self._counts.add(minute, "error" if code else _name(outcome), run.deltas, code)
        except Exception as exc:  # the lease and the request's TTL still go out
            logger.warning("job %s: no clock to count its end by: %r", run.job_id, exc)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.expire(self.keys.request(run.job_id), self.settings.stream_ttl)
                self.fleet.release_in(pipe, run)
                if self._counts.due():
                    self._counts.take_into(pipe)
                sent = [command[0][0] for command in pipe.command_stack]
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # Redis away: the lease runs out, the stream says it ended
            logger.warning(
                "job %s: could not let its keys go nor count its end: %r", run.job_id, exc
            )
        else:
            for command, result in zip(sent, results, strict=True):
                if isinstance(result, Exception):
                    logger.warning("job %s: %s at its end failed: %r", run.job_id, command, result)
        self._counts.send_later()

    async def aclose(self) -> None:
        """Send the counts of job ends still waiting."""
        await self._counts.aclose()

    def _retry_delay(self, run: Run, outcome: Outcome, elapsed: float) -> float | None:
        error = outcome.event
        if not isinstance(error, Error) or not error.retryable or run.cancel_reason:
            return None
        if run.attempt >= self.policy.max_attempts:
            return None
        delay = self.policy.delay(run.attempt, outcome.cause)
        if elapsed + delay >= self.settings.job_timeout:
            return None
        return delay

    async def _attempt(
        self,
        run: Run,
        writer: StreamWriter,
        raw_request: bytes | None,
        elapsed: float,
        rejection: Error | None = None,
    ) -> Outcome:
        if run.attempt > 1:
            await writer.emit(Reset(reason="the job was started again"))
        request, problem = (None, rejection) if rejection else self._parse_request(raw_request)
        model = (request.model if request else None) or self.settings.openai_model
        run.model = model
        await writer.emit(
            Start(job_id=run.job_id, model=model, worker=self.name, started_at=time.time())
        )
        if run.cancel_reason:
            return Outcome(Cancelled(reason=run.cancel_reason, deltas=0))
        if run.attempt > self.settings.max_attempts:
            message = f"started {run.attempt - 1} times without finishing (STREAMQ_MAX_ATTEMPTS)"
            return Outcome(Error(code="attempts_exhausted", message=message))
        if request is None:
            return Outcome(problem)
        api = request.options.get("upstream_api") or self.settings.upstream_api_for(model)
        try:
            request = for_api(request, api)
        except InvalidRequest as exc:  # asks what the upstream's API cannot give
            return Outcome(Error(code="invalid_request", message=str(exc)))
        except Exception as exc:  # a stored request no producer wrote: the job must still end
            logger.exception("job %s: its request could not be converted", run.job_id)
            message = f"the job's request could not be sent as {api} ({type(exc).__name__})"
            return Outcome(Error(code="invalid_request", message=message))
        deadline = (request.options.get("deadline") or self.settings.job_timeout) - elapsed
        if deadline <= 0:
            return Outcome(_timeout_error(f"the job's deadline passed ({deadline:+.1f}s)", False))
        idle = request.options.get("idle_timeout") or self.settings.idle_timeout
        if request.options.get("buffered"):
            idle = deadline  # nothing arrives until the whole answer does
        ask = await self._ask(run.job_id, model, request)
        run.task = asyncio.create_task(
            self._stream(run, writer, request, model, deadline, idle, ask)
        )
        if run.cancel_reason:  # requested while the task was being created
            run.task.cancel()
        try:
            outcome: Outcome = await run.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker itself is stopping: arq hands the job to another worker
            outcome = Outcome(Cancelled(reason=run.cancel_reason or "cancelled", deltas=run.deltas))
        if ask is not None:
            await self._settle(run, model, ask, outcome)
        return outcome

    async def _ask(
        self, job_id: str, model: str, request: ChatRequest | ResponsesRequest
    ) -> Ask | None:
        """What the job asks of the budgets (its tenant: the job's owner, when tenants have
        budgets), or None when none applies."""
        tenant = None
        if self.budgets.per_tenant:
            try:
                owner = await self.redis.get(self.keys.owner(job_id))
            except RedisError as exc:
                if is_transient(exc):
                    raise
                # Refused (the worker's Redis user may not read owners): budgets never fail a job.
                logger.error("job %s: no owner read (%r): only model budgets apply", job_id, exc)
                owner = None
            tenant = owner.decode(errors="replace") if owner else None
        return self.budgets.ask(model, tenant, request)

    async def _reached(self, run: Run, model: str, ask: Ask) -> None:
        """Count the job in its budgets from now, when its request reached the upstream."""
        try:
            await self.admission.reached(model, run.member, ask)
        except RedisError as exc:  # it still counts from its admission
            logger.warning("job %s: could not restamp its budget entry: %r", run.job_id, exc)

    async def _settle(self, run: Run, model: str, ask: Ask, outcome: Outcome) -> None:
        """Count the tokens the attempt used instead of its estimate, when the upstream said
        (without usage, or after an error, the estimate stays)."""
        used = used_tokens(getattr(outcome.event, "usage", None))
        if used is None:
            return
        try:
            await self.admission.settle(model, run.member, ask, used)
        except RedisError as exc:  # the estimate stays: the budget errs on the safe side
            logger.warning("job %s: could not settle its budget: %r", run.job_id, exc)

    async def _stream(
        self,
        run: Run,
        writer: StreamWriter,
        request: ChatRequest | ResponsesRequest,
        model: str,
        deadline: float,
        idle: float,
        ask: Ask | None = None,
    ) -> Outcome:
        loop = asyncio.get_running_loop()

        async def waiting(reason: str, eta: float | None) -> None:
            started()  # waiting for admission, the job lets the next one start
            await writer.emit(Queued(reason=reason, eta=eta, model=model))

        try:
            fast = self.settings.chunk_parser == "fast"
            # The idle timer fires `idle` to `idle + slack` after the last data: rescheduling a
            # timer on every delta costs more than the rest of the delta's bookkeeping.
            slack = min(idle / 10, IDLE_SLACK)
            async with (
                asyncio.timeout(deadline) as total,
                # Waits while the fleet is at its limit, over a budget or paused after a 429.
                self.admission.slot(model, run.member, ask, waiting),
            ):
                with self.clients.lease() as client, metrics.streaming():
                    async with asyncio.timeout(idle) as quiet:
                        buffered = bool(request.options.get("buffered"))
                        if isinstance(request, ResponsesRequest):
                            events = stream_responses(client, request, model, buffered=buffered)
                        else:
                            events = stream_chat(
                                client, request, model, fast=fast, buffered=buffered
                            )
                        async for event in events:
                            if ask is not None:  # the upstream has the request: count from now
                                await self._reached(run, model, ask)
                                ask = None
                            now = loop.time()
                            if (quiet.when() or now) < now + idle:
                                quiet.reschedule(now + idle + slack)
                            await writer.emit(event)
                            if isinstance(event, Delta):
                                run.deltas += 1
                                if run.first_delta is None:
                                    run.first_delta = time.monotonic()
                            elif isinstance(event, Done):
                                return Outcome(event)
        except TimeoutError as exc:
            if total.expired():
                return Outcome(
                    _timeout_error(f"the job ran over its {deadline:g}s deadline", False)
                )
            return Outcome(_timeout_error(f"no data from the upstream for {idle:g}s", True), exc)
        except (Fenced, PublishFailed, EntryRejected):
            raise
        except Exception as exc:
            if isinstance(exc, openai.RateLimitError):  # the provider says: everyone, slow down
                budgeted = self.budgets.for_model(model) is not None or self.budgets.per_tenant
                with contextlib.suppress(Exception):
                    pause = retry_after(exc) or self.policy.base
                    await self.admission.pause(model, pause, budgeted=budgeted)
            error = error_event(exc, secret=self.settings.openai_api_key)
            if error.code == "internal":
                logger.exception("job %s failed with an unexpected error", run.job_id)
            return Outcome(error, exc)
        raise AssertionError("unreachable: an upstream stream ends with Done or raises")

    def _parse_request(
        self, raw: bytes | None
    ) -> tuple[ChatRequest | ResponsesRequest | None, Error | None]:
        if not raw:
            message = "the job's request expired or was deleted"
            return None, Error(code="request_missing", message=message)
        try:
            return load_request(raw, max_bytes=self.settings.max_request_bytes), None
        except InvalidRequest as exc:
            return None, Error(code="invalid_request", message=str(exc))
        except Exception as exc:  # whatever a stored request does, the job must still end
            logger.exception("job request could not be read")
            message = f"the job's request could not be read ({type(exc).__name__})"
            return None, Error(code="invalid_request", message=message)


def _transition(run: Run, transition: str, outcome: Outcome, **more: Any) -> dict[str, Any]:
    """The structured fields of a job's log line (``--log-format json`` prints them)."""
    event = outcome.event
    fields: dict[str, Any] = {
        "job_id": run.job_id,
        "attempt": run.attempt,
        "transition": transition,
        "outcome": _name(outcome),
        "model": run.model,
        "duration_s": round(time.monotonic() - run.started, 3),
        "ttft_s": None if run.first_delta is None else round(run.first_delta - run.started, 3),
        "deltas": run.deltas,
        **more,
    }
    if isinstance(event, Done):
        fields["finish_reason"] = event.finish_reason
        fields["usage"] = event.usage
    elif isinstance(event, Error):
        fields["error_code"] = event.code
    return fields


def _timeout_error(message: str, retryable: bool) -> Error:
    return Error(code="timeout", message=message, retryable=retryable)


def _name(outcome: Outcome) -> str:
    event = outcome.event
    if isinstance(event, Error):
        return event.code
    return event.type if event is not None else "done"
