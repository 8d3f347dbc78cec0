"""create_simulator_app(options): the simulated upstream as an ASGI app; all state lives in the instance."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from proxy.errors import ApiError, error_bytes
from proxy.simulator import (
    anthropic_face,
    azure_face,
    bedrock_face,
    bedrock_runtime,
    control,
    gemini_face,
    google_oauth,
    mistral_face,
    openai_face,
    responses_face,
    vertex_face,
    xai_face,
)
from proxy.simulator.echo import EchoCredentialsInErrors
from proxy.simulator.engine import Engine
from proxy.simulator.files import FileStore
from proxy.simulator.ledger import PriceBook
from proxy.simulator.options import SimulatorOptions
from proxy.simulator.state import SimulatorState

JSON = "application/json"


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body = error_bytes(exc.message, exc.error_type, param=exc.param, code=exc.code)
    return Response(body, status_code=exc.status, media_type=JSON, headers=exc.headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Unknown request URL." if exc.status_code == 404 else str(exc.detail)
    body = error_bytes(message, "invalid_request_error", code="unknown_url" if exc.status_code == 404 else None)
    return Response(body, status_code=exc.status_code, media_type=JSON)


async def _validation_error(_: Request, exc: Exception) -> Response:
    return Response(error_bytes(str(exc), "invalid_request_error"), status_code=400, media_type=JSON)


def create_simulator_app(
    options: SimulatorOptions,
    *,
    clock: Callable[[], float] = time.time,
    prices: PriceBook | None = None,
) -> FastAPI:
    state = SimulatorState(engine=Engine(options, clock=clock, prices=prices), files=FileStore(clock))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.files.close()

    app = FastAPI(
        title="batchgate simulated upstream",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.simulator = state
    app.add_route("/v1/chat/completions", openai_face.chat_completions, methods=["POST"])
    app.include_router(openai_face.router, prefix="/v1")
    app.include_router(responses_face.router, prefix="/v1")
    azure_face.mount(app)
    app.add_route("/v1/messages", anthropic_face.messages, methods=["POST"])
    app.include_router(anthropic_face.router)
    app.include_router(mistral_face.router)
    app.include_router(xai_face.router)
    app.include_router(gemini_face.router)
    app.include_router(bedrock_face.router)
    app.include_router(bedrock_runtime.router)
    app.include_router(vertex_face.router)
    app.include_router(google_oauth.router)
    app.include_router(control.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(gemini_face.GoogleError, gemini_face.google_error)
    app.add_exception_handler(bedrock_face.AwsError, bedrock_face.aws_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(EchoCredentialsInErrors, state=state)
    return app
