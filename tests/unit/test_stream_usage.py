"""Stream usage: batchgate asks every upstream stream for its usage and hands a caller that did not ask the
stream the upstream would have sent it; a caller that asked gets the bytes unchanged."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.providers.stream_usage import UsageTap, usage_requested
from proxy.simulator.answers import answer_for
from proxy.simulator.openai_chat import sse_events

BODY: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def stream(body: dict[str, Any]) -> bytes:
    """The simulator's OpenAI-shaped stream for `body`, with its id and clock fixed so two answers compare."""
    raw = b"".join(sse_events(body, answer_for(body), chunk_chars=5))
    first = orjson.loads(raw.split(b"\n\n")[0][6:])
    return raw.replace(first["id"].encode(), b"chatcmpl-x").replace(
        f'"created":{first["created"]}'.encode(), b'"created":1'
    )


async def pieces(data: bytes, seed: int) -> AsyncIterator[bytes]:
    """`data` cut at random places, as a network delivers it."""
    rng = random.Random(seed)
    start = 0
    while start < len(data):
        end = start + rng.randint(1, 40)
        yield data[start:end]
        start = end


async def relayed(tap: UsageTap, data: bytes, seed: int = 0) -> bytes:
    return b"".join([chunk async for chunk in tap.relay(pieces(data, seed))])


def test_usage_is_asked_for_unless_the_caller_did() -> None:
    sent, added = usage_requested(BODY)
    assert added
    assert sent["stream_options"] == {"include_usage": True}
    assert "stream_options" not in BODY
    kept = {**BODY, "stream_options": {"include_obfuscation": False}}
    assert usage_requested(kept)[0]["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    for asked in ({"include_usage": True}, {"include_usage": "yes"}, ["not", "an", "object"]):
        sent, added = usage_requested({**BODY, "stream_options": asked})
        assert not added
        assert sent["stream_options"] == asked  # the upstream answers what the caller sent
    assert usage_requested({**BODY, "stream_options": {"include_usage": False}})[1]


@pytest.mark.parametrize("seed", range(5))
async def test_a_caller_that_did_not_ask_gets_the_stream_without_usage_byte_for_byte(seed: int) -> None:
    with_usage = stream({**BODY, "stream_options": {"include_usage": True}})
    assert with_usage.count(b'"usage"') > 3
    tap = UsageTap(strip=True)
    assert await relayed(tap, with_usage, seed) == stream(BODY)
    answer = answer_for(BODY)
    assert tap.usage is not None
    assert tap.usage["prompt_tokens"] == answer.prompt_tokens
    assert tap.usage["completion_tokens"] == answer.completion_tokens


async def test_a_caller_that_asked_gets_the_bytes_unchanged_and_the_usage_is_read() -> None:
    with_usage = stream({**BODY, "stream_options": {"include_usage": True}})
    tap = UsageTap(strip=False)
    assert await relayed(tap, with_usage, 7) == with_usage
    assert tap.usage is not None
    assert tap.usage["completion_tokens"] == answer_for(BODY).completion_tokens


async def test_crlf_events_other_fields_and_usage_on_a_content_chunk() -> None:
    """Some OpenAI-compatible servers end events with CRLF, send `event:` lines, or put the usage on the last
    content chunk: the usage is read and removed, everything else kept."""
    last = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3}}
    data = (
        b"event: message\r\ndata: " + orjson.dumps({"id": "c", "usage": None, "choices": [{"index": 0}]}) + b"\r\n\r\n"
        b"data: " + orjson.dumps(last) + b"\r\n\r\n"
        b"data: [DONE]\r\n\r\n"
    )
    tap = UsageTap(strip=True)
    out = await relayed(tap, data, 3)
    assert out == (
        b'event: message\r\ndata: {"id":"c","choices":[{"index":0}]}\r\n\r\n'
        b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    assert tap.usage == {"prompt_tokens": 3}


async def test_a_stream_with_no_usage_passes_unchanged_and_reports_none() -> None:
    plain = stream(BODY)
    for strip in (True, False):
        tap = UsageTap(strip=strip)
        assert await relayed(tap, plain, 1) == plain
        assert tap.usage is None
