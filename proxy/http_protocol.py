"""uvicorn's HTTP protocol, answering a request it cannot parse in OpenAI's error shape.

uvicorn answers malformed HTTP (a broken request line, an invalid header, a bad chunk) itself, before any app
sees it, with a plain-text 400. Same status and same closed connection here, but the body is
`{"error": {"message", "type": "invalid_request_error", "param": null, "code": "invalid_http_request"}}`, so
an OpenAI client parses it like any other error. `batchgate serve` passes this class as uvicorn's `http`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import JSON_MEDIA_TYPE, error_bytes
from proxy.write_coalescing import CoalescingTransport

MALFORMED_CODE = "invalid_http_request"


def malformed_http_answer(message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole HTTP/1.1 400 answer (status line, headers, JSON body) to a request that could not be parsed."""
    body = error_bytes(message, "invalid_request_error", code=MALFORMED_CODE)
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    lines.extend(name + b": " + value + b"\r\n" for name, value in default_headers)
    lines.append(b"content-type: " + JSON_MEDIA_TYPE.encode() + b"\r\n")
    lines.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
    lines.append(b"connection: close\r\n\r\n")
    return b"".join(lines) + body


class OpenAIErrorHttpToolsProtocol(HttpToolsProtocol):
    """httptools-based HTTP/1.1, as `http="httptools"` gives, with the malformed-request answer above, and
    an answer's headers and body sent in one write (proxy/write_coalescing.py)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_http_answer(msg, list(self.server_state.default_headers)))
        self.transport.close()
