"""Tool calls on every provider path, with the official openai client: the fast OpenAI-shaped path and litellm
(Anthropic's Messages API), synchronous and streamed, and the Anthropic Message Batches lane; tool_choice, parallel
calls and a tool-result turn. The simulator answers tool calls by a documented rule (proxy/simulator/tool_use.py)
and, like Anthropic, refuses a tool_result whose id matches no tool_use of the turn before.

Also: a litellm exception never reaches the caller as a traceback, a file path or litellm's bug-report text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.test_anthropic_stack import CLAUDE, anthropic_batches, anthropic_stack
from tests.support.stack import PROVIDER_KEY, Stack

GPT = "gpt-4o-mini"
DEFER = {"X-Batch-Deadline": "1h"}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "kelvin"]}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"utc_offset": {"type": "integer"}}},
        },
    },
]
QUESTION = [{"role": "user", "content": "Weather and time in Oslo?"}]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with anthropic_stack(
        tmp_path, redis_url, delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30}
    ) as running:
        yield running


def assert_openai_tool_calls(message: Any, names: list[str], id_prefix: str) -> None:
    assert message.tool_calls is not None
    assert [call.function.name for call in message.tool_calls] == names
    for call in message.tool_calls:
        assert call.type == "function"
        assert call.id.startswith(id_prefix)
        arguments = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            assert arguments == {"city": "Weather and time in Oslo?", "unit": "celsius"}
        else:
            assert arguments == {"utc_offset": 1}


def tool_results(message: Any) -> list[dict[str, Any]]:
    """The conversation's next turn: the assistant's tool calls as sent back by a client, then one result each."""
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call.model_dump() for call in message.tool_calls],
    }
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"ok": call.function.name})}
        for call in message.tool_calls
    ]
    return [*QUESTION, assistant, *results]


@pytest.mark.parametrize(("model", "id_prefix"), [(CLAUDE, "toolu_"), (GPT, "call_")])
def test_parallel_tool_calls_then_a_tool_result_turn(stack: Stack, model: str, id_prefix: str) -> None:
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=QUESTION, tools=TOOLS, tool_choice="auto"
        )
        completion = raw.parse()
        assert raw.headers["x-batchgate-decision"].startswith("lane=sync")
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert_openai_tool_calls(choice.message, ["get_weather", "get_time"], id_prefix)

        answer = client.chat.completions.create(model=model, messages=tool_results(choice.message), tools=TOOLS)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.tool_calls is None or answer.choices[0].message.tool_calls == []
    assert answer.choices[0].message.content
    assert answer.choices[0].message.content.startswith("[sim ")


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_tool_choice_names_a_tool_and_parallel_calls_can_be_refused(stack: Stack, model: str) -> None:
    with stack.client(timeout=60) as client:
        named = client.chat.completions.create(
            model=model,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
        single = client.chat.completions.create(
            model=model, messages=QUESTION, tools=TOOLS, tool_choice="required", parallel_tool_calls=False
        )
        refused = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS, tool_choice="none")
    assert [call.function.name for call in named.choices[0].message.tool_calls or []] == ["get_time"]
    assert [call.function.name for call in single.choices[0].message.tool_calls or []] == ["get_weather"]
    assert not refused.choices[0].message.tool_calls
    assert refused.choices[0].finish_reason == "stop"


def test_a_tool_result_for_an_unknown_call_is_refused_by_the_provider(stack: Stack) -> None:
    """The strict simulator checks tool_use ids as Anthropic does, so the round trip above proves they match."""
    with stack.client(timeout=60) as client:
        first = client.chat.completions.create(model=CLAUDE, messages=QUESTION, tools=TOOLS).choices[0].message
        turn = tool_results(first)
        turn[-1] = {**turn[-1], "tool_call_id": "toolu_nobody"}
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=CLAUDE, messages=turn, tools=TOOLS)
    assert "tool_use_id" in refused.value.message


@pytest.mark.parametrize(("model", "id_prefix"), [(CLAUDE, "toolu_"), (GPT, "call_")])
def test_streamed_tool_calls_assemble_to_the_same_calls(stack: Stack, model: str, id_prefix: str) -> None:
    with stack.client(timeout=60) as client:
        whole = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS).choices[0].message
        chunks = list(client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS, stream=True))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert whole.tool_calls is not None
    streamed = [(call["id"], call["name"], json.loads(call["arguments"])) for _, call in sorted(calls.items())]
    expected = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls]
    assert streamed == expected  # same deterministic ids, names and arguments as the plain answer
    assert all(call_id.startswith(id_prefix) for call_id, _, _ in streamed)


def openai_batches(stack: Stack) -> list[dict[str, Any]]:
    with stack.simulator() as sim:
        page = sim.get("/v1/batches", headers={"authorization": f"Bearer {PROVIDER_KEY}"}).json()
    return [batch for batch in page["data"] if batch["endpoint"] == "/v1/chat/completions"]


@pytest.mark.parametrize(("model", "id_prefix"), [(CLAUDE, "toolu_"), (GPT, "call_")])
def test_tool_calls_round_trip_through_the_batch_lane(stack: Stack, model: str, id_prefix: str) -> None:
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=QUESTION, tools=TOOLS, tool_choice="auto", extra_headers=DEFER
        )
        deferred = raw.parse()
        assert raw.headers["x-batchgate-job"].startswith("dfr_")
        assert deferred.choices[0].finish_reason == "tool_calls"
        assert_openai_tool_calls(deferred.choices[0].message, ["get_weather", "get_time"], id_prefix)

        answer = client.chat.completions.create(
            model=model, messages=tool_results(deferred.choices[0].message), tools=TOOLS, extra_headers=DEFER
        )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content
    if model == CLAUDE:
        batches = anthropic_batches(stack)
        assert all(batch["request_counts"]["succeeded"] == 1 for batch in batches)  # the tool results were accepted
    else:
        batches = openai_batches(stack)
        assert all(batch["request_counts"]["completed"] == 1 for batch in batches)
    assert len(batches) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "{}"),  # a success status with a body litellm cannot translate: it raises with a traceback inside
        (500, '<html><body>Traceback (most recent call last):\n  File "/srv/gw.py"</body></html>'),
    ],
)
def test_a_litellm_failure_answers_a_short_error_and_logs_the_detail(
    stack: Stack, caplog: pytest.LogCaptureFixture, status: int, body: str
) -> None:
    caplog.set_level(logging.WARNING, logger="batchgate.providers.litellm")
    with stack.simulator() as sim:
        sim.patch("/_sim/config", json={"retry_after_s": 0}).raise_for_status()
        sim.post("/_sim/fail-next", json={"count": 3, "status": status, "body": body}).raise_for_status()
    with stack.client(timeout=60) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=QUESTION, tools=TOOLS)
    response = caught.value.response
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert response.status_code in (500, 502)
    for leaked in ("Traceback", 'File "', ".py", "site-packages", "github.com", "litellm", "<html>", PROVIDER_KEY):
        assert leaked not in response.text
    assert len(error["message"]) < 120
    assert error["type"] == "server_error"
    detail = [record for record in caplog.records if record.name == "batchgate.providers.litellm"]
    assert detail, "the log keeps what the caller does not see"
    assert any("Traceback" in record.getMessage() or record.exc_info for record in detail)
