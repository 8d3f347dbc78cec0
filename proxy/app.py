"""create_app(settings, config) -> the ASGI app. The lifespan builds the Runtime; this module only assembles."""

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
from redis.exceptions import RedisError
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as PlainRequest
from starlette.types import Receive, Scope, Send

from proxy.errors import (
    ApiError,
    error_bytes,
    error_response,
    internal_error_response,
    store_unavailable_response,
)
from proxy.logs import RequestLogMiddleware
from proxy.routes import chat, deferred, health, metrics, models, savings, webhooks
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Config, Settings

logger = logging.getLogger("batchgate")
JSON = "application/json"

BackgroundService = Callable[[Runtime], Coroutine[Any, Any, None]]


def routers() -> list[APIRouter]:
    return [models.router, health.router, deferred.router, metrics.router, savings.router, webhooks.router]


class BatchgateApp:
    """The ASGI entry point. `POST /v1/chat/completions` goes straight to its handler: FastAPI's routing,
    dependency solving and middleware layers cost about a third of the proxy's CPU on that path (measured).
    Everything else is served by the FastAPI app."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    @property
    def state(self) -> State:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == chat.PATH:
            response = await self._chat(scope, receive) if scope["method"] == "POST" else _method_not_allowed()
            if response is not None:
                await response(scope, receive, send)
            return
        await self.api(scope, receive, send)

    async def _chat(self, scope: Scope, receive: Receive) -> Response | None:
        request = PlainRequest(scope, receive)
        try:
            return await chat.chat_completions(request, self.api.state.runtime)
        except ApiError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return None
        except RedisError:
            logger.warning("job store unavailable", exc_info=True)
            return store_unavailable_response()
        except Exception:
            logger.exception("unhandled error", extra={"request_id": scope.get("state", {}).get("request_id")})
            return internal_error_response()


def create_app(
    settings: Settings,
    config: Config,
    *,
    background: list[BackgroundService] | None = None,
) -> RequestLogMiddleware:
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

    api = FastAPI(title="batchgate", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(api)
    for router in routers():
        api.include_router(router)
    return RequestLogMiddleware(BatchgateApp(api))


def _method_not_allowed() -> Response:
    return Response(
        error_bytes("Method not allowed.", "invalid_request_error", code="method_not_allowed"),
        status_code=405,
        media_type=JSON,
        headers={"allow": "POST"},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Errors raised inside FastAPI routes become OpenAI-shaped JSON (the mapping itself is errors.error_response)."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

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

    async def store_error(_: Request, exc: Exception) -> Response:
        logger.warning("job store unavailable: %s", exc)
        return store_unavailable_response()

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return internal_error_response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RedisError, store_error)
    app.add_exception_handler(Exception, unexpected_error)
