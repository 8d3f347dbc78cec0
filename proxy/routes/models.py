"""GET /v1/models and GET /v1/models/{id}: the configured model names, as OpenAI's `Model` objects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from proxy.errors import NotFound
from proxy.routes.dependencies import CallerDep, RuntimeDep
from proxy.runtime import Runtime

router = APIRouter()


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, _caller: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(runtime, name) for name in _served(runtime)]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, runtime: RuntimeDep, _caller: CallerDep) -> dict[str, Any]:
    """One model this proxy serves; 404 (`model_not_found`, as OpenAI answers) for any other id."""
    if model_id not in _served(runtime):
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return _model(runtime, model_id)


def _served(runtime: Runtime) -> list[str]:
    """The configured model names, in config order, each once (several deployments may share a name)."""
    return list(dict.fromkeys(deployment.model_name for deployment in runtime.config.model_list))


def _model(runtime: Runtime, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(runtime.started_at), "owned_by": "batchgate"}
