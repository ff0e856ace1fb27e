"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models the fleet serves, in OpenAI's shape.

The list is ``STREAMQ_GATEWAY_MODELS`` when set, else the workers' default model
(``OPENAI_MODEL``). The gateway never asks the upstream: it holds no upstream key, and the door
forwards any model name to the workers anyway; the list is what clients should pick from.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamq.gateway.errors import ApiError
from streamq.gateway.state import Gateway

OWNER = "streamq"


def routes(gateway: Gateway) -> list[Route]:
    """The ``/v1/models`` routes."""
    names = gateway.config.models or (gateway.settings.openai_model,)
    created = int(time.time())
    models = {name: model_object(name, created) for name in names}

    async def list_models(request: Request) -> Response:
        gateway.tenant(request)
        return JSONResponse({"object": "list", "data": list(models.values())})

    async def retrieve_model(request: Request) -> Response:
        gateway.tenant(request)
        name = request.path_params["model"]
        if name not in models:
            raise ApiError(404, "model_not_found", f"The model `{name}` does not exist.")
        return JSONResponse(models[name])

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        # Model names may hold slashes (org/model), as the SDK sends them: unescaped.
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    ]


def model_object(name: str, created: int) -> dict[str, Any]:
    """One ``model`` object."""
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}
