"""Only real batch APIs get the batch lane: which providers batchgate batches, why the others never are
(`policy explain`, X-Batchgate-Decision), and the adapters' line encoders failing one line, never a batch."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.policy import cli
from proxy.policy.decide import decide
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.providers.anthropic_batch import AnthropicBatchClient, encode_request
from proxy.providers.base import ErrorClass, ProviderError
from proxy.providers.mistral_batch import MistralBatchClient
from proxy.providers.mistral_batch import encode_line as mistral_line
from proxy.providers.openai_batch import OpenAIBatchClient, encode_line
from proxy.providers.registry import ProviderRegistry
from proxy.providers.xai_batch import XaiBatchClient
from proxy.settings import Config

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROVIDERS = {
    "gpt": ("openai/gpt-4o-mini", None),
    "claude": ("anthropic/claude-haiku-4-5", None),
    "mistral": ("mistral/mistral-small-latest", None),  # /v1/batch/jobs (MistralBatchClient)
    "together": ("together_ai/meta-llama/Llama-3-8b", "together_ai: batchgate does not speak its batch API yet"),
    "fireworks": ("fireworks_ai/accounts/f/models/m", "fireworks_ai: batchgate does not speak its batch API yet"),
    "grok": ("xai/grok-3-mini", None),  # counters and paged results (XaiBatchClient)
    "groq": ("groq/openai/gpt-oss-20b", None),  # OpenAI's batch shape, priced at Groq's own discount
    "gemini": ("gemini/gemini-2.5-flash", None),  # Gemini API Batch Mode
    "vertex": ("vertex_ai/gemini-2.5-flash", "vertex_ai: no batch_gcs_bucket"),  # batchable with a bucket
    "vllm": ("hosted_vllm/llama", "hosted_vllm: has no batch API"),
    "deepseek": ("deepseek/deepseek-chat", "deepseek: has no batch API"),
    # Bedrock batch jobs need an S3 location and a service role (tests/integration/test_bedrock_batches.py)
    "bedrock": ("bedrock/anthropic.claude-3-haiku", "bedrock: no batch_s3_bucket and batch_role_arn"),
    "titan": ("bedrock/amazon.titan-text-express-v1", "bedrock: batchgate writes Bedrock batch records for Anthropic"),
}


def config() -> Config:
    return Config.model_validate(
        {
            "model_list": [
                {"model_name": name, "litellm_params": {"model": model, "api_base": "http://127.0.0.1:9/v1"}}
                for name, (model, _) in PROVIDERS.items()
            ]
        }
    )


def deferred(model: str) -> RequestFacts:
    return RequestFacts("alice", "team", model, headers={"x-batch-deadline": "24h"})


@pytest.mark.parametrize(("name", "reason"), [(name, reason) for name, (_, reason) in PROVIDERS.items()])
def test_only_providers_whose_batch_api_batchgate_speaks_are_deferred_to_the_batch_lane(
    name: str, reason: str | None
) -> None:
    loaded = config()
    lanes = lane_facts(loaded, name)
    decision = decide(loaded.policy, deferred(name), lanes, NOW)
    header = decision.header_value()
    if reason is None:
        assert lanes.batchable
        assert decision.lane == "batch"
        assert "reason=" not in header
        return
    assert not lanes.batchable
    assert lanes.no_batch_reason.startswith(reason)
    assert decision.deferred
    assert decision.lane == "sync"
    assert reason in decision.reason
    assert f'reason="{reason}' in header
    assert header.isascii()


@pytest.mark.parametrize("name", ["together", "vllm", "fireworks"])
def test_the_registry_builds_no_batch_client_and_says_why(name: str) -> None:
    registry = ProviderRegistry(config())
    assert not registry.batchable(name)
    with pytest.raises(ProviderError) as refused:
        registry.batch(name)
    assert PROVIDERS[name][1] is not None
    assert PROVIDERS[name][1].split(",")[0] in refused.value.message
    assert registry.batchable("gpt")
    assert registry.batchable("groq")
    assert registry.batchable("claude")
    assert registry.batchable("mistral")
    assert registry.batchable("grok")


def test_mistral_and_xai_get_their_own_batch_clients() -> None:
    registry = ProviderRegistry(config())
    assert isinstance(registry.batch("mistral"), MistralBatchClient)
    assert isinstance(registry.batch("grok"), XaiBatchClient)


def test_a_synchronous_call_to_an_unbatchable_model_carries_no_reason() -> None:
    loaded = config()
    plain = RequestFacts("alice", "team", "together")
    decision = decide(loaded.policy, plain, lane_facts(loaded, "together"), NOW)
    assert decision.header_value() == "lane=sync; rule=default"


def test_policy_explain_says_why_a_model_is_never_batched(tmp_path: Path) -> None:
    path = tmp_path / "batchgate.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: local\n"
        "    litellm_params: {model: hosted_vllm/llama, api_base: 'http://127.0.0.1:9/v1'}\n"
        "  - model_name: gpt\n"
        "    litellm_params: {model: openai/gpt-4o-mini}\n",
        encoding="utf-8",
    )
    outputs = {}
    for model in ("local", "gpt"):
        out = io.StringIO()
        code = cli.explain(
            path, key=None, team=None, model=model, headers=["X-Batch-Deadline: 4h"], metadata=[], user=None,
            prompt_tokens=0, now=NOW, out=out,
        )  # fmt: skip
        assert code == 0
        outputs[model] = out.getvalue()
    assert (
        'X-Batchgate-Decision: lane=sync; rule=header; deferred=true; reason="hosted_vllm: has no batch API"'
        in (outputs["local"])
    )
    assert "batch:     never for this model: hosted_vllm: has no batch API" in outputs["local"]
    assert "lane:      batch" in outputs["gpt"]
    assert "never for this model" not in outputs["gpt"]


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    "encode",
    [
        lambda custom_id, chat: encode_line(custom_id, chat, model="gpt-4o-mini"),
        lambda custom_id, chat: encode_request(custom_id, chat, model="claude-haiku-4-5", custom_id=custom_id)[0],
        mistral_line,
    ],
    ids=["openai", "anthropic", "mistral"],
)
def test_a_body_the_encoder_refuses_fails_its_own_line_only(encode: Any) -> None:
    deep = body(
        tools=[{"type": "function", "function": {"name": "f", "parameters": nested(300)}}],
        messages=[{"role": "user", "content": "\ud800"}],
    )
    with pytest.raises(ProviderError) as refused:
        encode("dfr_job_1", deep)
    assert refused.value.classification is ErrorClass.BAD_LINE
    assert refused.value.custom_id == "dfr_job_1"
    assert refused.value.status == 400


def staged(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def test_prepare_raises_bad_line_naming_the_poisoned_job(tmp_path: Path) -> None:
    async def pairs() -> Any:
        yield "dfr_good", body()
        yield "dfr_poison", body(messages=[{"role": "user", "content": "\ud800"}])  # no UTF-8 for a lone surrogate

    openai_client = OpenAIBatchClient(base_url="http://127.0.0.1:9/v1", api_key=None, upstream_model="m")
    anthropic_client = AnthropicBatchClient(
        base_url="http://127.0.0.1:9", api_key=None, upstream_model="m", staging_dir=tmp_path
    )
    for client in (openai_client, anthropic_client):
        with pytest.raises(ProviderError) as refused:
            await client.prepare(pairs(), metadata={"batchgate_batch": "b"})
        assert refused.value.classification is ErrorClass.BAD_LINE
        assert refused.value.custom_id == "dfr_poison"
        await client.aclose()
    assert staged(tmp_path) == []  # nothing half-staged is left behind


@pytest.mark.parametrize(
    ("store", "sent"), [(None, False), (False, False), (True, True)], ids=["no-store", "store-false", "store-true"]
)
def test_a_batch_line_carries_metadata_only_with_store(store: bool | None, sent: bool) -> None:
    chat = body(metadata={"purpose": "eval"}, **({} if store is None else {"store": store}))
    line = orjson.loads(encode_line("dfr_1", chat, model="gpt-4o-mini"))
    assert ("metadata" in line["body"]) is sent
    assert line["body"]["model"] == "gpt-4o-mini"
    assert chat["metadata"] == {"purpose": "eval"}  # the caller's body (used by the policy) is untouched
    request = orjson.loads(encode_request("dfr_1-abc", chat, model="claude", custom_id="dfr_1")[0])
    assert "metadata" not in request["params"]  # Anthropic's metadata takes only user_id
