"""The access log: one line per HTTP request, under a request id (the caller's when it sent a safe one).

Kept apart from `proxy/logs.py` (formatters, secret masking) because it is ASGI middleware: the worker process
configures logging without loading the web framework.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.logs import ACCESS_LOGGER

REQUEST_ID_HEADER = "x-request-id"
OWN_REQUEST_ID_HEADER = "x-batchgate-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestLogMiddleware:
    """Assigns a request id (the caller's `X-Request-Id` when it sent a safe one) and writes one access line per
    HTTP request. The id is answered in `X-Batchgate-Request-Id`, and in `X-Request-Id` too unless the answer
    already carries the upstream provider's request id there (passed through by the chat route).

    Handlers add `team`, `model` and `decision` to `scope["state"]`; they appear in the line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._id_prefix = secrets.token_hex(6)
        self._id_counter = itertools.count(1)

    @property
    def state(self) -> Any:
        """The wrapped app's state (the Runtime lives on it)."""
        return getattr(self.app, "state", None)

    def _next_id(self) -> str:
        """Unique across processes (random per-process prefix) and cheap per request (a counter)."""
        return f"{self._id_prefix}{next(self._id_counter):010x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or self._next_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                own = request_id.encode()
                headers.append((OWN_REQUEST_ID_HEADER.encode(), own))
                if not any(name.lower() == REQUEST_ID_HEADER.encode() for name, _ in headers):
                    headers.append((REQUEST_ID_HEADER.encode(), own))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope.get("path") not in ("/metrics", "/healthz", "/readyz"):
                extra = {
                    "request_id": request_id,
                    "team": state.get("team"),
                    "model": state.get("model"),
                    "decision": state.get("decision"),
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                }
                # Written in the loop's next step: the answer's coalesced write (proxy/write_coalescing.py) was
                # scheduled first, so it leaves before the line is formatted and written rather than after.
                asyncio.get_running_loop().call_soon(self._write_line, scope.get("method"), scope.get("path"), extra)

    def _write_line(self, method: str | None, path: str | None, extra: dict[str, Any]) -> None:
        self.logger.info("%s %s %s", method, path, extra["status"], extra=extra)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            return candidate if _SAFE_REQUEST_ID.match(candidate) else None
    return None
