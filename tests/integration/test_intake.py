"""Poison never enters, and `metadata` never reaches a provider without `store: true`: over real HTTP with the
official openai client (httpx where the client cannot send the body), against the simulated upstream, which
records every request it receives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from proxy.simulator.app import create_simulator_app
from proxy.simulator.engine import expected_content
from proxy.simulator.options import SimulatorOptions
from proxy.worker.process import run_in_app
from tests.integration.test_anthropic_stack import CLAUDE, FAST_SIMULATOR, claude_deployment
from tests.support.servers import ServerThread
from tests.support.stack import MASTER_KEY, Stack, config_document, serving

GPT = "gpt-4o-mini"
DEFER = {"X-Batch-Deadline": "1h"}
LINE_LIMIT = 2048  # batching.max_bytes: no batch line may be larger
POLICY = {
    "rules": [
        {"name": "evals", "match": {"metadata": {"purpose": "eval*"}}, "lane": "batch", "deadline": "1h"},
        {"name": "tagged", "match": {"metadata": {"team-tag": "*"}}, "lane": "sync"},
    ]
}


@dataclass
class Recorder:
    """ASGI middleware keeping (path, body) of every HTTP request the wrapped app receives."""

    app: Any
    seen: list[tuple[str, bytes]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):  # kept before any answer: a caller never sees it first
                    self.seen.append((scope["path"], b"".join(chunks)))
            return message

        await self.app(scope, recording, send)

    def bodies(self, path: str) -> list[bytes]:
        return [body for seen, body in self.seen if seen == path]


@dataclass
class Recorded:
    stack: Stack
    upstream: Recorder


@pytest.fixture
def recorded(tmp_path: Path, redis_url: str) -> Iterator[Recorded]:
    recorder = Recorder(create_simulator_app(SimulatorOptions(**FAST_SIMULATOR)))
    with ServerThread(recorder) as upstream:
        document = config_document(
            upstream.url,
            policy=POLICY,
            batching={"max_wait": "1s", "turnaround_estimate": "5s", "max_bytes": LINE_LIMIT},
            delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30},
        )
        document["model_list"].append(claude_deployment(upstream.url))
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield Recorded(stack, recorder)


def nested(depth: int) -> Any:
    """A JSON schema `depth` levels deep (arrays of arrays of ... strings)."""
    value: Any = {"type": "string"}
    for _ in range(depth - 1):
        value = {"type": "array", "items": value}
    return value


def deep_tools(depth: int) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "lookup", "parameters": nested(depth)}}]


MESSAGES = [{"role": "user", "content": "Name three prime numbers."}]
LANES = [pytest.param({}, id="sync"), pytest.param(DEFER, id="deferred")]


def refused(stack: Stack, headers: dict[str, str], **fields: Any) -> openai.BadRequestError:
    with stack.client(timeout=30) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=GPT, messages=MESSAGES, extra_headers=headers, **fields)
    return caught.value


@pytest.mark.parametrize("headers", LANES)
def test_a_body_nested_hundreds_of_levels_is_a_400_naming_its_field(
    recorded: Recorded, headers: dict[str, str]
) -> None:
    for depth in (100, 300, 600):  # 300 and 600 are past what orjson writes (254): a worker could never send them
        error = refused(recorded.stack, headers, tools=deep_tools(depth))
        assert error.status_code == 400
        assert error.param == "tools"
        assert "nested too deeply" in error.message
    assert not recorded.upstream.bodies("/v1/chat/completions")


def test_a_body_within_the_depth_bound_is_answered(recorded: Recorded) -> None:
    with recorded.stack.client(timeout=30) as client:
        completion = client.chat.completions.create(model=GPT, messages=MESSAGES, tools=deep_tools(40))  # type: ignore[arg-type]
    assert completion.choices


BAD_FIELDS = [
    pytest.param({"service_tier": "cheapest"}, "service_tier", id="service_tier-value"),
    pytest.param({"extra_body": {"service_tier": 5}}, "service_tier", id="service_tier-type"),
    pytest.param({"extra_body": {"metadata": ["purpose", "eval"]}}, "metadata", id="metadata-array"),
    pytest.param({"extra_body": {"metadata": {"purpose": 7}}}, "metadata", id="metadata-number"),
    pytest.param({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", id="metadata-17-pairs"),
    pytest.param({"metadata": {"k" * 65: "v"}}, "metadata", id="metadata-long-key"),
    pytest.param({"metadata": {"purpose": "v" * 513}}, "metadata", id="metadata-long-value"),
    pytest.param({"extra_body": {"n": "2"}}, "n", id="n-string"),
    pytest.param({"extra_body": {"temperature": [1]}}, "temperature", id="temperature-array"),
    pytest.param({"extra_body": {"store": "yes"}}, "store", id="store-string"),
    pytest.param({"extra_body": {"stop": ["ok", 3]}}, "stop", id="stop-number"),
    pytest.param({"extra_body": {"response_format": "json"}}, "response_format", id="response_format-string"),
]


@pytest.mark.parametrize("headers", LANES)
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_output_cap_below_one_is_a_400_before_any_lane(
    recorded: Recorded, headers: dict[str, str], field: str
) -> None:
    # a deferred call used to be accepted (202) and failed by its batch line hours later
    error = refused(recorded.stack, headers, extra_body={field: -5})
    assert error.param == field
    assert error.code == "integer_below_min_value"
    assert error.response.headers["x-batchgate-decision"] == "lane=none; reason=integer_below_min_value"
    assert not recorded.upstream.bodies("/v1/chat/completions")


@pytest.mark.parametrize("headers", LANES)
@pytest.mark.parametrize(("fields", "param"), BAD_FIELDS)
def test_a_field_of_the_wrong_type_is_a_400_naming_it(
    recorded: Recorded, headers: dict[str, str], fields: dict[str, Any], param: str
) -> None:
    error = refused(recorded.stack, headers, **fields)
    assert error.status_code == 400
    assert error.param == param
    assert error.code in ("invalid_type", "invalid_value")
    assert not recorded.upstream.bodies("/v1/chat/completions")


def test_a_message_content_of_the_wrong_type_is_a_400_naming_it(recorded: Recorded) -> None:
    with recorded.stack.client(timeout=30) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": 42}])  # type: ignore[list-item]
    assert caught.value.param == "messages[0].content"


def test_a_lone_surrogate_is_a_400(recorded: Recorded) -> None:
    # the official client cannot encode a lone surrogate as UTF-8; an escaped one arrives as JSON text
    response = httpx.post(
        recorded.stack.url + "/v1/chat/completions",
        content=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x\\ud800y"}]}',
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json", **DEFER},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_deferred_body_whose_batch_line_is_too_large_is_a_400_and_sync_still_answers(recorded: Recorded) -> None:
    big = [{"role": "user", "content": "word " * (LINE_LIMIT // 5)}]
    with recorded.stack.client(timeout=30) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=GPT, messages=big, extra_headers=DEFER)  # type: ignore[arg-type]
        assert caught.value.param == "messages"
        assert caught.value.code == "request_too_large"
        assert str(LINE_LIMIT) in caught.value.message
        # the synchronous lane builds no batch line: the same body is answered
        completion = client.chat.completions.create(model=GPT, messages=big)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == expected_content({"model": GPT, "messages": big})


def sent_chat_bodies(recorder: Recorder, path: str) -> list[dict[str, Any]]:
    return [orjson.loads(body) for body in recorder.bodies(path)]


def test_sync_fast_path_sends_metadata_only_with_store(recorded: Recorded) -> None:
    stack = recorded.stack
    with stack.client(timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, metadata={"team-tag": "search"}
        )
        assert raw.http_response.status_code == 200
        assert "rule=tagged" in raw.headers["x-batchgate-decision"]  # the metadata matched the rule
        stored = client.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, metadata={"team-tag": "kept"}, store=True
        )
        assert "rule=tagged" in stored.headers["x-batchgate-decision"]
    first, second = sent_chat_bodies(recorded.upstream, "/v1/chat/completions")
    assert "metadata" not in first
    assert second["metadata"] == {"team-tag": "kept"}
    assert second["store"] is True


def test_litellm_path_does_not_send_openai_metadata(recorded: Recorded) -> None:
    with recorded.stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=CLAUDE, messages=MESSAGES, metadata={"team-tag": "search"}
        )
    assert raw.http_response.status_code == 200
    assert "rule=tagged" in raw.headers["x-batchgate-decision"]
    [sent] = sent_chat_bodies(recorded.upstream, "/v1/messages")
    assert "team-tag" not in orjson.dumps(sent).decode()


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_a_batch_line_carries_no_metadata_and_the_rule_still_matched(recorded: Recorded, model: str) -> None:
    question = f"batched question for {model}"
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    with recorded.stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(**body, metadata={"purpose": "eval-42"})
    completion = raw.parse()
    assert raw.http_response.status_code == 200
    assert raw.headers["x-batchgate-decision"].startswith("lane=batch; rule=evals")
    assert completion.choices[0].message.content == expected_content(body)
    sent = sent_batch_requests(recorded.upstream, model, question)
    assert sent
    for params in sent:
        assert "metadata" not in params or set(params["metadata"]) == {"user_id"}
        assert "eval-42" not in orjson.dumps(params).decode()


def sent_batch_requests(recorder: Recorder, model: str, question: str) -> list[dict[str, Any]]:
    """The request bodies carrying `question` that went upstream in batches: OpenAI JSONL lines' `body` from
    the multipart file uploads, Anthropic Message Batch requests' `params`."""
    if model == GPT:
        lines = [line for upload in recorder.bodies("/v1/files") for line in upload.split(b"\n")]
        return [orjson.loads(line)["body"] for line in lines if line.startswith(b"{") and question.encode() in line]
    requests = [item for upload in recorder.bodies("/v1/messages/batches") if upload
                for item in orjson.loads(upload)["requests"]]  # fmt: skip
    return [item["params"] for item in requests if question in orjson.dumps(item).decode()]
