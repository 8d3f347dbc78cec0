"""create_app(settings, config) -> FastAPI. The lifespan builds the Runtime; this module only assembles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.errors import ApiError, error_bytes
from proxy.logs import RequestLogMiddleware
from proxy.routes import chat, health, models
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Config, Settings

logger = logging.getLogger("batchgate")
JSON = "application/json"

BackgroundService = Callable[[Runtime], Coroutine[Any, Any, None]]


def create_app(
    settings: Settings,
    config: Config,
    *,
    background: list[BackgroundService] | None = None,
) -> FastAPI:
    """The API. `background` services (the in-process worker, the config reloader) run for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings, config)
        app.state.runtime = runtime
        tasks = [asyncio.create_task(service(runtime)) for service in background or []]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await close_runtime(runtime)

    app = FastAPI(title="batchgate", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    for router in (chat.router, models.router, health.router, *_optional_routers()):
        app.include_router(router)
    app.add_middleware(RequestLogMiddleware)
    return app


def _optional_routers() -> list[APIRouter]:
    """Routers of the parts that live in their own packages (deferred jobs, savings, metrics)."""
    found: list[APIRouter] = []
    with contextlib.suppress(ImportError):
        from proxy.routes import deferred  # noqa: PLC0415

        found.append(deferred.router)
    with contextlib.suppress(ImportError):
        from proxy.routes import metrics, savings  # noqa: PLC0415

        found.extend([metrics.router, savings.router])
    return found


def install_error_handlers(app: FastAPI) -> None:
    """The one place where errors become OpenAI-shaped JSON."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return Response(
            error_bytes(exc.message, exc.error_type, param=exc.param, code=exc.code),
            status_code=exc.status,
            media_type=JSON,
            headers=exc.headers,
        )

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problem = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in problem.get("loc", ())[1:]) or None
        body = error_bytes(str(problem.get("msg")), "invalid_request_error", param=param, code="invalid_value")
        return Response(body, status_code=400, media_type=JSON)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return Response(
            error_bytes(str(exc.detail), "invalid_request_error", code=code),
            status_code=exc.status_code,
            media_type=JSON,
            headers=getattr(exc, "headers", None),
        )

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return Response(
            error_bytes("The server had an error while processing your request.", "server_error"),
            status_code=500,
            media_type=JSON,
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
