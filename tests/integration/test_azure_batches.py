"""Azure OpenAI: the batch adapter against the simulator's Azure face (v1 endpoint with Bearer, legacy endpoint with
`api-key` and `api-version`), and `azure/<deployment>` models behind batchgate through the official openai client:
synchronous calls through litellm, deferred calls answered from Global-Batch deployments, books equal to the bill."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.providers.azure_batch import MIN_FILE_EXPIRY, AzureEndpoint, azure_batch_client, azure_endpoint
from proxy.providers.base import BatchInfo, BatchState, ErrorClass, LineOutcome, ProviderError
from proxy.providers.openai_batch import OpenAIBatchClient
from proxy.simulator.embeddings import embedding_answer, embedding_response
from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.integration.test_savings_reconcile import assert_books_equal_the_bill, savings, wasted
from tests.support.batch_clients import lines_of, pairs
from tests.support.stack import PROVIDER_KEY, Stack, config_document, serving, simulator_server
from tests.support.waiting import wait_until

FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1, "api_key": PROVIDER_KEY}
BATCH_DEPLOYMENT = "gpt-4o-mini-batch"  # a Global-Batch deployment serving gpt-4o-mini
SERVED = {"azure_deployments": {BATCH_DEPLOYMENT: "gpt-4o-mini"}}
STYLES = {"v1": "v1", "legacy": "2025-03-01-preview"}  # endpoint style -> the api_version that picks it
MARK = "batchgate_batch"


def chat(text: str) -> dict[str, Any]:
    return {"model": "ignored", "messages": [{"role": "user", "content": text}], "max_tokens": 40}


def endpoint(url: str, style: str) -> AzureEndpoint:
    return azure_endpoint(url, api_key=PROVIDER_KEY, api_version=STYLES[style])


@contextlib.asynccontextmanager
async def azure_client(style: str, **knobs: Any) -> AsyncIterator[tuple[OpenAIBatchClient, AzureEndpoint]]:
    with simulator_server(**{**FAST, **SERVED, **knobs}) as upstream:
        where = endpoint(upstream.url, style)
        client = azure_batch_client(where, batch_deployment=BATCH_DEPLOYMENT, timeout=10, file_expiry=3600)
        try:
            yield client, where
        finally:
            await client.aclose()


async def submit(client: OpenAIBatchClient, count: int, name: str = "b1") -> tuple[str, BatchInfo]:
    bodies = [(f"job_{i}", chat(f"{name} question {i}")) for i in range(count)]
    prepared = await client.prepare(pairs(bodies), metadata={MARK: name})
    assert prepared.requests == count
    return prepared.ref, await client.create(prepared.ref, metadata={MARK: name})


async def until(client: OpenAIBatchClient, batch_id: str, *states: BatchState) -> BatchInfo:
    async def reached() -> BatchInfo | None:
        info = await client.retrieve(batch_id)
        return info if info.state in states else None

    return await wait_until(reached, timeout=20, what=f"batch {batch_id} in {states}")


def face(where: AzureEndpoint) -> httpx.Client:
    """A raw client addressed as the adapter addresses the resource."""
    return httpx.Client(base_url=where.base_url, headers=where.auth_headers, params=where.params, timeout=10)


@pytest.mark.parametrize("style", list(STYLES))
async def test_a_batch_runs_on_the_batch_deployment_with_an_expiring_input(style: str) -> None:
    async with azure_client(style) as (client, where):
        ref, created = await submit(client, 4)
        assert created.state is BatchState.VALIDATING  # Azure's "Validating", read leniently
        assert created.total is None  # Azure's null request_counts: unknown, not zero
        with face(where) as raw:
            uploaded = raw.get(f"files/{ref}").json()
            listed = raw.get("batches").json()["data"]
        assert uploaded["expires_at"] - uploaded["created_at"] == MIN_FILE_EXPIRY  # 1 h asked, Azure's floor sent
        assert [batch["id"] for batch in listed] == [created.batch_id]
        assert listed[0]["endpoint"] == "/chat/completions"
        info = await until(client, created.batch_id, BatchState.COMPLETED)
        lines = await lines_of(client, info)
        assert sorted(line.custom_id for line in lines) == [f"job_{i}" for i in range(4)]
        for line in lines:
            assert line.outcome is LineOutcome.SUCCEEDED
            assert line.body is not None
            assert line.body["model"] == BATCH_DEPLOYMENT
            text = f"b1 question {line.custom_id.removeprefix('job_')}"
            assert line.body["choices"][0]["message"]["content"] == expected_content(
                {**chat(text), "model": BATCH_DEPLOYMENT}
            )
        found = await client.find_batches({MARK: "b1"}, since=info.created_at, prepared=ref)
        assert [batch.batch_id for batch in found] == [created.batch_id]
        await client.cleanup(ref)
        with face(where) as raw:
            assert raw.get(f"files/{ref}").status_code == 404


@pytest.mark.parametrize("style", list(STYLES))
async def test_a_refused_line_errors_alone_and_a_cancel_keeps_finished_lines(style: str) -> None:
    async with azure_client(style, line_400_rate=1.0) as (client, _):
        _, created = await submit(client, 2)
        info = await until(client, created.batch_id, BatchState.COMPLETED)
        lines = await lines_of(client, info)
        assert [(line.outcome, line.status_code) for line in lines] == [(LineOutcome.ERRORED, 400)] * 2
        assert not any(line.transient for line in lines)
    # Azure never expires a global batch: past `expiry_s` it still runs, until cancelled
    async with azure_client(style, finish_fraction=0.5, expiry_s=0.5, cancel_delay_s=0.2) as (client, _):
        _, created = await submit(client, 4, "stalled")
        ran_out = created.created_at + FAST["turnaround_s"] + 0.5  # past expiry_s, and every finishing line done

        async def past_its_turnaround() -> BatchInfo | None:
            info = await client.retrieve(created.batch_id)
            return info if time.time() > ran_out else None

        still = await wait_until(past_its_turnaround, timeout=20, what="the stalled batch past its turnaround")
        assert still.state is BatchState.IN_PROGRESS
        cancelling = await client.cancel(created.batch_id)
        assert cancelling.state in (BatchState.CANCELLING, BatchState.CANCELLED)
        ended = await until(client, created.batch_id, BatchState.CANCELLED)
        outcomes = sorted(line.outcome for line in await lines_of(client, ended))
        assert outcomes == [LineOutcome.CANCELLED] * 2 + [LineOutcome.SUCCEEDED] * 2


async def test_a_create_over_the_enqueued_token_quota_is_transient_capacity() -> None:
    async with azure_client("v1", enqueued_token_limits={BATCH_DEPLOYMENT: 5}) as (client, _):
        with pytest.raises(ProviderError) as caught:
            await submit(client, 2)
    assert caught.value.code == "token_limit_exceeded"
    assert caught.value.classification is ErrorClass.TRANSIENT_CAPACITY


def test_the_face_enforces_each_styles_credential_and_api_version() -> None:
    with simulator_server(**FAST) as upstream, httpx.Client(base_url=upstream.url, timeout=10) as http:
        bearer = {"authorization": f"Bearer {PROVIDER_KEY}"}
        api_key = {"api-key": PROVIDER_KEY}
        version = {"api-version": STYLES["legacy"]}
        assert http.get("/openai/v1/batches", headers=bearer).status_code == 200
        assert http.get("/openai/v1/batches", headers=api_key).status_code == 401
        assert http.get("/openai/batches", headers=api_key, params=version).status_code == 200
        assert http.get("/openai/batches", headers=bearer, params=version).status_code == 401
        missing = http.get("/openai/batches", headers=api_key)
        assert (missing.status_code, missing.json()["error"]["message"]) == (404, "Resource not found")
        body = {"messages": [{"role": "user", "content": "hi"}]}
        answered = http.post(
            "/openai/deployments/my-gpt/chat/completions", json=body, headers=api_key, params=version
        ).json()
        assert answered["model"] == "my-gpt"  # the deployment in the URL is the model
        upload = {"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
        files = {"file": ("in.jsonl", b"{}\n", "application/jsonl")}
        refused = http.post("/openai/v1/files", headers=bearer, data=upload, files=files)
        assert refused.status_code == 400  # Azure takes 14 to 30 days
        assert refused.json()["error"]["param"] == "expires_after"


# batchgate in front of two Azure models, one per endpoint style


def azure_deployments(simulator_url: str) -> list[dict[str, Any]]:
    return [
        {
            "model_name": f"azure-{style}",
            "litellm_params": {
                "model": "azure/gpt-4o-mini",
                "api_base": simulator_url,
                "api_key": PROVIDER_KEY,
                "api_version": version,
                "batch_deployment": BATCH_DEPLOYMENT,
            },
        }
        for style, version in STYLES.items()
    ]


@contextlib.contextmanager
def azure_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with simulator_server(**FAST, **SERVED) as upstream:
        document = config_document(upstream.url, batching={"max_wait": "0.5s", "turnaround_estimate": "2s"})
        document["model_list"] = azure_deployments(upstream.url)
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield stack


def defer(stack: Stack, model: str, text: str) -> str:
    request = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 40}
    raw = stack.client().chat.completions.with_raw_response.create(
        **request, extra_headers={"X-Batch-Deadline": "1h", "Prefer": "respond-async"}
    )
    assert raw.http_response.status_code == 202, raw.http_response.text
    job_id: str = raw.http_response.json()["id"]
    return job_id


def test_azure_models_answer_sync_and_deferred_calls_and_the_books_equal_the_bill(
    tmp_path: Path, redis_url: str
) -> None:
    with azure_stack(tmp_path, redis_url) as stack:
        client = stack.client(timeout=60)
        for style in STYLES:
            request = {"model": f"azure-{style}", "messages": [{"role": "user", "content": f"sync {style}"}]}
            completion = client.chat.completions.create(**request, max_tokens=40)  # type: ignore[call-overload]
            assert completion.choices[0].message.content == expected_content({**request, "model": "gpt-4o-mini"})
        job_ids = {
            style: [defer(stack, f"azure-{style}", f"deferred {style} {i}") for i in range(3)] for style in STYLES
        }
        for style, ids in job_ids.items():
            jobs = stack.final_jobs(ids, timeout=90)
            assert [(job["status"], job["lane"]) for job in jobs] == [("completed", "batch")] * 3, jobs
            for i, job in enumerate(jobs):
                asked = {"model": BATCH_DEPLOYMENT, "messages": [{"role": "user", "content": f"deferred {style} {i}"}]}
                assert job["response"]["choices"][0]["message"]["content"] == expected_content(asked)
        with stack.simulator() as sim:
            v1 = sim.get("/openai/v1/batches", headers={"authorization": f"Bearer {PROVIDER_KEY}"}).json()["data"]
        assert len(v1) >= 2  # every Azure batch, whichever endpoint created it, on the resource's listing
        assert {batch["status"] for batch in v1} == {"Completed"}
        report = savings(stack, 2 + 6)
        assert report["totals"]["unknown_cost_requests"] == 0
        ledger = stack.ledger()
        assert set(ledger["models"]) == {"azure/gpt-4o-mini"}  # the batch deployment bills as the model it serves
        billed = ledger["models"]["azure/gpt-4o-mini"]
        assert (billed["sync"]["requests"], billed["batch"]["requests"]) == (2, 6)
        assert_books_equal_the_bill(report, ledger, {f"azure-{style}": "azure/gpt-4o-mini" for style in STYLES})
        by_lane = {row["lane"]: row for row in report["by_lane"]}
        assert Decimal(by_lane["batch"]["list_usd"]) > 0
        assert Decimal(by_lane["batch"]["paid_usd"]) == Decimal(by_lane["batch"]["list_usd"]) / 2  # Global Batch


@pytest.mark.parametrize("style", list(STYLES))
async def test_a_key_the_resource_echoes_in_an_error_never_leaves_the_adapter(style: str) -> None:
    async with azure_client(style, echo_credentials_in_errors=True) as (client, _):
        with pytest.raises(ProviderError) as caught:
            await client.create("file-missing", metadata={MARK: "x"})
    assert caught.value.classification is ErrorClass.NOT_FOUND
    assert "credential received" in caught.value.message  # the face did echo it (api-key or Bearer)
    assert PROVIDER_KEY not in str(caught.value)
    assert base64.b64encode(PROVIDER_KEY.encode()).decode() not in str(caught.value)


def test_a_stalled_azure_batch_is_bounded_by_the_deadline_and_a_refused_line_fails_its_job(
    tmp_path: Path, redis_url: str
) -> None:
    """Azure never expires a batch: half its lines finish, the rest hang, and the deadline guard answers the jobs
    synchronously and cancels the batch, whose finished half is billed as waste; the books still equal the bill.
    Then a line Azure refuses fails its own job with the provider's error."""
    with azure_stack(tmp_path, redis_url) as stack:
        stack.configure_simulator(finish_fraction=0.5)
        client = stack.client(timeout=60)
        job_ids = []
        for i in range(4):
            raw = client.chat.completions.with_raw_response.create(
                model="azure-v1",
                messages=[{"role": "user", "content": f"stalled {i}"}],
                max_tokens=40,
                extra_headers={"X-Batch-Deadline": "20s", "Prefer": "respond-async"},
            )
            assert raw.http_response.status_code == 202, raw.http_response.text
            job_ids.append(raw.http_response.json()["id"])
        jobs = stack.final_jobs(job_ids, timeout=60)
        # Azure's counts are null, so nothing says which lines ran: every job is answered by the guard in time
        assert [(job["status"], job["lane"], job["rescued"]) for job in jobs] == [("completed", "sync", True)] * 4
        for i, job in enumerate(jobs):
            asked = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"stalled {i}"}]}
            assert job["response"]["choices"][0]["message"]["content"] == expected_content(asked)
        with stack.simulator() as sim:
            [batch] = sim.get("/openai/v1/batches", headers={"authorization": f"Bearer {PROVIDER_KEY}"}).json()["data"]
        assert batch["status"] in ("Cancelling", "Cancelled")
        assert batch["expires_at"] is None
        report = wasted(stack, "answered_elsewhere", 2)  # the cancelled batch still bills the half that ran
        assert report["totals"]["requests"] == 4
        assert_books_equal_the_bill(report, stack.ledger(), {"azure-v1": "azure/gpt-4o-mini"})

        stack.configure_simulator(finish_fraction=1.0, line_400_rate=1.0)
        [refused] = stack.final_jobs([defer(stack, "azure-legacy", "refused")], timeout=60)
        assert (refused["status"], refused["lane"]) == ("failed", "batch")
        assert refused["error"]["message"]


