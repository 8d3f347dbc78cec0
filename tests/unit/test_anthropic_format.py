"""OpenAI chat bodies -> Anthropic Messages params, Anthropic results -> OpenAI chat.completion; and which
adapters and lanes a provider gets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proxy.policy.decide import decide
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.providers.anthropic_batch import batch_info, marker, result_line, unmarked
from proxy.providers.anthropic_format import DEFAULT_MAX_TOKENS, chat_completion, chat_usage, messages_params
from proxy.providers.base import BatchState, LineOutcome
from proxy.settings import Config


def test_system_messages_move_to_the_top_level_and_max_tokens_is_always_set() -> None:
    params = messages_params(
        {
            "model": "claude-haiku-4-5",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        }
    )
    assert params == {
        "model": "claude-haiku-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_several_system_and_developer_messages_become_text_blocks() -> None:
    params = messages_params(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "q"},
            ],
        }
    )
    assert params["system"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]


def test_multi_part_content_becomes_blocks_with_images_and_cache_control() -> None:
    params = messages_params(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    ],
                }
            ],
        }
    )
    assert params["messages"][0]["content"] == [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_completion_tokens": 70, "max_tokens": 50}, {"max_tokens": 70}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"temperature": 1.7}, {"temperature": 1.0}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
    ],
)
def test_sampling_options(options: dict[str, Any], expected: dict[str, Any]) -> None:
    params = messages_params({"model": "m", "messages": [{"role": "user", "content": "q"}], **options})
    assert {key: params[key] for key in expected} == expected


def test_top_p_gives_way_to_temperature_as_new_claude_models_refuse_both() -> None:
    params = messages_params(
        {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "q"}], "temperature": 0.3, "top_p": 0.9}
    )
    assert params["temperature"] == 0.3
    assert "top_p" not in params


def test_empty_text_never_becomes_an_empty_text_block() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    params = messages_params(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        }
    )
    assert params["messages"][0]["content"] == [{"type": "text", "text": "weather?"}]
    assert params["messages"][1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}]


def test_options_anthropic_lacks_are_dropped() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "n": 2, "seed": 1, "logprobs": True,
            "service_tier": "flex", "response_format": {"type": "json_object"}, "stream": True}  # fmt: skip
    assert set(messages_params(body)) == {"model", "max_tokens", "messages"}


def test_tools_tool_calls_and_tool_results() -> None:
    params = messages_params(
        {
            "model": "m",
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object"}},
                }
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "messages": [
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
        }
    )
    assert params["tools"] == [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}]
    assert params["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert params["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"c": "Oslo"}},
        {"type": "tool_use", "id": "t2", "name": "weather", "input": {"c": "Rome"}},
    ]
    assert params["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "cold"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "warm"},
        ],
    }
    assert len(params["messages"]) == 3


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


def test_a_message_becomes_a_chat_completion_with_tool_calls() -> None:
    completion = chat_completion(MESSAGE, created=123)
    assert completion["object"] == "chat.completion"
    assert completion["created"] == 123
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking now."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"c":"Oslo"}'}}
    ]


def test_usage_counts_cache_reads_as_cached_prompt_tokens() -> None:
    assert chat_usage(MESSAGE["usage"]) == {  # type: ignore[arg-type]
        "prompt_tokens": 130,
        "completion_tokens": 7,
        "total_tokens": 137,
        "prompt_tokens_details": {"cached_tokens": 100},
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }


@pytest.mark.parametrize(
    ("stop", "finish"), [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop")]
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
        "no batch lane (bedrock: batchgate does not speak its batch API yet)"
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
