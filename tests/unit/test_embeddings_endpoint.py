"""The endpoint dimension: queue groups, embeddings bodies, batch lines, lanes, policy rules, metrics labels and
the simulator's 50,000-input limit on an embeddings batch."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from proxy.embedding_requests import check_input
from proxy.endpoints import Endpoint, endpoint_of, model_of, queue_group, split_group
from proxy.errors import InvalidRequest
from proxy.metrics import Metrics
from proxy.policy.cli import explain, warnings
from proxy.policy.decide import decide
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.pricing import Cost, Usage
from proxy.providers.openai_batch import embedding_inputs, encode_line
from proxy.providers.registry import batch_input_limit, encode_batch_line
from proxy.settings import Config
from proxy.simulator.embeddings import MAX_BATCH_INPUTS, embedding_answer, embedding_response
from proxy.simulator.openai_batches import check_input_file
from proxy.simulator.options import SimulatorOptions

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def config(**policy: Any) -> Config:
    return Config.model_validate(
        {
            "model_list": [
                {"model_name": "embed", "litellm_params": {"model": "openai/text-embedding-3-small"}},
                {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-haiku-4-5-20251001"}},
                {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}, "supports_flex": True},
            ],
            "policy": policy or {},
        }
    )


def test_queue_groups_name_the_endpoint_and_read_back() -> None:
    assert queue_group("mini", Endpoint.CHAT_COMPLETIONS) == "mini"
    assert queue_group("embed", Endpoint.EMBEDDINGS) == "embed#embeddings"
    assert split_group("embed#embeddings") == ("embed", Endpoint.EMBEDDINGS)
    assert split_group("odd#name") == ("odd#name", Endpoint.CHAT_COMPLETIONS)
    assert model_of("embed#embeddings") == "embed"
    assert endpoint_of("mini") is Endpoint.CHAT_COMPLETIONS
    cfg = config()
    assert cfg.deployment("embed#embeddings") is cfg.deployment("embed")


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_the_four_input_shapes_are_taken(value: Any) -> None:
    check_input(value)


@pytest.mark.parametrize("value", [None, "", [], ["a", ""], ["a", 1], [[1], []], [True], ["x"] * 2049, {"a": 1}])
def test_other_inputs_are_refused_naming_input(value: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_input(value)
    assert refused.value.param == "input"


def test_an_embeddings_batch_line_goes_to_the_embeddings_url_as_sent() -> None:
    body = {"model": "embed", "input": ["a", "b"], "dimensions": 8}
    line = orjson.loads(encode_line("job-1", body, model="text-embedding-3-small", url="/v1/embeddings"))
    assert line["url"] == "/v1/embeddings"
    assert line["body"] == {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8}
    deployment = config().deployment("embed")
    assert deployment is not None
    encoded = encode_batch_line(deployment, body, custom_id="job-1", endpoint=Endpoint.EMBEDDINGS)
    assert encoded is not None
    assert orjson.loads(encoded[0])["url"] == "/v1/embeddings"
    assert batch_input_limit(deployment, Endpoint.EMBEDDINGS) == 50_000
    assert batch_input_limit(deployment, Endpoint.CHAT_COMPLETIONS) is None
    assert [embedding_inputs({"input": value}) for value in ("a", [1, 2], ["a", "b", "c"], [[1], [2]])] == [1, 1, 3, 2]


def test_embeddings_have_no_flex_and_anthropic_keeps_them_on_the_sync_lane_with_a_reason() -> None:
    cfg = config()
    assert lane_facts(cfg, "mini").supports_flex
    embed = lane_facts(cfg, "embed#embeddings")
    assert embed.batchable
    assert not embed.supports_flex
    claude_chat = lane_facts(cfg, "claude")
    assert claude_chat.batchable
    claude = lane_facts(cfg, "claude#embeddings")
    assert not claude.batchable
    assert claude.no_batch_reason == "anthropic: its batch API does not take /v1/embeddings"
    facts = RequestFacts("k", "t", "claude", headers={"x-batch-deadline": "2h"}, endpoint=Endpoint.EMBEDDINGS)
    decision = decide(cfg.policy, facts, claude, NOW)
    assert decision.lane == "sync"
    assert decision.no_batch == claude.no_batch_reason


def test_a_rule_without_endpoints_matches_chat_only_and_one_can_name_embeddings() -> None:
    cfg = config(
        rules=[
            {"name": "everything-waits", "match": {"teams": ["t"]}, "lane": "batch", "deadline": "2h"},
            {"name": "embeddings-wait", "match": {"endpoints": ["embeddings"]}, "lane": "batch", "deadline": "4h"},
        ]
    )
    chat = decide(cfg.policy, RequestFacts("k", "t", "mini"), lane_facts(cfg, "mini"), NOW)
    assert chat.rule == "everything-waits"
    facts = RequestFacts("k", "t", "embed", endpoint=Endpoint.EMBEDDINGS)
    embedded = decide(cfg.policy, facts, lane_facts(cfg, "embed#embeddings"), NOW)
    assert embedded.rule == "embeddings-wait"
    assert embedded.lane == "batch"
    misses = [condition.describe_miss(facts, NOW) for condition in cfg.policy.rules[0].match.conditions]
    assert any("matches chat_completions only" in miss for miss in misses if not miss.startswith("team"))


def test_metrics_carry_the_endpoint_as_a_label_of_its_own() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, models=["embed"], teams=["t"])
    usage = Usage(prompt_tokens=10, completion_tokens=0)
    metrics.record_finished(lane="batch", outcome="completed", model="embed#embeddings", team="t", usage=usage,
                            cost=Cost.unknown())  # fmt: skip
    labels = {"lane": "batch", "outcome": "completed", "model": "embed", "team": "t", "endpoint": "embeddings"}
    assert registry.get_sample_value("batchgate_requests_total", labels) == 1
    metrics.record_batch_submitted(queue="embed#embeddings", size=3)
    assert registry.get_sample_value("batchgate_batch_size_requests_count", {"queue": "embed#embeddings"}) == 1


def test_the_simulator_embeds_deterministically_with_honest_usage() -> None:
    body = {"model": "text-embedding-3-small", "input": ["abcdefgh", "x"], "dimensions": 5}
    answer = embedding_answer(body)
    assert answer.prompt_tokens == 2 + 1
    assert answer.completion_tokens == 0
    shaped = embedding_response("text-embedding-3-small", answer)
    assert [len(item["embedding"]) for item in shaped["data"]] == [5, 5]
    assert shaped == embedding_response("text-embedding-3-small", embedding_answer(body))
    assert shaped["data"][0]["embedding"] != shaped["data"][1]["embedding"]
    large = embedding_answer({"model": "text-embedding-3-large", "input": "a"}).embedding
    assert large is not None
    assert large.dimensions == 3072


def test_the_simulator_fails_an_embeddings_batch_over_50000_inputs(tmp_path: Path) -> None:
    per_line = 2048
    lines = MAX_BATCH_INPUTS // per_line + 1
    path = tmp_path / "input.jsonl"
    with path.open("wb") as out:
        for n in range(lines):
            body = {"model": "text-embedding-3-small", "input": ["w"] * per_line}
            line = {"custom_id": f"c{n}", "method": "POST", "url": "/v1/embeddings", "body": body}
            out.write(orjson.dumps(line) + b"\n")
    _, issues = check_input_file(path, endpoint="/v1/embeddings", options=SimulatorOptions())
    assert [issue.code for issue in issues] == ["too_many_embedding_inputs"]
    assert issues[0].line == lines


def test_a_chat_catch_all_leaves_an_embeddings_rule_reachable() -> None:
    cfg = config(
        rules=[
            {"name": "all-chat", "lane": "batch", "deadline": "2h"},
            {"name": "embeddings", "match": {"endpoints": ["embeddings"]}, "lane": "batch", "deadline": "2h"},
            {"name": "chat-again", "match": {"endpoints": ["chat_completions"]}, "lane": "sync"},
            {"name": "never", "match": {"endpoints": ["embeddings", "chat_completions"]}, "lane": "sync"},
        ]
    )
    assert warnings(cfg) == [
        "policy.rules[2] (chat-again) is never reached: all-chat matches all",
        "policy.rules[3] (never) is never reached: all-chat matches all",
    ]


def test_policy_explain_says_why_anthropic_embeddings_stay_synchronous(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n"
        "  - {model_name: claude, litellm_params: {model: anthropic/claude-haiku-4-5-20251001}}\n"
        "auth: {master_key: sk-master}\n"
    )
    out = io.StringIO()
    code = explain(
        path, key=None, team=None, model="claude", headers=["X-Batch-Deadline: 2h"], metadata=[], user=None,
        prompt_tokens=0, now=NOW, out=out, endpoint=Endpoint.EMBEDDINGS,
    )  # fmt: skip
    assert code == 0
    assert "batch:     never for this model: anthropic: its batch API does not take /v1/embeddings" in out.getvalue()
    chat = io.StringIO()
    explain(path, key=None, team=None, model="claude", headers=["X-Batch-Deadline: 2h"], metadata=[], user=None,
            prompt_tokens=0, now=NOW, out=chat)  # fmt: skip
    assert "never for this model" not in chat.getvalue()
