"""GET /metrics: this process's Prometheus registry, unauthenticated as scrapers expect (docs/metrics.md)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.routes.dependencies import RuntimeDep

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(runtime: RuntimeDep) -> Response:
    if runtime.budgets is not None and runtime.budget_gauges is not None and runtime.budgets.active():
        await runtime.budget_gauges.refresh(runtime.budgets, runtime.config)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
