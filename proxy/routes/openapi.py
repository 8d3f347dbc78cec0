"""GET /openapi.json: the OpenAPI description of batchgate's routes (proxy/openapi.py), for any valid key."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from proxy.openapi import openapi_document
from proxy.routes.dependencies import CallerDep, LiveDep

router = APIRouter()


@router.get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request, live: LiveDep, _caller: CallerDep) -> Response:
    api: FastAPI = request.app
    models = [deployment.model_name for deployment in live.config.model_list]
    return Response(orjson.dumps(openapi_document(api, models)), media_type="application/json")
