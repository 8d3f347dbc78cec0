"""The simulated Responses API (`/v1/responses`): validation, deterministic answers with honest usage, the
event stream, and the stored responses behind GET / cancel / DELETE.

The answer is the chat answer (proxy/simulator/answers.py) to the same conversation read from the Responses
body: `instructions` as a system message, then `input` (a string is one user message; each item with a `role`
is a message whose text is its string content or its parts' `text`s; any other item counts as its canonical
JSON under its `type`); `tools` and `text` count as extra prompt tokens; `max_output_tokens` cuts the answer
(status `incomplete`, reason `max_output_tokens`). Usage: `input_tokens` = the chat prompt tokens,
`output_tokens` = the answer's tokens. Answers are text only (a function tool is counted, never called).

A response is stored (for GET, cancel, DELETE) unless `store: false`, as OpenAI does; lines of a batch are not.
Only a `background: true` response can be cancelled (it is already finished here: cancel returns it as is).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import orjson

from proxy.simulator.answers import Answer, answer, content_text, prompt_from_body

ENDPOINT = "/v1/responses"
Problem = tuple[str, str | None]


def response_problem(body: Any) -> Problem | None:
    """(message, param) for a body OpenAI refuses with a 400, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    problem = _input_problem(body.get("input"))
    if problem:
        return problem
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 16):
        return "Invalid 'max_output_tokens': integer below minimum value (16).", "max_output_tokens"
    return None


def _input_problem(value: Any) -> Problem | None:
    if value is None:
        return "Missing required parameter: 'input'.", "input"
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        return "Invalid 'input': expected a string or a non-empty array of input items.", "input"
    if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
        return "Invalid 'input': each input item must be an object.", "input"
    return None


def response_answer(body: Mapping[str, Any]) -> Answer:
    """The answer to a valid body."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": content_text(body["instructions"])})
    value = body["input"]
    for item in [{"role": "user", "content": value}] if isinstance(value, str) else value:
        if "role" in item:
            messages.append({"role": str(item["role"]), "content": item.get("content")})
        else:
            canonical = orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()
            messages.append({"role": str(item.get("type", "")), "content": canonical})
    chat = {
        "model": body["model"],
        "messages": messages,
        "tools": body.get("tools"),
        "response_format": body.get("text"),
        "max_tokens": body.get("max_output_tokens"),
    }
    return replace(answer(prompt_from_body(chat)), response=True)


def response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def response_object(
    model: str, answer: Answer, body: Mapping[str, Any], *, rid: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """OpenAI's Response object (`object: response`) for an answer."""
    rid = rid or response_id()
    complete = answer.finish_reason != "length"
    return {
        **_envelope(model, body, rid, created, status="completed" if complete else "incomplete"),
        "incomplete_details": None if complete else {"reason": "max_output_tokens"},
        "output": [_message(rid, answer.content, "completed")],
        "usage": usage_json(answer),
    }


def usage_json(answer: Answer) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.total_tokens,
    }


def stream_events(final: Mapping[str, Any], *, chunk_chars: int) -> Iterator[bytes]:
    """The event stream of a finished response, as OpenAI sends it: `response.created`, `response.in_progress`,
    the output item, its text part and deltas, their `.done` events, then `response.completed` (or
    `response.incomplete`) with the whole response and its usage."""
    started = {**final, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    item = final["output"][0]
    text = item["content"][0]["text"]
    at = {"output_index": 0, "item_id": item["id"]}
    part = {**at, "content_index": 0}
    sequence = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(sequence), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    yield event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    yield event("response.content_part.added", **part, part={"type": "output_text", "text": "", "annotations": []})
    step = max(chunk_chars, 1)
    for start in range(0, len(text), step):
        yield event("response.output_text.delta", **part, delta=text[start : start + step], logprobs=[])
    yield event("response.output_text.done", **part, text=text, logprobs=[])
    yield event("response.content_part.done", **part, part=item["content"][0])
    yield event("response.output_item.done", output_index=0, item=item)
    yield event("response.completed" if final["status"] == "completed" else "response.incomplete", response=final)


def cancel_problem(stored: Mapping[str, Any]) -> str | None:
    """Why a stored response cannot be cancelled (None: it can)."""
    return None if stored.get("background") is True else "Only responses created with background=true can be cancelled."


def deleted(rid: str) -> dict[str, Any]:
    return {"id": rid, "object": "response.deleted", "deleted": True}


def _envelope(model: str, body: Mapping[str, Any], rid: str, created: int | None, *, status: str) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": created if created is not None else int(time.time()),
        "status": status,
        "background": body.get("background") is True,
        "error": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": model,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store") is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "user": body.get("user"),
    }


def _message(rid: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": f"msg_{rid.removeprefix('resp_')}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
