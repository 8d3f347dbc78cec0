"""Every provider path answers exactly in OpenAI's shape: the raw JSON of each answer, recorded over real HTTP, is
validated against OpenAI's OpenAPI schemas (tests/support/openai_schemas.yaml): the fast OpenAI-shaped path and
the litellm path (Anthropic's Messages API), plain, with tool calls and streamed with and without usage; the batch
lane of both providers (held connection and the job object of GET /v1/deferred/{id}, which is also the webhook
payload); error bodies; /v1/models and /v1/models/{id}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.test_anthropic_stack import CLAUDE, anthropic_stack
from tests.integration.test_tool_calls import QUESTION, TOOLS
from tests.support.openai_schema import assert_valid, errors
from tests.support.stack import MASTER_KEY, MODELS, PROVIDER_KEY, Stack, running_stack

GPT = "gpt-4o-mini"
PATHS = [GPT, CLAUDE]  # the fast OpenAI-shaped path, and litellm to Anthropic's Messages API
COMPLETION = "CreateChatCompletionResponse"
CHUNK = "CreateChatCompletionStreamResponse"
ERROR = "ErrorResponse"


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with anthropic_stack(
        tmp_path, redis_url, delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30}
    ) as running:
        yield running


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=60) as client:
        yield client


def chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def answer(http: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = http.post("/v1/chat/completions", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    recorded: dict[str, Any] = response.json()
    return recorded


def stream(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a streamed answer, as sent (the stream must end with `data: [DONE]`)."""
    response = http.post("/v1/chat/completions", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


@pytest.mark.parametrize("model", PATHS)
def test_sync_answers_are_openai_exact(http: httpx.Client, model: str) -> None:
    plain = answer(http, chat(model, "what is a batch?"))
    assert_valid(COMPLETION, plain)
    assert plain["choices"][0]["message"]["content"]
    with_tools = answer(http, {"model": model, "messages": QUESTION, "tools": TOOLS})
    assert_valid(COMPLETION, with_tools)
    message = with_tools["choices"][0]["message"]
    assert message["tool_calls"]
    assert "function_call" not in message  # absent, not null
    assert "function_call" not in plain["choices"][0]["message"]
    assert "tool_calls" not in plain["choices"][0]["message"]


@pytest.mark.parametrize("model", PATHS)
def test_streamed_answers_are_openai_exact(http: httpx.Client, model: str) -> None:
    unasked = stream(http, chat(model, "stream me an answer please"))
    assert len(unasked) > 2
    for chunk in unasked:
        assert_valid(CHUNK, chunk)
        assert "usage" not in chunk  # no usage was asked for
        assert chunk["choices"]

    counted = stream(http, chat(model, "stream me an answer please", stream_options={"include_usage": True}))
    *content, usage_chunk = counted
    for chunk in counted:
        assert_valid(CHUNK, chunk)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] > 0
    assert all(chunk["usage"] is None and chunk["choices"] for chunk in content)
    assert content[-1]["choices"][0]["finish_reason"] == "stop"

    with_tools = stream(http, {"model": model, "messages": QUESTION, "tools": TOOLS})
    for chunk in with_tools:
        assert_valid(CHUNK, chunk)
    assert any(choice["delta"].get("tool_calls") for chunk in with_tools for choice in chunk["choices"])


@pytest.mark.parametrize("model", PATHS)
def test_batch_lane_answers_are_openai_exact(http: httpx.Client, model: str) -> None:
    held = http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": QUESTION, "tools": TOOLS},
        headers={"X-Batch-Deadline": "1h"},
    )
    assert held.status_code == 200, held.text
    assert held.headers["x-batchgate-decision"].startswith("lane=batch")
    assert_valid(COMPLETION, held.json())
    assert held.json()["choices"][0]["message"]["tool_calls"]
    job = http.get(f"/v1/deferred/{held.headers['x-batchgate-job']}").json()
    assert job["status"] == "completed"
    assert_valid(COMPLETION, job["response"])