# embeddings: a Global Batch of `/embeddings` lines

EMBED_BATCH_DEPLOYMENT = "text-embedding-3-small-batch"
ENTRA_TOKEN = "entra.eyJ0eXAiOiJKV1QifQ.token-7"  # a Microsoft Entra ID access token, opaque here


def test_azure_embeddings_deferred_through_a_global_batch_each_answer_its_own_and_the_books_equal_the_bill(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`embed-v1` is configured in full; `embed-legacy` as many LiteLLM users configure Azure: the resource and
    version in litellm's AZURE_* environment variables and a Microsoft Entra ID token instead of a key (which the
    face accepts as a Bearer token on the legacy endpoint too, and only that token)."""
    served = {"azure_deployments": {EMBED_BATCH_DEPLOYMENT: "text-embedding-3-small"}, "azure_ad_token": ENTRA_TOKEN}
    with simulator_server(**FAST, **served) as upstream:
        monkeypatch.setenv("AZURE_API_BASE", upstream.url)
        monkeypatch.setenv("AZURE_API_VERSION", STYLES["legacy"])
        monkeypatch.setenv("AZURE_AD_TOKEN", ENTRA_TOKEN)
        document = config_document(upstream.url, batching={"max_wait": "0.5s", "turnaround_estimate": "2s"})
        model = {"model": "azure/text-embedding-3-small", "batch_deployment": EMBED_BATCH_DEPLOYMENT}
        given = {"api_base": upstream.url, "api_key": PROVIDER_KEY, "api_version": STYLES["v1"]}
        document["model_list"] = [
            {"model_name": "embed-v1", "litellm_params": {**model, **given}},
            {"model_name": "embed-legacy", "litellm_params": model},
        ]
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            client = stack.client(timeout=60)
            synced = client.embeddings.create(model="embed-legacy", input="sync text", encoding_format="float")
            [expected] = embedded("text-embedding-3-small", "sync text")  # float32 on the way (litellm's client)
            assert synced.data[0].embedding == pytest.approx(expected, rel=1e-6)
            texts = {style: [f"{style} document {i}" for i in range(2)] for style in STYLES}
            job_ids = {
                style: [
                    client.embeddings.with_raw_response.create(
                        model=f"embed-{style}",
                        input=[text, text.upper()],
                        encoding_format="float",
                        extra_headers={"X-Batch-Deadline": "1h", "Prefer": "respond-async"},
                    ).http_response.json()["id"]
                    for text in texts[style]
                ]
                for style in STYLES
            }
            for style, ids in job_ids.items():
                jobs = stack.final_jobs(ids, timeout=90)
                assert [(job["status"], job["lane"]) for job in jobs] == [("completed", "batch")] * 2, jobs
                for text, job in zip(texts[style], jobs, strict=True):
                    vectors = [item["embedding"] for item in job["response"]["data"]]
                    assert vectors == embedded(EMBED_BATCH_DEPLOYMENT, text, text.upper())
                    assert job["response"]["object"] == "list"
            with stack.simulator() as sim:
                listed = sim.get("/openai/v1/batches", headers={"authorization": f"Bearer {PROVIDER_KEY}"})
            assert {batch["endpoint"] for batch in listed.json()["data"]} == {"/embeddings"}
            report = savings(stack, 1 + 4)
            ledger = stack.ledger()
            assert set(ledger["models"]) == {"azure/text-embedding-3-small"}
            billed = ledger["models"]["azure/text-embedding-3-small"]
            assert (billed["sync"]["requests"], billed["batch"]["requests"]) == (1, 4)
            assert_books_equal_the_bill(
                report, ledger, {f"embed-{style}": "azure/text-embedding-3-small" for style in STYLES}
            )


def embedded(model: str, *texts: str) -> list[list[float]]:
    """The vectors the simulator gives `texts` on `model` (deterministic)."""
    answer = embedding_answer({"model": model, "input": list(texts)})
    return [item["embedding"] for item in embedding_response(model, answer)["data"]]


async def test_an_entra_id_token_the_resource_echoes_in_an_error_never_leaves_the_adapter() -> None:
    with simulator_server(**FAST, echo_credentials_in_errors=True, azure_ad_token=ENTRA_TOKEN) as upstream:
        where = azure_endpoint(upstream.url, api_key=None, api_version=STYLES["legacy"], ad_token=ENTRA_TOKEN)
        client = azure_batch_client(where, batch_deployment=BATCH_DEPLOYMENT, timeout=10, file_expiry=None)
        try:
            with pytest.raises(ProviderError) as caught:
                await client.create("file-missing", metadata={MARK: "x"})
        finally:
            await client.aclose()
    assert caught.value.classification is ErrorClass.NOT_FOUND  # the token was accepted: the file is unknown
    assert "credential received" in caught.value.message
    assert ENTRA_TOKEN not in str(caught.value)
