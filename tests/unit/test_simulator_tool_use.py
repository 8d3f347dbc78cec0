"""The simulator's tool-call rule, in both wire formats (the OpenAI one is exercised end to end elsewhere)."""

from __future__ import annotations

from typing import Any

from proxy.simulator.answers import answer_for
from proxy.simulator.tool_use import tool_calls_for

ANTHROPIC_TOOLS = [
    {"name": "lookup", "input_schema": {"type": "object", "properties": {"term": {"type": "string"}}}},
    {"name": "count", "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
]
QUESTION = [{"role": "user", "content": "find   the   thing"}]


def anthropic(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": QUESTION, "tools": ANTHROPIC_TOOLS, **extra}


def names(body: dict[str, Any]) -> list[str]:
    return [call.name for call in tool_calls_for(body)]


def test_anthropic_tool_choice_forms() -> None:
    assert names(anthropic()) == ["lookup", "count"]
    assert names(anthropic(tool_choice={"type": "any", "disable_parallel_tool_use": True})) == ["lookup"]
    assert names(anthropic(tool_choice={"type": "tool", "name": "count"})) == ["count"]
    assert names(anthropic(tool_choice={"type": "none"})) == []
    assert names({k: v for k, v in anthropic().items() if k != "tools"}) == []


def test_arguments_follow_the_schema_and_ids_are_stable() -> None:
    first, second = tool_calls_for(anthropic()), tool_calls_for(anthropic())
    assert [call.arguments for call in first] == [{"term": "find the thing"}, {"n": 1}]
    assert [call.key for call in first] == [call.key for call in second]
    assert len({call.key for call in first}) == 2


def test_a_tool_result_turn_is_answered_with_text() -> None:
    calls = tool_calls_for(anthropic())
    turn = [
        *QUESTION,
        {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{calls[0].key}", "name": "lookup",
                                           "input": dict(calls[0].arguments)}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{calls[0].key}", "content": "42"}]},
    ]  # fmt: skip
    answer = answer_for(anthropic(messages=turn))
    assert answer.tool_calls == ()
    assert answer.finish_reason == "stop"
    assert answer.content.startswith("[sim ")


def test_a_tool_call_answer_bills_its_calls() -> None:
    answer = answer_for(anthropic())
    assert answer.finish_reason == "tool_calls"
    assert answer.content == ""
    assert answer.completion_tokens > 0
