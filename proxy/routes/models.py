"""GET /v1/models: the configured model names, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from proxy.routes.dependencies import CallerDep, RuntimeDep

router = APIRouter()


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, _caller: CallerDep) -> dict[str, Any]:
    created = int(runtime.started_at)
    return {
        "object": "list",
        "data": [
            {"id": deployment.model_name, "object": "model", "created": created, "owned_by": "batchgate"}
            for deployment in runtime.config.model_list
        ],
    }
