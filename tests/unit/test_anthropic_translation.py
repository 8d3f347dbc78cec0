"""OpenAI chat bodies -> Anthropic Messages params and Anthropic results -> OpenAI chat.completion, through the
translation both lanes share (litellm's, with Claude's rules first); and which adapters and lanes a provider gets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from proxy.policy.decide import decide
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.providers.anthropic_batch import batch_info, marker, result_line, unmarked
from proxy.providers.anthropic_translation import chat_completion, direct_request, messages_request, raw_request
from proxy.providers.base import BatchState, LineOutcome
from proxy.providers.claude_rules import ClaudeRefusal
from proxy.settings import Config


def params(model: str = "claude-haiku-4-5", **body: Any) -> dict[str, Any]:
    return messages_request({"model": "alias", **body}, model=model, extra_params={}).params


QUESTION = [{"role": "user", "content": "q"}]


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    sent = params(
        messages=[
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "q"},
        ]
    )
    assert sent["system"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["max_tokens"] >= 1  # Anthropic requires it; litellm sets the model's own ceiling


def test_multi_part_content_becomes_blocks_with_images_and_cache_control() -> None:
    sent = params(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                ],
            }
        ]
    )
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_completion_tokens": 70, "max_tokens": 50}, {"max_tokens": 70}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"temperature": 0.4}, {"temperature": 0.4}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
        ({"reasoning_effort": "low"}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
    ],
)
def test_sampling_and_reasoning_options(options: dict[str, Any], expected: dict[str, Any]) -> None:
    sent = params(messages=QUESTION, **options)
    assert {key: sent.get(key) for key in expected} == expected


def test_a_strict_json_schema_becomes_output_format_with_its_beta_feature() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    request = messages_request(
        {
            "messages": QUESTION,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": schema}},
        },
        model="claude-haiku-4-5",
        extra_params={},
    )
    assert request.params["output_format"] == {"type": "json_schema", "schema": schema}
    assert any(beta.startswith("structured-outputs") for beta in request.betas)


@pytest.mark.parametrize(
    ("model", "options", "param"),
    [
        ("claude-sonnet-4-5", {"temperature": 0.3, "top_p": 0.9}, "top_p"),
        ("claude-haiku-4-5", {"n": 2}, "n"),
        ("claude-haiku-4-5", {"logprobs": True}, "logprobs"),
        ("claude-haiku-4-5", {"temperature": 1.5}, "temperature"),
    ],
)
def test_what_claude_refuses_is_refused_before_sending(model: str, options: dict[str, Any], param: str) -> None:
    with pytest.raises(ClaudeRefusal) as refused:
        params(model=model, messages=QUESTION, **options)
    assert refused.value.param == param


def test_audio_input_is_refused_not_dropped() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(ClaudeRefusal) as refused:
        params(messages=[{"role": "user", "content": [audio]}])
    assert refused.value.param == "messages[0].content"


def test_older_claude_models_take_temperature_and_top_p_together() -> None:
    sent = params(model="claude-3-5-haiku-20241022", messages=QUESTION, temperature=0.3, top_p=0.9)
    assert (sent["temperature"], sent["top_p"]) == (0.3, 0.9)


def test_empty_text_never_becomes_an_empty_text_block() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    sent = params(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )
    blocks = [block for message in sent["messages"] for block in message["content"]]
    assert all(block.get("text") != "" for block in blocks if block["type"] == "text")
    assert sent["messages"][1]["content"][-1] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}


def test_tools_tool_calls_and_tool_results() -> None:
    sent = params(
        tools=[
            {
                "type": "function",
                "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object"}},
            }
        ],
        tool_choice="required",
        parallel_tool_calls=False,
        messages=[
            {"role": "user", "content": "weather in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": '{"c":"Oslo"}'}},
                    {"id": "t2", "type": "function", "function": {"name": "weather", "arguments": '{"c":"Rome"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "cold"},
            {"role": "tool", "tool_call_id": "t2", "content": "warm"},
        ],
    )
    assert [(tool["name"], tool["description"]) for tool in sent["tools"]] == [("weather", "Weather now")]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"c": "Oslo"}},
        {"type": "tool_use", "id": "t2", "name": "weather", "input": {"c": "Rome"}},
    ]
    assert sent["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "cold"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "warm"},
        ],
    }
    assert len(sent["messages"]) == 3


MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "now."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"c": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "usage": {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    },
}


TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}},
}
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": "x"}'}}
VARIED: dict[str, dict[str, Any]] = {
    "plain": {"messages": QUESTION},
    "roles-and-options": {
        "messages": [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "q"},
        ],
        "temperature": 0.2,
        "stop": "END",
        "seed": 7,
        "user": "u-1",
        "max_completion_tokens": 70,
        "max_tokens": 50,
        "presence_penalty": 0.5,
    },
    "tools-and-results": {
        "messages": [*QUESTION, {"role": "assistant", "content": "", "tool_calls": [CALL]}, {
            "role": "tool", "tool_call_id": "c1", "content": "done"}],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
    },
    "json-schema": {
        "messages": QUESTION,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": SCHEMA}},
    },
    "json-object": {"messages": QUESTION, "response_format": {"type": "json_object"}, "tool_choice": "none"},
    "images-and-file": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                ],
            }
        ]
    },
    "reasoning": {"messages": QUESTION, "reasoning_effort": "medium", "top_p": 0.9},
    "thinking": {"messages": QUESTION, "thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 4096},
}  # fmt: skip


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-3-5-haiku-20241022", "claude-opus-4-1"])
@pytest.mark.parametrize("case", sorted(VARIED))
def test_the_direct_steps_build_what_litellm_completion_builds(case: str, model: str) -> None:
    """The fast path (litellm's steps called directly) sends the same params and betas as `litellm.completion`."""
    body = VARIED[case]
    before = orjson.dumps(body)
    assert direct_request(dict(body), model) == raw_request(dict(body), model)
    assert orjson.dumps(body) == before  # the caller's body (stored at intake) is left as it was


def test_a_field_outside_the_direct_steps_still_translates_through_litellm_completion() -> None:
    sent = params(messages=QUESTION, top_k=5)  # litellm's Anthropic extra, not an OpenAI field
    assert sent["top_k"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:nonsense"}}]}]},
        {"messages": [*QUESTION, {"role": "tool", "content": "no tool_call_id"}]},
        {"messages": QUESTION, "response_format": {"type": "json_schema"}},
    ],
)
def test_what_litellm_will_not_translate_is_refused_though_claudes_rules_pass_it(body: dict[str, Any]) -> None:
    """Why intake keeps the whole translation: Claude's rules alone would accept these and the line would fail."""
    with pytest.raises(ClaudeRefusal) as refused:
        params(**body)
    assert refused.value.message
    assert "Traceback" not in refused.value.message


