"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import orjson
import redis.exceptions
from fastapi import APIRouter
from fastapi.responses import Response

from proxy.routes.dependencies import RuntimeDep

router = APIRouter()
REDIS_PING_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> Response:
    body = {"status": "ok", "upstream": "simulated" if runtime.simulated else "provider"}
    if runtime.simulated:
        body["warning"] = "SIMULATED UPSTREAM: no provider key is set; answers are fake and cost nothing."
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Response:
    checks = {"config": "ok", "redis": "ok"}
    try:
        await asyncio.wait_for(runtime.redis.ping(), REDIS_PING_TIMEOUT)
    except (TimeoutError, redis.exceptions.RedisError, OSError):
        checks["redis"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not ready", **checks}
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")
