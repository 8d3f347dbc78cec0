"""Logging: one structured line per request (JSON when asked), request ids, secrets redacted: the configured
secret values themselves and their encodings (`mask_secrets_in_logs`), and anything shaped like a key."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.providers.redaction import Redactor

REQUEST_ID_HEADER = "x-request-id"
OWN_REQUEST_ID_HEADER = "x-batchgate-request-id"
ACCESS_LOGGER = "batchgate.access"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SECRET_PATTERN = re.compile(r"(sk-[A-Za-z0-9_-]{6,}|whsec_[A-Za-z0-9+/=]{6,}|Bearer\s+\S+)")
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def redact(text: str) -> str:
    """Mask anything shaped like an API key, a webhook secret or a bearer token."""
    return _SECRET_PATTERN.sub(lambda match: match.group(0)[:5] + "***", text)


class SecretMaskingFormatter(logging.Formatter):
    """A formatter that masks the configured secret values (set by `mask_secrets_in_logs`) and key shapes."""

    redactor: Redactor = Redactor(())

    def redact(self, text: str) -> str:
        return redact(self.redactor.text(text))


class JsonFormatter(SecretMaskingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                entry[key] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(SecretMaskingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{key}={value}" for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES)
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return self.redact(line)


def mask_secrets_in_logs(secrets: Iterable[str], logger: logging.Logger | None = None) -> int:
    """Mask these secret values (and their encodings) in every line that the handlers of `logger` (default:
    the root logger) write with a SecretMaskingFormatter; replaces the values set before. Returns how many
    handlers now mask them."""
    redactor = Redactor(secrets)
    masking = 0
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler.formatter, SecretMaskingFormatter):
            handler.formatter.redactor = redactor
            masking += 1
    return masking


def configure_logging(level: str, *, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # No line shows the caller's file and line, the thread or the process: not gathering them for every record
    # (a walk of the stack each) is the logging HOWTO's "Optimization"; measured ~3% of the CPU under load.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for noisy in ("httpx", "httpcore", "LiteLLM", "litellm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
