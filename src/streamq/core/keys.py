"""Every Redis key streamq writes, built in one place.

All keys of one job share the hash tag ``{job_id}`` so a Redis Cluster keeps them on one slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix

from streamq.core.exceptions import InvalidRequest

# \A and \Z, not ^ and $: a "$" also matches before a trailing newline.
JOB_ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


def check_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is a valid job id, else raise :class:`InvalidRequest`."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise InvalidRequest(
            f"invalid job id {job_id!r}: use 1-128 characters from A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit"
        )
    return job_id


# The gateway's tenant names (STREAMQ_GATEWAY_TOKENS): they name hash fields and owner values.
TENANT_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# The tenant of a job enqueued without one, and the one tenant of a gateway open without tokens.
DEFAULT_TENANT = "anonymous"


def check_tenant(tenant: object) -> str:
    """Return ``tenant`` if it is a valid tenant name, else raise :class:`InvalidRequest`."""
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise InvalidRequest(
            f"invalid tenant {tenant!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return tenant


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``STREAMQ_KEY_PREFIX``)."""

    prefix: str = "streamq"

    def events(self, job_id: str) -> str:
        """The Redis Stream of the job's events."""
        return f"{self.prefix}:{{{job_id}}}:events"

    def request(self, job_id: str) -> str:
        """The job's validated request (JSON); its existence marks the job as enqueued."""
        return f"{self.prefix}:{{{job_id}}}:request"

    def state(self, job_id: str) -> str:
        """A hash of the job's control state: current attempt, last seq, terminal type."""
        return f"{self.prefix}:{{{job_id}}}:state"

    def compacting(self, job_id: str) -> str:
        """Scratch key the append script copies a finished stream through (gone at once)."""
        return f"{self.prefix}:{{{job_id}}}:events:compacting"

    def job_keys(self) -> str:
        """A SCAN pattern matching every per-job key under the prefix."""
        return f"{self.prefix}:{{*"

    def arq_job_ids(self) -> str:
        """A pattern matching the ids arq knows streamq's jobs by (see :meth:`arq_job_id`)."""
        return f"{self.prefix}:*"

    def owner(self, job_id: str) -> str:
        """The tenant that created the job through the HTTP gateway (``streamq.gateway``)."""
        return f"{self.prefix}:{{{job_id}}}:owner"

    def response(self, job_id: str) -> str:
        """What ``/v1/responses`` keeps of the response the job answers (JSON)."""
        return f"{self.prefix}:{{{job_id}}}:response"

    def webhook(self, job_id: str) -> str:
        """A hash of the job's webhook delivery: its body once the job ended, each endpoint's
        outcome (no URL, no secret)."""
        return f"{self.prefix}:{{{job_id}}}:webhook"

    def webhooks_due(self) -> str:
        """Sorted set of job ids whose webhook is pending, scored by when it is due (ms)."""
        return f"{self.prefix}:webhooks:due"

    def running(self) -> str:
        """Sorted set of running attempts (``attempt:job_id``) scored by lease expiry (ms)."""
        return f"{self.prefix}:running"

    def publisher(self, publisher_id: str) -> str:
        """A worker process's publisher chain (see :mod:`streamq.core.scripts`); a string."""
        return f"{self.prefix}:publisher:{publisher_id}"

    def workers(self) -> str:
        """Sorted set of worker ids, scored by when their presence key expires (ms)."""
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        """A worker process's presence (JSON), kept alive by its heartbeat."""
        return f"{self.prefix}:worker:{worker_id}"

    def counters(self, minute: int) -> str:
        """A hash of the fleet's job and delta counts for one minute (Unix time // 60)."""
        return f"{self.prefix}:counters:{minute}"

    def default_queue(self) -> str:
        """The arq queue (a sorted set of arq job ids) when ``STREAMQ_QUEUE`` is not set."""
        return f"{self.prefix}:queue"

    def admission_slots(self, account: str, model: str) -> str:
        """Sorted set of the fleet's generations of ``model`` for one API key's digest."""
        return f"{self.prefix}:admission:{account}:{model}:slots"

    def admission_pause(self, account: str, model: str) -> str:
        """Set while the fleet pauses ``model`` after a 429 (expires with the pause)."""
        return f"{self.prefix}:admission:{account}:{model}:paused"

    def model_budget(self, account: str, model: str) -> str:
        """Sorted set of ``model``'s admissions in the budget window for one API key's digest
        (``member|tokens``, scored by when admitted, ms)."""
        return f"{self.prefix}:admission:budget:{account}:{model}"

    def tenant_budget(self, tenant: str) -> str:
        """Sorted set of a tenant's admissions in the budget window, every model's."""
        return f"{self.prefix}:admission:budget:tenant:{tenant}"

    def budget_head(self, budget: str) -> str:
        """The job first refused for tokens by the budget window ``budget`` (``member|tokens``):
        the others leave it room (expires unless it keeps waiting)."""
        return f"{budget}:head"

    def budget_total(self, budget: str) -> str:
        """The tokens in the budget window ``budget``, kept as entries come and go."""
        return f"{budget}:total"

    def cancel_channel(self) -> str:
        """Pub/sub channel on which cancel requests reach the workers."""
        return f"{self.prefix}:cancel"

    def arq_job_id(self, job_id: str) -> str:
        """The id arq knows the job by: prefixed, since arq's own keys are global."""
        return f"{self.prefix}:{job_id}"

    def arq_job(self, job_id: str) -> str:
        """arq's key for the queued job (its JSON envelope)."""
        return arq_job_key(self.arq_job_id(job_id))

    def arq_result(self, job_id: str) -> str:
        """arq's key for the job's result (streamq keeps none, but arq checks it)."""
        return result_key_prefix + self.arq_job_id(job_id)

    def arq_in_progress(self, job_id: str) -> str:
        """arq's marker of a job some worker has started."""
        return arq_in_progress_key(self.arq_job_id(job_id))

    def job_id_from_arq(self, arq_job_id: str) -> str:
        """The streamq job id inside an arq job id (validated: it may not come from a producer)."""
        prefix = f"{self.prefix}:"
        if not arq_job_id.startswith(prefix):
            raise InvalidRequest(f"arq job {arq_job_id!r} is not under prefix {self.prefix!r}")
        return check_job_id(arq_job_id[len(prefix) :])


def arq_job_key(arq_job_id: str) -> str:
    """arq's key for the envelope of the job arq knows as ``arq_job_id``."""
    return job_key_prefix + arq_job_id


def arq_in_progress_key(arq_job_id: str) -> str:
    """arq's in-progress marker of the job arq knows as ``arq_job_id``."""
    return in_progress_key_prefix + arq_job_id


def wake_channel(queue_name: str) -> str:
    """Pub/sub channel a producer publishes on after enqueueing, to wake idle workers."""
    return f"{queue_name}:wake"


def fair_order(queue_name: str) -> str:
    """Sorted set of the queue's waiting arq job ids, scored by their virtual start tag under
    fair sharing between tenants: the lowest starts first; a job's rank is its place in line."""
    return f"{queue_name}:fair:order"


def fair_tenants(queue_name: str) -> str:
    """Hash of each tenant's last virtual start tag on the queue (fair sharing's memory)."""
    return f"{queue_name}:fair:tenants"


def fair_pick(queue_name: str, worker: str) -> str:
    """The answer of ``worker``'s last PICK that started jobs, kept for a resent call."""
    return f"{queue_name}:fair:pick:{worker}"


def fair_clock(queue_name: str) -> str:
    """The queue's virtual time: the tag of the job started last (fair sharing's clock)."""
    return f"{queue_name}:fair:clock"
