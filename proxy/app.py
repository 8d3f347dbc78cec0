"""create_app(settings, config) -> the ASGI app. The lifespan builds the Runtime; this module only assembles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.requests import Request as PlainRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.error_map import ErrorMap, default_error_map, error_response
from proxy.errors import MethodNotAllowed
from proxy.request_log import RequestLogMiddleware
from proxy.routes import (
    chat,
    deferred,
    embeddings,
    health,
    metrics,
    models,
    openapi,
    quote,
    responses,
    savings,
    webhooks,
)
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Config, Settings

BackgroundService = Callable[[Runtime], Coroutine[Any, Any, None]]


def routers() -> list[APIRouter]:
    return [
        models.router,
        health.router,
        deferred.router,
        metrics.router,
        savings.router,
        webhooks.router,
        openapi.router,
        embeddings.router,
        responses.router,
        quote.router,
    ]


class BatchgateApp:
    """The ASGI entry point. `POST /v1/chat/completions` goes straight to its handler: FastAPI's routing,
    dependency solving and middleware layers cost about a third of the proxy's CPU on that path (measured).
    Everything else is served by the FastAPI app. Both answer errors through one `ErrorMap`."""

    def __init__(self, api: FastAPI, errors: ErrorMap | None = None) -> None:
        self.api = api
        self.errors = errors or default_error_map()

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
        except ClientDisconnect:
            return None  # nobody is left to answer
        except Exception as exc:
            error = self.errors.answer(exc, request_id=scope.get("state", {}).get("request_id"))
            error.headers[chat.DECISION_HEADER] = chat.error_decision(request, error)
            return error_response(error)


def create_app(
    settings: Settings,
    config: Config,
    *,
    background: list[BackgroundService] | None = None,
    stopping: asyncio.Event | None = None,
) -> RequestLogMiddleware:
    """The API. `background` services (the in-process worker, the config reloader) run for the app's lifetime;
    `stopping`, set by the server when it stops, ends held calls and long polls at once."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings, config)
        app.state.runtime = runtime
        tasks = [asyncio.create_task(service(runtime)) for service in background or []]
        if stopping is not None:
            tasks.append(asyncio.create_task(_relay(stopping, runtime.waiters.stopping)))
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
    errors = default_error_map()
    install_error_handlers(api, errors)
    for router in routers():
        api.include_router(router)
    return RequestLogMiddleware(BatchgateApp(api, errors))


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


class AnswerUnexpected:
    """Answers an exception no handler took (the `Exception` entry of the map: a 500 in OpenAI's shape) and
    does not raise it on. Starlette's outermost ServerErrorMiddleware would answer it too, but then re-raises
    it, and the ASGI server closes the keep-alive connection of a request that raised. Sits inside that
    middleware (FastAPI's user-middleware slot), so it sees every exception of every FastAPI route."""

    def __init__(self, app: ASGIApp, errors: ErrorMap) -> None:
        self.app = app
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise  # the answer is under way: only closing the connection can tell the client
            response = self.errors.response(exc, request_id=scope.get("state", {}).get("request_id"))
            await response(scope, receive, send)


def _method_not_allowed() -> Response:
    refused = MethodNotAllowed("Method not allowed.", headers={"allow": "POST"})
    refused.headers[chat.DECISION_HEADER] = chat.refused_decision(refused)
    return error_response(refused)


def install_error_handlers(app: FastAPI, errors: ErrorMap | None = None) -> None:
    """Errors raised inside FastAPI routes are answered through `errors` (default: `default_error_map()`).
    Every class of the map gets the same handler, which looks the exception up in the map itself, so FastAPI's
    own lookup and the fast path's can never disagree. An exception no handler takes is answered by
    `AnswerUnexpected`, which keeps the connection open."""
    table = errors or default_error_map()

    async def answer(request: Request, exc: Exception) -> Response:
        return table.response(exc, request_id=getattr(request.state, "request_id", None))

    for cls in table.classes:
        app.add_exception_handler(cls, answer)
    app.add_middleware(AnswerUnexpected, errors=table)
