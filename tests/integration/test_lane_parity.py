"""Lane parity on the Anthropic path: the same calls sent synchronously (litellm) and deferred to a Message
Batch, against the strict simulator. The simulator is wrapped in a recorder of what it received, so each call is
checked twice: the batch line's `params` equal the body the sync lane POSTed to `/v1/messages` (with the same
`anthropic-beta` features), and the two answers have the same shape. A call Claude refuses is refused alike on
both lanes, before anything reaches the upstream."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from proxy.simulator.app import create_simulator_app
from proxy.simulator.options import SimulatorOptions
from proxy.worker.process import run_in_app
from tests.integration.test_anthropic_stack import CLAUDE, DEFER, FAST_SIMULATOR, claude_deployment
from tests.support.servers import ServerThread
from tests.support.stack import Stack, config_document, serving

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
PNG = (  # one transparent pixel
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = "data:application/pdf;base64,JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"

# case -> the fields Claude has no counterpart for, as X-Batchgate-Decision names them (docs/field-lanes.md)
DROPPED = {"json-object": "response_format.type=json_object", "roles-and-options": "seed"}

# name -> the request's fields besides model; each case's first user text names it, to find it upstream
CASES: dict[str, dict[str, Any]] = {
    "tools-multi-turn": {
        "messages": [
            {"role": "user", "content": "case tools-multi-turn: weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    },
    "json-schema-strict": {
        "messages": [{"role": "user", "content": "case json-schema-strict: answer in JSON"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "reply", "strict": True, "schema": {**SCHEMA, "additionalProperties": False}},
        },
    },
    "json-object": {
        "messages": [{"role": "user", "content": "case json-object: answer in JSON"}],
        "response_format": {"type": "json_object"},
    },
    "image-and-file": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "case image-and-file: what do these show?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "file", "file": {"file_data": PDF, "filename": "empty.pdf"}},
                ],
            }
        ],
    },
    "reasoning": {
        "messages": [{"role": "user", "content": "case reasoning: think it over"}],
        "reasoning_effort": "low",
    },
    "roles-and-options": {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "developer", "content": "Use plain words."},
            {"role": "user", "content": "case roles-and-options: what is a batch?"},
        ],
        "temperature": 0.2,
        "stop": ["END"],
        "seed": 7,
        "max_completion_tokens": 300,
        "max_tokens": 100,
    },
}
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "temperature-and-top-p": ({"temperature": 0.3, "top_p": 0.9}, "top_p"),
    "several-choices": ({"n": 2}, "n"),
    "logprobs": ({"logprobs": True}, "logprobs"),
}


class Recorder:
    """ASGI wrapper: every POST under /v1/messages is recorded as (path, lower-cased headers, JSON body)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, dict[str, str], Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/messages"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.seen.append((scope["path"], headers, orjson.loads(body)))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def sync_call(self, case: str) -> tuple[dict[str, Any], dict[str, str]]:
        """(params, headers) of the one /v1/messages call whose text names `case`."""
        found = [(body, headers) for path, headers, body in self.seen if path == "/v1/messages" and _names(body, case)]
        assert len(found) == 1, f"{case}: {len(found)} sync calls upstream"
        return found[0]

    def batch_line(self, case: str) -> tuple[dict[str, Any], dict[str, str]]:
        """(params, headers of its batch) of the one Message Batch request whose text names `case`."""
        found = [
            (request["params"], headers)
            for path, headers, body in self.seen
            if path == "/v1/messages/batches"
            for request in body["requests"]
            if _names(request["params"], case)
        ]
        assert len(found) == 1, f"{case}: {len(found)} batch lines upstream"
        return found[0]


def _names(params: Any, case: str) -> bool:
    return f"case {case}:".encode() in orjson.dumps(params)


def betas(headers: dict[str, str]) -> set[str]:
    return {item.strip() for item in headers.get("anthropic-beta", "").split(",") if item.strip()}


def shape(value: Any) -> Any:
    """The JSON shape of an answer: keys and value types, not values (ids, times and texts differ per call)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items() if key not in ("id", "created")}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@contextlib.contextmanager
def recorded_stack(tmp_path: Path, redis_url: str) -> Iterator[tuple[Stack, Recorder]]:
    recorder = Recorder(create_simulator_app(SimulatorOptions(**FAST_SIMULATOR)))
    with ServerThread(recorder) as upstream:
        document = config_document(upstream.url, delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 60})
        document["model_list"].append(claude_deployment(upstream.url))
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield stack, recorder


def test_the_sync_and_batch_lanes_send_and_answer_alike(tmp_path: Path, redis_url: str) -> None:
    with recorded_stack(tmp_path, redis_url) as (stack, recorder), stack.client(timeout=90) as client:
        sync_answers, sync_decisions = {}, {}
        for name, fields in CASES.items():
            raw = client.chat.completions.with_raw_response.create(model=CLAUDE, **fields)
            assert raw.headers["x-batchgate-decision"].startswith("lane=sync"), name
            sync_answers[name] = orjson.loads(raw.content)
            sync_decisions[name] = raw.headers["x-batchgate-decision"]

        def deferred(name: str) -> tuple[str, dict[str, Any]]:
            raw = client.chat.completions.with_raw_response.create(model=CLAUDE, extra_headers=DEFER, **CASES[name])
            assert raw.headers["x-batchgate-decision"].startswith("lane=batch"), raw.headers["x-batchgate-decision"]
            return raw.headers["x-batchgate-decision"], orjson.loads(raw.content)

        with ThreadPoolExecutor(len(CASES)) as pool:
            batch_results = dict(zip(CASES, pool.map(deferred, CASES), strict=True))
        batch_answers = {name: answer for name, (_, answer) in batch_results.items()}

        for name in CASES:
            sync_params, sync_headers = recorder.sync_call(name)
            line_params, batch_headers = recorder.batch_line(name)
            assert line_params == sync_params, name
            # a batch's beta features apply to all its lines: it carries every one the sync call needed
            assert betas(sync_headers) <= betas(batch_headers), name
            assert shape(batch_answers[name]) == shape(sync_answers[name]), name
        strict_params, strict_headers = recorder.sync_call("json-schema-strict")
        assert "output_format" in strict_params
        assert betas(strict_headers)
        assert recorder.sync_call("reasoning")[0]["thinking"]["type"] == "enabled"
        tool_turn = recorder.sync_call("tools-multi-turn")[0]["messages"][1]["content"]
        assert all(block.get("text") != "" for block in tool_turn)
        assert sync_answers["roles-and-options"]["choices"][0]["message"]["content"]
        # what Claude has no counterpart for is dropped on both lanes alike, and the decision says so
        for name, dropped in DROPPED.items():
            for decision in (sync_decisions[name], batch_results[name][0]):
                assert f'dropped="{dropped}"' in decision, (name, decision)
        assert "dropped=" not in sync_decisions["tools-multi-turn"]
        assert "seed" not in recorder.sync_call("roles-and-options")[0]

        sent_before = len(recorder.seen)
        for name, (fields, param) in REFUSED.items():
            request = {"model": CLAUDE, "messages": [{"role": "user", "content": f"case {name}: hi"}], **fields}
            for headers in ({}, DEFER):
                with pytest.raises(openai.BadRequestError) as refused:
                    client.chat.completions.create(**request, extra_headers=headers)
                assert f"`{param}`" in refused.value.response.json()["error"]["message"], (name, headers)
        assert len(recorder.seen) == sent_before  # refused before anything reached the upstream