def test_a_message_becomes_a_chat_completion_with_tool_calls() -> None:
    completion = chat_completion(MESSAGE)
    assert completion["object"] == "chat.completion"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking now."
    [call] = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("toolu_1", "function", "weather")
    assert orjson.loads(call["function"]["arguments"]) == {"c": "Oslo"}


def test_usage_counts_cache_reads_and_writes_in_prompt_tokens() -> None:
    usage = chat_completion(MESSAGE)["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (130, 7, 137)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (100, 20)


def test_the_response_format_tool_answer_becomes_content() -> None:
    message = {**MESSAGE, "content": [{"type": "tool_use", "id": "t", "name": "json_tool_call", "input": {"a": 1}}]}
    reply = chat_completion(message)["choices"][0]["message"]
    assert orjson.loads(reply["content"]) == {"a": 1}
    assert not reply.get("tool_calls")


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    message = {**MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert chat_completion(message)["choices"][0]["finish_reason"] == finish


def test_result_lines_and_batch_states() -> None:
    errored = result_line(
        {
            "custom_id": "a",
            "result": {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
            },
        }
    )
    assert (errored.outcome, errored.status_code, errored.transient) == (LineOutcome.ERRORED, 529, True)
    assert errored.body == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert result_line({"custom_id": "b", "result": {"type": "expired"}}).outcome is LineOutcome.EXPIRED
    base = {"id": "msgbatch_1", "created_at": "2026-11-20T10:00:00Z", "results_url": "https://x/results"}
    counts = {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0}
    ended = batch_info({**base, "processing_status": "ended", "request_counts": counts})
    assert (ended.state, ended.total, ended.completed, ended.failed) == (BatchState.COMPLETED, 4, 3, 1)
    assert ended.created_at == datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp()
    expired = batch_info({**base, "processing_status": "ended", "request_counts": {**counts, "expired": 2}})
    assert expired.state is BatchState.EXPIRED
    cancelled = batch_info({**base, "processing_status": "ended", "cancel_initiated_at": "2026-11-20T10:01:00Z"})
    assert cancelled.state is BatchState.CANCELLED
    running = batch_info({**base, "processing_status": "in_progress", "request_counts": {"processing": 5}})
    assert (running.state, running.total, running.output_file_id) == (BatchState.IN_PROGRESS, 5, None)
    assert batch_info({**base, "processing_status": "canceling"}).state is BatchState.CANCELLING


def test_a_provider_without_a_batch_api_is_never_deferred() -> None:
    config = Config.model_validate(
        {
            "model_list": [
                {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-haiku-4-5"}},
                {"model_name": "bedrock", "litellm_params": {"model": "bedrock/anthropic.claude-3-haiku"}},
            ]
        }
    )
    now = datetime(2026, 11, 20, tzinfo=UTC)
    for model, lane in (("claude", "batch"), ("bedrock", "sync")):
        facts = RequestFacts("alice", "team", model, headers={"x-batch-deadline": "24h"})
        decision = decide(config.policy, facts, lane_facts(config, model), now)
        assert decision.lane == lane, decision.reason
    assert (
        "no batch lane (bedrock: no batch_s3_bucket and batch_role_arn"
        in decide(
            config.policy,
            RequestFacts("a", "t", "bedrock", headers={"x-batch-deadline": "24h"}),
            lane_facts(config, "bedrock"),
            now,
        ).reason
    )


def test_custom_ids_carry_the_batch_marker_upstream_and_come_back_without_it() -> None:
    mark = marker({"batchgate_batch": "bat_0123456789_abcdef0123456789", "batchgate_group": "0123456789"})
    assert mark == marker({"batchgate_group": "0123456789", "batchgate_batch": "bat_0123456789_abcdef0123456789"})
    assert mark != marker({"batchgate_batch": "bat_0123456789_ffffffffffffffff", "batchgate_group": "0123456789"})
    job_id = "dfr_0123456789_0123456789abcdef0123"
    assert unmarked(f"{job_id}-{mark}") == (job_id, mark)
    assert unmarked(job_id) == (job_id, None)
    line = result_line({"custom_id": f"{job_id}-{mark}", "result": {"type": "canceled"}})
    assert (line.custom_id, line.outcome) == (job_id, LineOutcome.CANCELLED)
