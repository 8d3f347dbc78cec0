"""The Responses API's pure parts: which calls the batch lane cannot honour (and `policy explain` saying so), its
batch lines, the usage of its bodies and of its relayed event stream, and the simulator's batch of Responses."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.endpoints import Endpoint, queue_group
from proxy.errors import InvalidRequest, NotFound
from proxy.policy.cli import explain
from proxy.policy.lanes import lane_facts
from proxy.pricing import Usage
from proxy.providers.registry import encode_batch_line
from proxy.responses_lanes import responses_blocker
from proxy.responses_requests import parse_responses_request, stored_response_id
from proxy.responses_stream import ResponsesUsageTap
from proxy.settings import Config
from proxy.simulator.openai_batches import check_input_file
from proxy.simulator.options import SimulatorOptions
from proxy.simulator.responses import response_answer, response_object, stream_events

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
BODY = {"model": "mini", "input": "hello"}


def config() -> Config:
    return Config.model_validate(
        {
            "model_list": [
                {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}},
                {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-haiku-4-5-20251001"}},
            ]
        }
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"previous_response_id": "resp_1"}, "`previous_response_id`"),
        ({"conversation": "conv_1"}, "`conversation`"),
        ({"background": True}, "`background: true`"),
        ({"store": True}, "`store: true`"),
        ({"tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}, "tools[1] of type `web_search`"),
    ],
)
def test_calls_on_provider_state_are_kept_off_batch(extra: dict[str, Any], named: str) -> None:
    blocker = responses_blocker({**BODY, **extra})
    assert blocker is not None
    assert blocker.startswith(named)


def test_stateless_calls_defer() -> None:
    assert responses_blocker({**BODY, "store": False, "tools": [{"type": "function", "name": "f"}]}) is None
    assert responses_blocker(BODY) is None


def test_the_batch_lane_is_openais_only_and_its_line_keeps_metadata() -> None:
    cfg = config()
    assert lane_facts(cfg, queue_group("mini", Endpoint.RESPONSES)).batchable
    claude = lane_facts(cfg, queue_group("claude", Endpoint.RESPONSES))
    assert not claude.batchable
    assert "does not take /v1/responses" in claude.no_batch_reason
    deployment = cfg.deployment("mini")
    assert deployment is not None
    body = {**BODY, "stream": False, "metadata": {"team": "a"}}
    encoded = encode_batch_line(deployment, body, custom_id="j1", endpoint=Endpoint.RESPONSES)
    assert encoded is not None
    line = orjson.loads(encoded[0])
    assert line["url"] == "/v1/responses"
    assert line["body"] == {"model": "gpt-4o-mini", "input": "hello", "metadata": {"team": "a"}}


def test_policy_explain_says_why_a_chained_call_stays_synchronous(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n  - {model_name: mini, litellm_params: {model: openai/gpt-4o-mini}}\nauth: {master_key: sk-m}\n"
    )
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps({**BODY, "previous_response_id": "resp_1"}))
    out = io.StringIO()
    code = explain(
        path, key=None, team=None, model="mini", headers=["X-Batch-Deadline: 2h"], metadata=[], user=None,
        prompt_tokens=0, now=NOW, out=out, body=body, endpoint=Endpoint.RESPONSES,
    )  # fmt: skip
    assert code == 0
    assert "not for this request: its batch lane cannot carry `previous_response_id`" in out.getvalue()
    assert "  lane:      sync\n" in out.getvalue()


def test_bodies_are_checked_and_stored_ids_named() -> None:
    cfg = config()
    call = parse_responses_request({**BODY, "stream": True}, 40, cfg)
    assert (call.group, call.stream) == ("mini#responses", True)
    with pytest.raises(InvalidRequest) as refused:
        parse_responses_request({**BODY, "input": 3}, 40, cfg)
    assert refused.value.param == "input"
    with pytest.raises(NotFound):
        parse_responses_request({**BODY, "model": "nope"}, 40, cfg)
    assert stored_response_id("resp_abc123") == "resp_abc123"
    with pytest.raises(NotFound):
        stored_response_id("bg_job_1")


def test_usage_of_a_response_is_read_as_prompt_and_completion() -> None:
    usage = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5}
    assert Usage.from_openai(usage) == Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=4)


async def test_the_tap_relays_the_event_stream_unchanged_and_reads_its_final_usage() -> None:
    answer = response_answer({**BODY, "input": "x" * 40})
    final = response_object("mini", answer, BODY)
    events = list(stream_events(final, chunk_chars=3))
    wire = b"".join(events)

    async def in_pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(wire), 7):  # events cut anywhere
            yield wire[start : start + 7]

    tap = ResponsesUsageTap()
    relayed = b"".join([chunk async for chunk in tap.relay(in_pieces())])
    assert relayed == wire
    assert tap.usage == final["usage"]
    assert Usage.from_openai(tap.usage).completion_tokens == answer.completion_tokens


def test_the_simulator_answers_a_responses_batch_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    lines = [
        {"custom_id": f"c{n}", "method": "POST", "url": "/v1/responses",
         "body": {"model": "gpt-4o-mini", "input": f"question {n}"}}
        for n in range(2)
    ]  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    requests, issues = check_input_file(path, endpoint="/v1/responses", options=SimulatorOptions())
    assert not issues
    answers = [request.answer for request in requests]
    assert all(answer is not None and answer.response for answer in answers)
    assert answers[0] != answers[1]
