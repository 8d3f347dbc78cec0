"""proxy/providers/openai_shape.py: provider answers made OpenAI-exact, checked against the vendored schemas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.providers import openai_shape
from tests.support.openai_schema import assert_valid, errors

HEAD = {"id": "chatcmpl-1", "created": 1700000000, "model": "claude-haiku-4-5-20251001", "system_fingerprint": None}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def litellm_completion(**message: Any) -> dict[str, Any]:
    """The shape litellm's ModelResponse.model_dump() has: nulls for everything absent."""
    return {
        **HEAD,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "tool_calls": None, "function_call": None, "audio": None, **message},
            }
        ],
        "usage": {
            **USAGE,
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": None},
            "prompt_tokens_details": None,
        },
    }


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """The shape of litellm's ModelResponseStream.model_dump(): nulls for everything absent."""
    return {
        **HEAD,
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": None, "function_call": None, "content": None, **delta},
                "finish_reason": finish_reason,
            }
        ],
    }


def test_a_completion_loses_its_nulls_and_gains_what_the_schema_requires() -> None:
    raw = litellm_completion(content="hi")
    assert errors("CreateChatCompletionResponse", raw)
    shaped = openai_shape.completion(raw)
    assert_valid("CreateChatCompletionResponse", shaped)
    choice = shaped["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert choice["logprobs"] is None
    assert "system_fingerprint" not in shaped
    assert shaped["usage"] == {**USAGE, "completion_tokens_details": {"reasoning_tokens": 0}}


def test_a_tool_call_answer_keeps_its_calls_and_a_null_content() -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    shaped = openai_shape.completion(litellm_completion(content=None, tool_calls=[call]))
    assert_valid("CreateChatCompletionResponse", shaped)
    assert shaped["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [call],
    }


def test_logprobs_objects_get_their_required_keys() -> None:
    raw = litellm_completion(content="hi")
    raw["choices"][0]["logprobs"] = {"content": [{"token": "hi", "logprob": -0.1, "bytes": None}]}
    shaped = openai_shape.completion(raw)
    assert_valid("CreateChatCompletionResponse", shaped)
    assert shaped["choices"][0]["logprobs"] == {
        "content": [{"token": "hi", "logprob": -0.1, "bytes": None, "top_logprobs": []}],
        "refusal": None,
    }


def test_chunks_without_usage_asked_carry_no_usage() -> None:
    raw = {**chunk({"content": "Hel"}), "usage": None}
    [shaped] = openai_shape.chunks(raw, include_usage=False)
    assert_valid("CreateChatCompletionStreamResponse", shaped)
    assert "usage" not in shaped
    assert shaped["choices"][0] == {"index": 0, "delta": {"content": "Hel"}, "finish_reason": None, "logprobs": None}
    [last] = openai_shape.chunks({**chunk({}, "stop"), "usage": USAGE}, include_usage=False)
    assert "usage" not in last


def test_with_usage_asked_content_chunks_carry_a_null_usage() -> None:
    [shaped] = openai_shape.chunks(chunk({"content": "Hel"}), include_usage=True)
    assert_valid("CreateChatCompletionStreamResponse", shaped)
    assert shaped["usage"] is None


def test_usage_on_a_chunk_with_a_finish_reason_is_split_into_its_own_chunk() -> None:
    raw = {**chunk({}, "stop"), "usage": USAGE}
    finished, usage_only = openai_shape.chunks(raw, include_usage=True)
    for shaped in (finished, usage_only):
        assert_valid("CreateChatCompletionStreamResponse", shaped)
    assert finished["choices"][0]["finish_reason"] == "stop"
    assert finished["usage"] is None
    assert usage_only["choices"] == []
    assert usage_only["usage"] == USAGE


def test_usage_on_an_empty_choice_becomes_the_usage_only_chunk() -> None:
    [usage_only] = openai_shape.chunks({**chunk({}), "usage": USAGE}, include_usage=True)
    assert_valid("CreateChatCompletionStreamResponse", usage_only)
    assert usage_only["choices"] == []
    assert usage_only["usage"] == USAGE


def test_tool_call_chunks_lose_their_null_ids_and_names() -> None:
    later = {"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": '{"city"'}}
    [shaped] = openai_shape.chunks(chunk({"tool_calls": [later]}), include_usage=False)
    assert_valid("CreateChatCompletionStreamResponse", shaped)
    assert shaped["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}


def test_include_usage_reads_stream_options() -> None:
    assert openai_shape.include_usage({"stream_options": {"include_usage": True}})
    assert not openai_shape.include_usage({"stream_options": {"include_usage": False}})
    assert not openai_shape.include_usage({"stream_options": None})
    assert not openai_shape.include_usage({})


def test_a_relayed_stream_is_reshaped_event_by_event_across_read_boundaries() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    last = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"total_tokens": 3}}
    sent = (
        b"data: "
        + orjson.dumps(chunk)
        + b"\n\ndata: "
        + orjson.dumps(last)
        + b"\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n"
    )

    async def reads(size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(sent), size):
            yield sent[start : start + size]

    async def relayed(size: int) -> bytes:
        return b"".join([part async for part in openai_shape.stream_bytes(reads(size))])

    for size in (1, 7, len(sent)):
        events = asyncio.run(relayed(size)).split(b"\n\n")
        assert events[-2:] == [b"data: [DONE]", b""]
        assert events[3] == b": keep-alive"
        first, content_end, usage = (orjson.loads(event.removeprefix(b"data: ")) for event in events[:3])
        assert (first["usage"], first["choices"][0]["finish_reason"]) == (None, None)
        assert (content_end["usage"], content_end["choices"][0]["finish_reason"]) == (None, "stop")
        assert (usage["choices"], usage["usage"]) == ([], {"total_tokens": 3})


def test_an_answer_that_is_not_a_json_object_is_relayed_as_it_came() -> None:
    assert openai_shape.completion_bytes(b"not json") == b"not json"
    assert openai_shape.completion_bytes(b"[1]") == b"[1]"
    deep = b"[" * 2000 + b"]" * 2000
    assert openai_shape.completion_bytes(deep) == deep
