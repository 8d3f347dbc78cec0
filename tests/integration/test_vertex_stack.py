"""A `vertex_ai/...` model behind batchgate, over real HTTP with the official openai client: deferred calls answered
from a Vertex AI batch prediction job whose input and output went through a real GCS-compatible server, sync and
streamed calls answered by the face's generateContent, and the savings ledger reconciling exactly with what the
face billed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.integration.test_savings_reconcile import assert_books_equal_the_bill, savings
from tests.support.deferred_env import GEMINI, VERTEX_BUCKET, vertex_models
from tests.support.gcs_server import application_default_credentials, object_names, vertex_storage
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, config_document, serving, simulator_server
from tests.support.waiting import wait_until_sync

FAST_SIMULATOR = {"turnaround_s": 1.2, "validating_s": 0.1, "finalizing_s": 0.1, "api_key": PROVIDER_KEY}
DEFER = {"X-Batch-Deadline": "1h"}
BILLED = f"vertex_ai/{GEMINI}"  # the face bills the provider's price-map name
HOLD = {"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30}


def test_deferred_calls_are_answered_from_a_vertex_job_and_reconcile(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with vertex_storage(monkeypatch) as storage, simulator_server(**FAST_SIMULATOR, **storage) as upstream:
        gcs = storage["gcs_url"]
        document = config_document(upstream.url, delivery=HOLD)
        document["model_list"] = vertex_models(upstream.url)
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            model = document["model_list"][0]["model_name"]
            requests = [
                {"model": model, "messages": [{"role": "user", "content": f"defer me to vertex {i}"}]} for i in range(3)
            ]
            with stack.client(timeout=60) as client:
                raws = [
                    client.chat.completions.with_raw_response.create(**request, extra_headers=DEFER)
                    for request in requests
                ]
            for raw, request in zip(raws, requests, strict=True):
                completion = raw.parse()
                assert raw.headers["x-batchgate-job"].startswith("dfr_")
                assert isinstance(completion, openai.types.chat.ChatCompletion)
                assert completion.choices[0].message.content == expected_content(request)
                assert completion.usage is not None
                assert completion.usage.prompt_tokens > 0
            ledger = stack.ledger()["models"][BILLED]
            assert (ledger["sync"]["requests"], ledger["batch"]["requests"]) == (0, 3)

            def savings() -> dict[str, object] | None:
                response = httpx.get(f"{stack.url}/v1/savings", headers={"authorization": f"Bearer {MASTER_KEY}"})
                totals: dict[str, object] = response.json()["totals"]
                return totals if totals["requests"] == 3 else None

            totals = wait_until_sync(savings, timeout=10, what="the batch lines in the savings")
            assert totals["unknown_cost_requests"] == 0
            assert totals["prompt_tokens"] == ledger["batch"]["input_tokens"]
            assert totals["completion_tokens"] == ledger["batch"]["output_tokens"]
            assert Decimal(str(totals["paid_usd"])) == Decimal(ledger["batch"]["cost_usd"])  # what the face billed
            assert Decimal(str(totals["paid_usd"])) * 2 == Decimal(str(totals["list_usd"]))  # Vertex batch: 50% off
            wait_until_sync(
                lambda: object_names(gcs, VERTEX_BUCKET) == [], timeout=20, what="the job's objects deleted"
            )


def test_sync_streamed_and_deferred_calls_use_the_deployment_s_google_credentials_and_reconcile(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No access token configured: litellm's sync lane and the batch lane both take the deployment's
    `vertex_credentials` (a real workload-identity credentials file, exchanged at the simulator's STS endpoint),
    the mixed workload is billed once per call and batchgate's books equal the face's ledger. (ADC from the
    environment: test_vertex_batches.)"""
    monkeypatch.delenv("VERTEXAI_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with vertex_storage(monkeypatch) as storage, simulator_server(**FAST_SIMULATOR, **storage) as upstream:
        document = config_document(upstream.url, delivery=HOLD)
        document["model_list"] = vertex_models(upstream.url)
        params = document["model_list"][0]["litellm_params"]
        del params["api_key"]
        params["vertex_credentials"] = str(application_default_credentials(tmp_path, upstream.url))
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            with stack.client(timeout=60) as client:
                sync = {"model": GEMINI, "messages": [{"role": "user", "content": "vertex right now"}]}
                completion = client.chat.completions.create(**sync)
                assert completion.choices[0].message.content == expected_content(sync)
                streamed = {"model": GEMINI, "messages": [{"role": "user", "content": "vertex streamed"}]}
                chunks = list(client.chat.completions.create(**streamed, stream=True,
                                                             stream_options={"include_usage": True}))  # fmt: skip
                text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
                assert text == expected_content(streamed)
                assert chunks[-1].usage is not None
                deferred = [{"model": GEMINI, "messages": [{"role": "user", "content": f"vertex later {i}"}]}
                            for i in range(3)]  # fmt: skip
                for request in deferred:
                    answer = client.chat.completions.create(**request, extra_headers=DEFER)
                    assert answer.choices[0].message.content == expected_content(request)
            ledger = stack.ledger()
            billed = ledger["models"][BILLED]
            assert (billed["sync"]["requests"], billed["batch"]["requests"]) == (2, 3)
            assert_books_equal_the_bill(savings(stack, 5), ledger, {GEMINI: BILLED})
            grants = httpx.get(upstream.url + "/_sim/google-tokens", timeout=10).json()["grants"]
            assert 1 <= grants <= 3, grants  # loaded once per process that called (server and worker), not per call
