"""The `echo_credentials_in_errors` knob: every error answer quotes the credential the caller sent."""

from __future__ import annotations

import base64
from urllib.parse import quote

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.simulator.state import SimulatorState


def presented_credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key in `Authorization: Bearer <key>`, `x-api-key`, (Azure) `api-key` or (Gemini) `x-goog-api-key`."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
        if lowered in (b"x-api-key", b"api-key", b"x-goog-api-key") and value.strip():
            return value.decode("latin-1").strip()
    return None


def echoed(message: str, key: str) -> str:
    basic = base64.b64encode(f"user:{key}".encode()).decode()
    return (
        f"{message} (credential received: {key}; base64: {base64.b64encode(key.encode()).decode()}; "
        f"as Basic: {basic}; url-encoded: {quote(key, safe='')})"
    )


class EchoCredentialsInErrors:
    """ASGI middleware: when the knob is on, the `error.message` of every JSON error answer (status >= 400)
    gets the presented credential appended in several encodings."""

    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = presented_credential(scope.get("headers", [])) if scope["type"] == "http" else None
        if key is None or not self.state.engine.options.echo_credentials_in_errors:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _with_echo(b"".join(chunks), key)
            headers = [(n, v) for n, v in start.get("headers", []) if n.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


def _with_echo(body: bytes, key: str) -> bytes:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return echoed(body.decode("utf-8", "replace"), key).encode()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return body
    error["message"] = echoed(str(error.get("message") or ""), key)
    return orjson.dumps(parsed)
