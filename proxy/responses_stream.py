"""Reading the usage of a relayed Responses API event stream (SSE), for the books.

The stream (OpenAI's Responses streaming reference) runs `response.created`, `response.in_progress`, output
events, and ends with `response.completed` (or `response.incomplete` / `response.failed`), whose `response`
object carries the whole call's `usage` (`input_tokens`, `output_tokens`, `input_tokens_details`). The bytes go
to the caller unchanged as they arrive; only the events that can carry usage are parsed, and only the event
being received is buffered (a final event holds the whole response, so a tail of fixed size would not do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.providers.stream_usage import SSE_EVENT_END, UsageTap

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_FINAL_MARKERS = (b"response.completed", b"response.incomplete", b"response.failed")


class ResponsesUsageTap(UsageTap):
    """Relays a Responses event stream unchanged; `usage` is the final event's (None until it arrives)."""

    def __init__(self) -> None:
        super().__init__(strip=False)
        self._final: dict[str, Any] | None = None
        self._partial = b""

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._final

    async def relay(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                self._read(chunk)
                yield chunk
            if self._partial:  # a last event without its blank line
                self._event(self._partial)
                self._partial = b""
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    def _read(self, chunk: bytes) -> None:
        buffer = self._partial + chunk
        start = 0
        for end in SSE_EVENT_END.finditer(buffer):
            self._event(buffer[start : end.start()])
            start = end.end()
        self._partial = buffer[start:]

    def _event(self, event: bytes) -> None:
        if not any(marker in event for marker in _FINAL_MARKERS):
            return
        data = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
        try:
            parsed = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            return
        if not isinstance(parsed, dict) or parsed.get("type") not in FINAL_EVENTS:
            return
        response = parsed.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            self._final = usage