@pytest.mark.parametrize("model", PATHS)
def test_error_answers_are_openai_exact(stack: Stack, http: httpx.Client, model: str) -> None:
    with stack.simulator() as sim:
        sim.post("/_sim/fail-next", json={"count": 1, "status": 400}).raise_for_status()
    failed = http.post("/v1/chat/completions", json=chat(model, "this one fails"))
    assert failed.status_code == 400
    assert_valid(ERROR, failed.json())
    invalid = http.post("/v1/chat/completions", json={"model": model, "messages": "not a list"})
    assert invalid.status_code == 400
    assert_valid(ERROR, invalid.json())
    unauthenticated = http.post(
        "/v1/chat/completions", json=chat(model, "hello"), headers={"authorization": "Bearer sk-wrong"}
    )
    assert unauthenticated.status_code == 401
    assert_valid(ERROR, unauthenticated.json())
    missing = http.get("/v1/deferred/dfr_doesnotexist")
    assert missing.status_code == 404
    assert_valid(ERROR, missing.json())


def test_answers_of_a_compatible_server_are_made_openai_exact(tmp_path: Path, redis_url: str) -> None:
    """An OpenAI-compatible server (here vLLM's shape: optional fields null, a stream's usage on its last content
    chunk) is relayed on the fast path, and its answers are made OpenAI-exact on the way."""
    models = {"vllm-model": "hosted_vllm/gpt-4o-mini"}
    simulator = {"compatible_server_nulls": True}
    with running_stack(tmp_path, redis_url, simulator=simulator, models=models) as compatible:
        headers = {"authorization": f"Bearer {MASTER_KEY}"}
        with httpx.Client(base_url=compatible.url, headers=headers, timeout=60) as client:
            with compatible.simulator() as sim:
                direct = {"authorization": f"Bearer {PROVIDER_KEY}"}
                raw = sim.post("/v1/chat/completions", json=chat("gpt-4o-mini", "hi"), headers=direct).json()
            assert errors(COMPLETION, raw)  # what the server itself sends is not OpenAI's shape
            plain = answer(client, chat("vllm-model", "what is a batch?"))
            assert_valid(COMPLETION, plain)
            assert "function_call" not in plain["choices"][0]["message"]
            for options in ({}, {"stream_options": {"include_usage": True}}):
                chunks = stream(client, chat("vllm-model", "stream me an answer please", **options))
                for chunk in chunks:
                    assert_valid(CHUNK, chunk)
                if options:
                    *content, usage_chunk = chunks
                    assert (usage_chunk["choices"], usage_chunk["usage"]["total_tokens"] > 0) == ([], True)
                    assert all(chunk["usage"] is None and chunk["choices"] for chunk in content)
                else:
                    assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)


def test_models_are_openai_exact(http: httpx.Client) -> None:
    listed = http.get("/v1/models").json()
    assert_valid("ListModelsResponse", listed)
    assert [model["id"] for model in listed["data"]] == [*MODELS, CLAUDE]
    for model in listed["data"]:
        retrieved = http.get(f"/v1/models/{model['id']}")
        assert retrieved.status_code == 200
        assert_valid("Model", retrieved.json())
        assert retrieved.json() == model
    unknown = http.get("/v1/models/gpt-unknown")
    assert unknown.status_code == 404
    assert_valid(ERROR, unknown.json())
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_the_vendored_schemas_refuse_what_the_litellm_path_used_to_send() -> None:
    """The validation can fail: nulls for absent keys, a missing logprobs, a usage chunk with a choice."""
    message = {"role": "assistant", "content": "hi", "tool_calls": None, "function_call": None}
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": GPT, "system_fingerprint": None}
    found = errors(COMPLETION, {**completion, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
    assert any("tool_calls" in line for line in found)
    assert any("function_call" in line for line in found)
    assert any("'logprobs' is a required property" in line for line in found)
    assert any("'refusal' is a required property" in line for line in found)
    assert any("system_fingerprint" in line for line in found)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": GPT, "choices": [{"index": 0}]}
    assert errors(CHUNK, chunk)
    assert errors(ERROR, {"error": {"message": "m", "type": "t"}})
