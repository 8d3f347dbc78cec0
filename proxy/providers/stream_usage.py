"""Every streamed answer priced from real usage: batchgate asks each upstream stream for its usage
(`stream_options.include_usage`), reads it, and hands a caller that did not ask for it exactly the stream the
upstream would have sent without it.

OpenAI's wire format with `include_usage` (the chat-completions streaming reference): every chunk carries
`"usage": null`, and one last chunk before `data: [DONE]` has `"choices": []` and the whole request's usage.
For a caller that did not ask, `UsageTap(strip=True)` drops that usage-only chunk and the `usage` field of every
other chunk; a caller that asked gets the bytes unchanged (the tail is kept and read when asked for).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

USAGE_KEY = b'"usage"'
TAIL_BYTES = 8192
SSE_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # the end of one server-sent event
_NULL_USAGE_LAST = b',"usage":null}'


def usage_requested(body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the body to send upstream, whether batchgate added the usage request and must strip it from the answer).

    A body whose `stream_options` the upstream would refuse (not an object, `include_usage` not a boolean) is
    sent as it is: the caller gets the upstream's own answer to it."""
    options = body.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not isinstance(options.get("include_usage", False), bool):
        return dict(body), False
    if options.get("include_usage"):
        return dict(body), False
    return {**body, "stream_options": {**options, "include_usage": True}}, True


class UsageTap:
    """Relays an SSE stream and reads its `usage`; with `strip`, removes the usage batchgate asked for.

    `usage` is the last `usage` object seen (None until one arrives, or when the stream had none)."""

    def __init__(self, *, strip: bool) -> None:
        self.strip = strip
        self._usage: dict[str, Any] | None = None
        self._tail = b""
        self._pending = b""

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._usage if self.strip else last_usage(self._tail)

    async def relay(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream as the caller gets it; closing it closes `chunks`."""
        try:
            async for chunk in chunks:
                if not self.strip:
                    self._tail = (self._tail + chunk)[-TAIL_BYTES:]
                    yield chunk
                    continue
                kept = self._feed(chunk)
                if kept:
                    yield kept
            if self._pending:  # a last event without its blank line
                rest, self._pending = self._pending, b""
                kept = self._event(rest) or b""
                if kept:
                    yield kept
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    def _feed(self, chunk: bytes) -> bytes:
        """The complete events of `pending + chunk`, stripped; an incomplete last event waits for its end."""
        buffer = self._pending + chunk
        kept: list[bytes] = []
        start = 0
        for end in SSE_EVENT_END.finditer(buffer):
            event = self._event(buffer[start : end.end()])
            start = end.end()
            if event:
                kept.append(event)
        self._pending = buffer[start:]
        return b"".join(kept)

    def _event(self, event: bytes) -> bytes | None:
        """One SSE event (with its terminator) as the caller gets it; None when it is dropped."""
        if USAGE_KEY not in event:
            return event
        body = event.rstrip(b"\r\n")
        terminator = event[len(body) :]
        lines = body.splitlines()
        data = [index for index, line in enumerate(lines) if line.startswith(b"data:")]
        if not data:
            return event
        payload = b"\n".join(_field_value(lines[index]) for index in data)
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict) or "usage" not in chunk:
            return event
        usage = chunk.pop("usage")
        if isinstance(usage, dict):
            self._usage = usage
            if not chunk.get("choices"):
                return None  # the usage-only chunk
        if usage is None and payload.endswith(_NULL_USAGE_LAST):
            stripped = payload[: -len(_NULL_USAGE_LAST)] + b"}"  # byte for byte what the upstream sends otherwise
        else:
            stripped = orjson.dumps(chunk)
        newline = b"\r\n" if terminator.startswith(b"\r\n") else b"\n"
        lines[data[0]] = b"data: " + stripped
        kept = [line for index, line in enumerate(lines) if index not in data[1:]]
        return newline.join(kept) + terminator


def _field_value(line: bytes) -> bytes:
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value


def last_usage(tail: bytes) -> dict[str, Any] | None:
    """The `usage` object of the last SSE data event in `tail` that carries one (None when none does)."""
    for line in reversed(tail.split(b"\n")):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]" or USAGE_KEY not in payload:
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue  # cut at the start of the kept tail
        if isinstance(event, dict) and isinstance(event.get("usage"), dict):
            usage: dict[str, Any] = event["usage"]
            return usage
    return None
