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


async def account_problems(runtime: RuntimeDep) -> dict[str, object]:
    """Provider groups whose batch submission is stopped by an account problem. Reported, not failed on: this
    process still serves sync calls and every other provider, and a restart cannot fix a quota or a key
    (docs/operations.md, "Provider account problems")."""
    try:
        problems = await asyncio.wait_for(runtime.store.accounts.all(), REDIS_PING_TIMEOUT)
    except (TimeoutError, redis.exceptions.RedisError, OSError):
        return {}
    if not problems:
        return {}
    return {
        "degraded": True,
        "account_problems": [
            {"group": p.group, "code": p.code, "where": p.where, "since": int(p.since), "message": p.summary()}
            for p in problems
        ],
    }


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Response:
    checks = {"config": "ok", "redis": "ok"}
    try:
        await asyncio.wait_for(runtime.redis.ping(), REDIS_PING_TIMEOUT)
    except (TimeoutError, redis.exceptions.RedisError, OSError):
        checks["redis"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", **checks}
    if ready:
        body.update(await account_problems(runtime))
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")
