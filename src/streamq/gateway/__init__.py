"""The HTTP gateway: enqueue chat jobs and follow them over resumable Server-Sent Events.

``create_app(settings, config)`` returns a Starlette app (needs ``streamq[gateway]``); serve it
with ``streamq serve`` or uvicorn, or mount it in your own Starlette or FastAPI app.
``docs/gateway.md`` describes the endpoints.

Modules: ``app`` (wiring), ``jobs`` (``/v1/jobs``), ``openai_compat`` (``/v1/chat/completions``)
with ``door`` (answering from the job's events), ``chunks``, ``completion`` and ``failures``
(error statuses), ``models`` (``/v1/models``), ``sse`` (event frames, keep-alives, resume),
``pump`` (timed reads), ``auth`` (tokens to tenants), ``tenancy`` (job ownership, idempotency
keys), ``limits`` (per-tenant rate and streams), ``timeouts`` (slow clients), ``request_id``,
``body`` (reading JSON bodies), ``chat_body``, ``errors``, ``openapi``, ``config``, ``state``,
``server`` (``streamq serve``) and ``static/`` (the chat page).
"""

from streamq.gateway.app import create_app
from streamq.gateway.config import GatewayConfig
from streamq.gateway.timeouts import uvicorn_config

__all__ = ["GatewayConfig", "create_app", "uvicorn_config"]
