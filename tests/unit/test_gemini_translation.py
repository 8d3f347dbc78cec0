"""OpenAI chat bodies -> Gemini GenerateContentRequests and Gemini responses -> OpenAI chat.completion, through the
translation both lanes share (litellm's own); the batch adapter's reading of operations and result entries; and
how the registry routes a `gemini/...` deployment."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.providers.base import BatchState, ErrorClass, LineOutcome, ProviderError
from proxy.providers.gemini_batch import batch_info, display_name, encode_request, result_line
from proxy.providers.gemini_translation import GeminiRefusal, chat_completion, direct_request, raw_request
from proxy.providers.registry import ProviderRegistry, _litellm_endpoint, is_simulated
from proxy.settings import Config, ModelDeployment

MODEL = "gemini-2.5-flash"
BODIES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hello"}]},
    {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": [{"type": "text", "text": "q2"}]},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 40,
        "stop": ["END"],
        "n": 2,
        "seed": 7,
    },
    {
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "required",
    },
    {
        "messages": [{"role": "user", "content": "json please"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        },
    },
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_direct_steps_build_what_litellm_completion_sends(body: dict[str, Any]) -> None:
    assert direct_request(dict(body), MODEL) == raw_request(dict(body), MODEL)


def test_a_request_carries_the_conversation_and_the_generation_config() -> None:
    line = encode_request("job_1", {"model": "alias", **BODIES[1]}, model=f"gemini/{MODEL}")
    decoded = orjson.loads(line)
    assert decoded["key"] == "job_1"
    request = decoded["request"]
    texts = [part["text"] for content in request["contents"] for part in content["parts"]]
    assert texts[-1] == "q2"
    assert [content["role"] for content in request["contents"]][-2:] == ["model", "user"]
    config = request["generationConfig"]
    assert (config["temperature"], config["max_output_tokens"], config["stop_sequences"]) == (0.3, 40, ["END"])
    assert config["candidate_count"] == 2


def test_a_body_litellm_refuses_is_a_bad_line() -> None:
    with pytest.raises(ProviderError) as caught:
        encode_request("job_9", {"messages": [{"role": "user", "content": "x"}], "tool_choice": 3}, model=MODEL)
    assert (caught.value.classification, caught.value.custom_id) == (ErrorClass.BAD_LINE, "job_9")
    with pytest.raises(GeminiRefusal):
        direct_request({"messages": [{"role": "user", "content": "x"}], "tool_choice": 3}, MODEL)


def response(text: str, finish: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish, "index": 0}],
        "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 4, "totalTokenCount": 15},
        "modelVersion": MODEL,
        "responseId": "resp-1",
    }


def test_a_response_becomes_an_openai_chat_completion() -> None:
    completion = chat_completion(response("hi there"), model=MODEL)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {**completion["choices"][0]["message"], "content": "hi there"}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert (completion["usage"]["prompt_tokens"], completion["usage"]["completion_tokens"]) == (11, 4)
    cut = chat_completion(response("hi", "MAX_TOKENS"), model=MODEL)
    assert cut["choices"][0]["finish_reason"] == "length"


def test_result_entries_become_lines() -> None:
    ok = result_line("job_1", {"response": response("fine")}, MODEL)
    assert ok is not None
    assert (ok.outcome, ok.status_code, ok.request_id) == (LineOutcome.SUCCEEDED, 200, "resp-1")
    failed = result_line(
        "job_2", {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}, MODEL
    )
    assert failed is not None
    assert (failed.outcome, failed.status_code, failed.error_code) == (LineOutcome.ERRORED, 429, "RESOURCE_EXHAUSTED")
    assert failed.transient
    assert failed.body == {"error": {**failed.body["error"], "type": "rate_limit_error", "message": "slow down"}}
    assert result_line(None, {"response": response("x")}, MODEL) is None


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("BATCH_STATE_PENDING", BatchState.VALIDATING),
        ("BATCH_STATE_RUNNING", BatchState.IN_PROGRESS),
        ("BATCH_STATE_SUCCEEDED", BatchState.COMPLETED),
        ("BATCH_STATE_FAILED", BatchState.FAILED),
        ("BATCH_STATE_CANCELLED", BatchState.CANCELLED),
        ("BATCH_STATE_EXPIRED", BatchState.EXPIRED),
        ("JOB_STATE_SUCCEEDED", BatchState.COMPLETED),  # the SDK's spelling
    ],
)
def test_operation_states_and_counts_are_read(state: str, expected: BatchState) -> None:
    operation = {
        "name": "batches/abc",
        "metadata": {
            "state": state,
            "createTime": "2026-11-30T12:00:00.123456789Z",
            "batchStats": {"requestCount": "5", "successfulRequestCount": "3", "failedRequestCount": "1"},
        },
        "done": expected.is_terminal,
        "response": {"responsesFile": "files/out-1"},
    }
    info = batch_info(operation)
    assert (info.batch_id, info.state, info.total, info.completed, info.failed) == ("batches/abc", expected, 5, 3, 1)
    assert info.created_at == pytest.approx(1796040000.123456)
    assert info.output_file_id == ("files/out-1" if expected.is_terminal else None)


def test_the_display_name_is_the_metadata_digest() -> None:
    assert display_name({"a": "1", "b": "2"}) == display_name({"b": "2", "a": "1"})
    assert display_name({"a": "1"}) != display_name({"a": "2"})
    assert display_name({"a": "1"}).startswith("batchgate-")


def deployment(**params: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({"model_name": "g", "litellm_params": {"model": f"gemini/{MODEL}", **params}})


def test_a_keyless_gemini_deployment_is_simulated_at_the_v1beta_root() -> None:
    keyless = deployment()
    assert is_simulated(keyless)
    assert _litellm_endpoint(keyless, "http://127.0.0.1:9") == ("http://127.0.0.1:9/v1beta", "sk-simulated")
    assert not is_simulated(deployment(api_key="k"))


async def test_the_registry_builds_a_gemini_batch_client() -> None:
    config = Config.model_validate(
        {"model_list": [{"model_name": "g", "litellm_params": {"model": f"gemini/{MODEL}", "api_key": "k"}}]}
    )
    registry = ProviderRegistry(config)
    try:
        assert registry.batchable("g")
        client = registry.batch("g")
        assert type(client).__name__ == "GeminiBatchClient"
    finally:
        await registry.aclose()


async def test_a_gemini_key_from_the_environment_serves_both_lanes_and_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "env-gemini-key-123")
    config = Config.model_validate(
        {
            "model_list": [
                {"model_name": "g", "litellm_params": {"model": f"gemini/{MODEL}", "api_base": "http://x/v1beta"}}
            ]
        }
    )
    registry = ProviderRegistry(config)
    try:
        assert registry.secrets() == ["env-gemini-key-123"]
    finally:
        await registry.aclose()
