"""Azure OpenAI as users declare it: which endpoint and credential its `api_version` picks, the Global-Batch
deployment its batch lines name, the file expiry Azure accepts, and when an azure model is (not) batchable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from proxy.endpoints import Endpoint
from proxy.policy.decide import decide
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.pricing import PriceBook, Usage
from proxy.providers.azure_batch import (
    DEFAULT_API_VERSION,
    MAX_FILE_EXPIRY,
    MIN_FILE_EXPIRY,
    azure_endpoint,
    azure_file_expiry,
)
from proxy.providers.azure_config import AzureSettings, azure_settings
from proxy.providers.base import ProviderError
from proxy.providers.registry import ProviderRegistry, batch_input_limit, encode_batch_line, is_simulated
from proxy.settings import Config, load_config

RESOURCE = "https://res.openai.azure.com"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("api_base", "api_version", "base_url", "params"),
    [
        (RESOURCE, "v1", f"{RESOURCE}/openai/v1/", {}),
        (RESOURCE, "latest", f"{RESOURCE}/openai/v1/", {}),
        (f"{RESOURCE}/openai/v1/", None, f"{RESOURCE}/openai/v1/", {}),
        (RESOURCE, "2025-03-01-preview", f"{RESOURCE}/openai/", {"api-version": "2025-03-01-preview"}),
        (f"{RESOURCE}/openai", None, f"{RESOURCE}/openai/", {"api-version": DEFAULT_API_VERSION}),
    ],
)
def test_the_api_version_picks_the_endpoint_and_its_credential(
    api_base: str, api_version: str | None, base_url: str, params: dict[str, str]
) -> None:
    endpoint = azure_endpoint(api_base, api_key="k-1", api_version=api_version)
    assert (endpoint.base_url, endpoint.params) == (base_url, params)
    expected = {"api-key": "k-1"} if params else {"Authorization": "Bearer k-1"}
    assert endpoint.auth_headers == expected
    assert endpoint.v1 is not params


@pytest.mark.parametrize(
    ("asked", "sent"),
    [(3600, MIN_FILE_EXPIRY), (None, MIN_FILE_EXPIRY), (20 * 86400, 20 * 86400), (90 * 86400, MAX_FILE_EXPIRY)],
)
def test_the_file_expiry_is_moved_into_azures_range(asked: int | None, sent: int) -> None:
    assert azure_file_expiry(asked) == sent


def config(**params: str) -> Config:
    base = {"model": "azure/gpt-4o-mini", "api_base": RESOURCE, "api_key": "k-1", "api_version": "v1"}
    return Config.model_validate({"model_list": [{"model_name": "az", "litellm_params": {**base, **params}}]})


def test_an_azure_model_without_a_batch_deployment_is_never_deferred_and_says_why() -> None:
    loaded = config()
    lanes = lane_facts(loaded, "az")
    assert not lanes.batchable
    assert (
        lanes.no_batch_reason
        == "azure: no batch_deployment (the Global-Batch deployment its batch lines name) is configured"
    )
    facts = RequestFacts("alice", "team", "az", headers={"x-batch-deadline": "24h"})
    decision = decide(loaded.policy, facts, lanes, NOW)
    assert decision.lane == "sync"
    assert "batch_deployment" in decision.reason
    with pytest.raises(ProviderError) as refused:
        ProviderRegistry(loaded).batch("az")
    assert refused.value.status == 501


async def test_with_a_batch_deployment_its_lines_name_it_at_azures_endpoint() -> None:
    loaded = config(batch_deployment="gpt-4o-mini-batch")
    assert lane_facts(loaded, "az").batchable
    encoded = encode_batch_line(loaded.model_list[0], {"model": "az", "messages": []}, custom_id="c1")
    assert encoded is not None
    line = orjson.loads(encoded[0])
    assert (line["url"], line["body"]["model"]) == ("/chat/completions", "gpt-4o-mini-batch")
    registry = ProviderRegistry(loaded)
    try:
        assert registry.batchable("az")
        registry.batch("az")  # built without a call: the endpoint is resolved from config alone
    finally:
        await registry.aclose()


def test_an_azure_model_with_no_key_and_no_base_is_simulated() -> None:
    simulated = Config.model_validate(
        {"model_list": [{"model_name": "az", "litellm_params": {"model": "azure/gpt-4o-mini"}}]}
    )
    assert is_simulated(simulated.model_list[0])
    assert not is_simulated(config().model_list[0])


def test_azure_global_batch_is_half_the_list_price() -> None:
    book = PriceBook.from_config(config(batch_deployment="gpt-4o-mini-batch"))
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    listed, batch = book.cost("az", usage, "sync"), book.cost("az", usage, "batch")
    assert listed.known
    assert batch.known
    assert batch.paid_usd * 2 == listed.paid_usd
    assert batch.list_usd == listed.list_usd


def test_the_azure_example_batches_both_endpoint_styles() -> None:
    example = load_config(Path(__file__).resolve().parents[2] / "policies" / "examples" / "azure.yaml")
    for name, deployment in (("gpt-4o-mini", "gpt-4o-mini-batch"), ("gpt-4.1-mini", "gpt-4.1-mini-batch")):
        assert lane_facts(example, name).batchable
        declared = example.deployment(name)
        assert declared is not None
        assert declared.litellm_params.batch_deployment == deployment
    deferred = RequestFacts("alice", "team", "gpt-4o-mini", headers={"x-batch-deadline": "6h"})
    decision = decide(example.policy, deferred, lane_facts(example, "gpt-4o-mini"), NOW)
    assert (decision.lane, decision.deadline) == ("batch", NOW + timedelta(hours=6))
    nightly = RequestFacts("ci", "team", "gpt-4.1-mini", metadata={"purpose": "eval-nightly"})
    by_rule = decide(example.policy, nightly, lane_facts(example, "gpt-4.1-mini"), NOW)
    assert (by_rule.lane, by_rule.rule, by_rule.deadline) == ("batch", "nightly-evals", NOW + timedelta(hours=8))


def test_litellms_azure_environment_fills_what_the_config_omits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_API_BASE", RESOURCE)
    monkeypatch.setenv("AZURE_API_KEY", "env-key-123456")
    monkeypatch.setenv("AZURE_API_VERSION", "2025-03-01-preview")
    bare = Config.model_validate(
        {"model_list": [{"model_name": "az", "litellm_params": {"model": "azure/gpt-4o-mini"}}]}
    )
    assert azure_settings(bare.model_list[0].litellm_params) == AzureSettings(
        RESOURCE, "env-key-123456", "2025-03-01-preview", None
    )
    assert not is_simulated(bare.model_list[0])  # the environment names a real resource
    assert "env-key-123456" in bare.secret_values()  # masked in every log line
    given = azure_settings(config().model_list[0].litellm_params)  # the config's own values win
    assert (given.api_base, given.api_key, given.api_version) == (RESOURCE, "k-1", "v1")


async def test_an_entra_id_token_is_a_bearer_on_either_endpoint_and_a_key_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for version in ("v1", "2025-03-01-preview"):
        entra = azure_endpoint(RESOURCE, api_key=None, api_version=version, ad_token="entra-token-1")
        assert entra.auth_headers == {"Authorization": "Bearer entra-token-1"}
        keyed = azure_endpoint(RESOURCE, api_key="k-1", api_version=version, ad_token="entra-token-1")
        assert "entra-token-1" not in str(keyed.auth_headers)
    monkeypatch.setenv("AZURE_AD_TOKEN", "env-entra-token-2")
    from_env = config(api_key="", batch_deployment="gpt-4o-mini-batch")
    assert azure_settings(from_env.model_list[0].litellm_params).ad_token == "env-entra-token-2"
    declared = config(api_key="", azure_ad_token="os.environ/AZURE_AD_TOKEN")
    assert declared.model_list[0].litellm_params.azure_ad_token is not None
    assert "env-entra-token-2" not in repr(declared)  # a secret, as api_key is
    registry = ProviderRegistry(from_env)
    try:
        assert "env-entra-token-2" in registry.secrets()
        client = registry.batch("az")
        assert client is not None
    finally:
        await registry.aclose()


def test_embeddings_of_a_batchable_azure_model_go_as_embeddings_lines() -> None:
    loaded = config(batch_deployment="embed-batch")
    body = {"model": "az", "input": ["a", "b"]}
    encoded = encode_batch_line(loaded.model_list[0], body, custom_id="c1", endpoint=Endpoint.EMBEDDINGS)
    assert encoded is not None
    line = orjson.loads(encoded[0])
    assert (line["url"], line["body"]["model"], line["body"]["input"]) == ("/embeddings", "embed-batch", ["a", "b"])
    assert batch_input_limit(loaded.model_list[0], Endpoint.EMBEDDINGS) == 50_000
