"""The same 100 calls across eight providers in one run: OpenAI, Anthropic, Azure OpenAI, Gemini, Mistral, xAI,
Vertex AI (its batch input and output through a real GCS-compatible server) and Bedrock (its jobs on the session's
S3 server), each on its own face of one simulated upstream, all deferred at once through the official openai client.
Every call is answered from its provider's batch, with its own answer, and batchgate's savings ledger equals what
every face billed, in exact Decimal (paid + waste per model and lane = billed; list - paid - waste = saved)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from proxy.worker.process import run_in_app
from tests.integration.test_anthropic_stack import CLAUDE, claude_deployment
from tests.integration.test_azure_batches import BATCH_DEPLOYMENT, FAST, SERVED
from tests.integration.test_savings_reconcile import assert_books_equal_the_bill, savings
from tests.support.deferred_env import GEMINI, gemini_models, vertex_models
from tests.support.gcs_server import vertex_storage
from tests.support.s3_server import BEDROCK_MODEL, S3Server, aws_environment, bedrock_deployment
from tests.support.stack import PROVIDER_KEY, Stack, config_document, serving, simulator_server

CALLS = 100
DEFER = {"X-Batch-Deadline": "1h", "Prefer": "respond-async"}
# configured model name -> the name its face bills it under in the simulator's ledger
BILLED_AS = {
    "gpt-4o-mini": "gpt-4o-mini",
    CLAUDE: CLAUDE,
    "azure-gpt-4o-mini": "azure/gpt-4o-mini",
    GEMINI: f"gemini/{GEMINI}",
    "mistral-small-latest": "mistral/mistral-small-latest",
    "grok-4.20-non-reasoning": "xai/grok-4.20-non-reasoning",
    f"vertex-{GEMINI}": f"vertex_ai/{GEMINI}",
    BEDROCK_MODEL: BEDROCK_MODEL,
}


def every_provider(simulator_url: str, bucket: str) -> list[dict[str, Any]]:
    """One model per provider, each on the simulator face that speaks that provider's wire format."""
    openai_model = config_document(simulator_url)["model_list"][0]
    azure = {"model": "azure/gpt-4o-mini", "api_base": simulator_url, "api_key": PROVIDER_KEY, "api_version": "v1",
             "batch_deployment": BATCH_DEPLOYMENT}  # fmt: skip
    faces = [("mistral", "mistral-small-latest"), ("xai", "grok-4.20-non-reasoning")]
    return [
        openai_model,
        claude_deployment(simulator_url),
        {"model_name": "azure-gpt-4o-mini", "litellm_params": azure},
        *gemini_models(simulator_url),
        *(face_model(simulator_url, provider, model) for provider, model in faces),
        {**vertex_models(simulator_url)[0], "model_name": f"vertex-{GEMINI}"},
        bedrock_deployment(bucket, simulator_url, min_records=1),  # a job of whatever share of the calls it gets
    ]


def face_model(simulator_url: str, provider: str, model: str) -> dict[str, Any]:
    params = {"model": f"{provider}/{model}", "api_base": f"{simulator_url}/{provider}/v1", "api_key": PROVIDER_KEY}
    return {"model_name": model, "litellm_params": params}


@contextlib.contextmanager
def every_provider_stack(
    tmp_path: Path, redis_url: str, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    served = {**FAST, **SERVED, "s3_endpoint_url": s3.url, "bedrock_min_records": 1}
    with vertex_storage(monkeypatch) as storage, simulator_server(**served, **storage) as upstream:
        aws_environment(monkeypatch, s3, upstream.url + "/bedrock")  # inherited by batchgate's process
        document = config_document(upstream.url, batching={"max_wait": "0.5s", "turnaround_estimate": "2s"})
        document["model_list"] = every_provider(upstream.url, s3.make_bucket())
        assert [model["model_name"] for model in document["model_list"]] == list(BILLED_AS)
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield stack


def test_the_same_calls_across_eight_providers_are_batched_answered_and_reconciled(
    tmp_path: Path, redis_url: str, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = list(BILLED_AS)
    calls = [(models[i % len(models)], f"call {i} of the every-provider run") for i in range(CALLS)]
    with every_provider_stack(tmp_path, redis_url, s3, monkeypatch) as stack:
        client = stack.client(timeout=60)

        def defer(call: tuple[str, str]) -> str:
            model, text = call
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": text}], max_tokens=40, extra_headers=DEFER
            )
            assert raw.http_response.status_code == 202, raw.http_response.text
            assert raw.http_response.headers["x-batchgate-decision"].startswith("lane=batch"), model
            job_id: str = raw.http_response.json()["id"]
            return job_id

        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(defer, calls))
        jobs = stack.final_jobs(job_ids, timeout=180)
        for (model, text), job in zip(calls, jobs, strict=True):
            assert (job["status"], job["lane"], job["model"]) == ("completed", "batch", model), job
            assert text in job["response"]["choices"][0]["message"]["content"], (model, job["response"])
        report = savings(stack, CALLS)
        assert report["totals"]["unknown_cost_requests"] == 0
        ledger = stack.ledger()
        assert set(ledger["models"]) == set(BILLED_AS.values())
        for model, billed in BILLED_AS.items():
            per_tier = ledger["models"][billed]
            sent = sum(1 for called, _ in calls if called == model)
            assert (per_tier["sync"]["requests"], per_tier["batch"]["requests"]) == (0, sent), (model, per_tier)
        assert_books_equal_the_bill(report, ledger, BILLED_AS)
