"""The Mistral and xAI batch adapters against their simulator faces, directly and through the whole stack (and
Groq's OpenAI-shaped batches on the simulator's groq flavour, for the cases no other test covers): a batch's
lifecycle and answers, per-line errors, a cancel, an expiry with half the lines done, xAI's create rate, finding a
batch again after a crash, the worker sending an expired batch's unfinished half again, and deferred calls made with
the official openai client reconciling exactly with the face's ledger (billed at the provider's batch price)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.providers.base import BatchInfo, BatchState, LineOutcome
from proxy.providers.mistral_batch import MistralBatchClient
from proxy.providers.openai_batch import OpenAIBatchClient
from proxy.providers.xai_batch import XaiBatchClient
from proxy.simulator.engine import expected_content
from proxy.simulator.ledger import PriceBook, Tier
from proxy.worker.process import run_in_app
from proxy.worker.runner import Worker
from tests.support.batch_clients import lines_of, pairs, until_ended
from tests.support.deferred_env import DeferredEnv, assert_answered, chat_body, deferred_env
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, Stack, config_document, serving, simulator_server
from tests.support.waiting import wait_until, wait_until_sync

FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}
LABEL = "batchgate_batch"


@dataclass(frozen=True)
class Provider:
    name: str
    prefix: str  # where the simulator serves it
    model: str  # the upstream model (and the configured model name)
    knobs: tuple[tuple[str, str], ...] = ()  # simulator knobs the face needs

    @property
    def litellm_model(self) -> str:
        return f"{self.name}/{self.model}"

    def client(self, simulator_url: str) -> OpenAIBatchClient:
        where = {"base_url": simulator_url + self.prefix, "api_key": PROVIDER_KEY, "upstream_model": self.model}
        if self.name == "groq":  # OpenAI's shape with windows to 7 days
            return OpenAIBatchClient(**where, timeout=10, completion_window="7d")
        kind = MistralBatchClient if self.name == "mistral" else XaiBatchClient
        return kind(**where, timeout=10)


MISTRAL = Provider("mistral", "/mistral/v1", "mistral-small-latest")
XAI = Provider("xai", "/xai/v1", "grok-4.20-non-reasoning")
GROQ = Provider("groq", "/v1", "openai/gpt-oss-20b", knobs=(("flavor", "groq"),))
PROVIDERS = [pytest.param(MISTRAL, id="mistral"), pytest.param(XAI, id="xai")]
WITH_GROQ = [*PROVIDERS, pytest.param(GROQ, id="groq")]  # Groq's lifecycle, line errors, cancel and expiry


@contextlib.asynccontextmanager
async def batch_client(provider: Provider, **knobs: Any) -> AsyncIterator[tuple[OpenAIBatchClient, str]]:
    with simulator_server(**{**FAST, **dict(provider.knobs), **knobs}) as upstream:
        client = provider.client(upstream.url)
        try:
            yield client, upstream.url
        finally:
            await client.aclose()


def bodies(provider: Provider, count: int, name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"job_{i}", chat_body(provider.model, f"{name} question {i}")) for i in range(count)]


async def submit(client: OpenAIBatchClient, provider: Provider, count: int, name: str = "b1") -> tuple[BatchInfo, str]:
    prepared = await client.prepare(pairs(bodies(provider, count, name)), metadata={LABEL: name})
    assert prepared.requests == count
    return await client.create(prepared.ref, metadata={LABEL: name}), prepared.ref


@pytest.mark.parametrize("provider", WITH_GROQ)
async def test_a_batch_completes_with_its_answers(provider: Provider) -> None:
    async with batch_client(provider) as (client, _):
        created, ref = await submit(client, provider, 5)
        assert created.state in (BatchState.VALIDATING, BatchState.IN_PROGRESS)
        assert created.metadata == {LABEL: "b1"}
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.total, info.completed, info.failed) == (BatchState.COMPLETED, 5, 5, 0)
        lines = await lines_of(client, info)
        assert sorted(line.custom_id for line in lines) == [f"job_{i}" for i in range(5)]
        for line in lines:
            assert line.outcome is LineOutcome.SUCCEEDED
            assert line.body is not None
            sent = chat_body(provider.model, f"b1 question {line.custom_id.removeprefix('job_')}")
            assert line.body["choices"][0]["message"]["content"] == expected_content(sent)
            assert line.body["model"] == provider.model
        await client.cleanup(ref)
        await client.cleanup(ref)  # already gone is fine


@pytest.mark.parametrize("provider", WITH_GROQ)
async def test_per_line_errors_keep_their_status(provider: Provider) -> None:
    async with batch_client(provider, line_400_rate=0.5, line_500_rate=0.5, seed=3) as (client, _):
        created, _ = await submit(client, provider, 12)
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.failed) == (BatchState.COMPLETED, 0, 12)
        lines = await lines_of(client, info)
        assert len(lines) == 12
        assert set(Counter(line.status_code for line in lines)) == {400, 500}
        for line in lines:
            assert line.outcome is LineOutcome.ERRORED
            assert line.error_message
            assert line.transient is (line.status_code == 500)


@pytest.mark.parametrize("provider", WITH_GROQ)
async def test_a_cancel_goes_cancelling_then_cancelled_with_no_answers(provider: Provider) -> None:
    async with batch_client(provider, finish_fraction=0.0, cancel_delay_s=0.3) as (client, _):
        created, _ = await submit(client, provider, 4)
        await wait_until(
            lambda: _running(client, created.batch_id), timeout=10, what="the batch running before the cancel"
        )
        cancelling = await client.cancel(created.batch_id)
        assert cancelling.state is BatchState.CANCELLING
        info = await until_ended(client, created.batch_id)
        assert info.state is BatchState.CANCELLED
        assert info.completed == 0
        lines = await lines_of(client, info)
        if provider is not XAI:  # Mistral's and Groq's error files name the lines that never ran
            assert [line.outcome for line in lines] == [LineOutcome.CANCELLED] * 4
            assert all(line.transient for line in lines)
        else:  # xAI counts them cancelled and gives no result for them: the worker's missing-line rules answer
            assert (lines, info.failed) == ([], 4)


async def _running(client: OpenAIBatchClient, batch_id: str) -> bool:
    return (await client.retrieve(batch_id)).state is BatchState.IN_PROGRESS


@pytest.mark.parametrize("provider", WITH_GROQ)
async def test_an_expired_batch_gives_the_half_that_finished(provider: Provider) -> None:
    async with batch_client(provider, finish_fraction=0.5, expiry_s=1.5) as (client, _):
        created, _ = await submit(client, provider, 10)
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed) == (BatchState.EXPIRED, 5)
        succeeded = [line for line in await lines_of(client, info) if line.outcome is LineOutcome.SUCCEEDED]
        assert len(succeeded) == 5


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_crashed_submission_finds_its_batch_again(provider: Provider) -> None:
    async with batch_client(provider, turnaround_s=60.0) as (client, url):
        since = time.time()
        first, first_ref = await submit(client, provider, 3, "first")
        second, second_ref = await submit(client, provider, 3, "second")
        elsewhere = provider.client(url)  # another host: nothing shared but the provider
        try:
            [found] = await elsewhere.find_batches({LABEL: "first"}, since=since, prepared=first_ref)
            assert (found.batch_id, found.metadata) == (first.batch_id, {LABEL: "first"})
            [other] = await elsewhere.find_batches({LABEL: "second"}, since=since, prepared=second_ref)
            assert other.batch_id == second.batch_id
            assert await elsewhere.find_batches({LABEL: "first"}, since=since, prepared=second_ref) == []
            assert await elsewhere.find_batches({LABEL: "never-sent"}, since=since, prepared=first_ref) == []
            if provider is MISTRAL:  # listed with created_after: a job from before `since` is not looked at
                later = time.time() + 120
                assert await elsewhere.find_batches({LABEL: "first"}, since=later, prepared=first_ref) == []
        finally:
            await elsewhere.aclose()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_input_the_provider_refuses_fails_the_batch(provider: Provider) -> None:
    async with batch_client(provider) as (client, _):
        duplicate = [("job_0", chat_body(provider.model, "a")), ("job_0", chat_body(provider.model, "b"))]
        prepared = await client.prepare(pairs(duplicate), metadata={LABEL: "dup"})
        created = await client.create(prepared.ref, metadata={LABEL: "dup"})
        info = await until_ended(client, created.batch_id)
        assert info.state is BatchState.FAILED
        assert info.errors is not None
        assert "duplicate" in info.errors


# the whole stack: batchgate's API and worker, the official openai client as the caller


@contextlib.contextmanager
def simulated_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    """batchgate with a Mistral and an xAI model that name no key and no api_base: both go to the simulated
    upstream (its Mistral and xAI faces), sync and batch."""
    with simulator_server(**FAST) as upstream:
        document = config_document(upstream.url)
        document["model_list"] = [
            {"model_name": provider.model, "litellm_params": {"model": provider.litellm_model}}
            for provider in (MISTRAL, XAI)
        ]
        with serving(
            document, tmp_path, redis_url, upstream.url, [run_in_app], worker=True, simulator_url=upstream.url
        ) as stack:
            yield stack


def defer(stack: Stack, model: str, text: str) -> str:
    raw = stack.client().chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=40,
        extra_headers={"X-Batch-Deadline": "1h"},
    )
    assert raw.http_response.status_code == 202, raw.http_response.text
    job_id: str = raw.http_response.json()["id"]
    return job_id


def savings(stack: Stack, requests: int) -> dict[str, Any]:
    def counted() -> dict[str, Any] | None:
        report: dict[str, Any] = httpx.get(
            f"{stack.url}/v1/savings", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10
        ).json()
        return report if report["totals"]["requests"] >= requests else None

    return wait_until_sync(counted, timeout=20, interval=0.1, what=f"{requests} requests in the ledger")


def test_deferred_calls_go_through_each_providers_batch_and_reconcile_with_its_bill(
    tmp_path: Path, redis_url: str
) -> None:
    with simulated_stack(tmp_path, redis_url) as stack:
        client = stack.client()
        jobs: dict[str, list[str]] = {}
        for provider in (MISTRAL, XAI):
            answer = client.chat.completions.create(
                model=provider.model, messages=[{"role": "user", "content": "now"}], max_tokens=40
            )
            assert answer.choices[0].message.content == expected_content(chat_body(provider.model, "now"))
            jobs[provider.name] = [defer(stack, provider.model, f"{provider.name} later {i}") for i in range(3)]
        for provider in (MISTRAL, XAI):
            finished = stack.final_jobs(jobs[provider.name], timeout=120)
            assert [(job["status"], job["lane"]) for job in finished] == [("completed", "batch")] * 3
            for i, job in enumerate(finished):
                sent = chat_body(provider.model, f"{provider.name} later {i}")
                assert job["response"]["choices"][0]["message"]["content"] == expected_content(sent)

        report = savings(stack, 8)
        assert report["totals"]["unknown_cost_requests"] == 0
        ledger = stack.ledger()
        assert set(ledger["models"]) == {MISTRAL.litellm_model, XAI.litellm_model}
        prices = PriceBook()
        for provider in (MISTRAL, XAI):
            billed = ledger["models"][provider.litellm_model]
            assert (billed["sync"]["requests"], billed["batch"]["requests"]) == (1, 3)
            rows = [row for row in report["rows"] if row["model"] == provider.model]
            for lane, tier in (("sync", Tier.SYNC), ("batch", Tier.BATCH)):
                charged = sum(
                    (Decimal(row["paid_usd"]) + Decimal(row["waste_usd"]) for row in rows if row["lane"] == lane),
                    Decimal(0),
                )
                assert charged == Decimal(billed[tier.value]["cost_usd"]), (provider.name, lane)
            batch_price, list_price = (
                prices.price(provider.litellm_model, Tier.BATCH),
                prices.price(provider.litellm_model, Tier.SYNC),
            )
            assert batch_price is not None
            assert list_price is not None
            assert batch_price.input < list_price.input  # billed at the provider's batch discount
        mistral_price = prices.price(MISTRAL.litellm_model, Tier.BATCH)
        mistral_list = prices.price(MISTRAL.litellm_model, Tier.SYNC)
        assert mistral_price is not None
        assert mistral_list is not None
        assert mistral_price.input * 2 == mistral_list.input  # no batch price in the map: Mistral's 50%


def face_batches(env: DeferredEnv, provider: Provider) -> list[tuple[int, int]]:
    """(lines, succeeded) of every batch the provider's face holds, oldest first."""
    listing, items = ("/batch/jobs", "data") if provider is MISTRAL else ("/batches", "batches")
    page = httpx.get(
        env.simulator_url + provider.prefix + listing, headers={"authorization": f"Bearer {PROVIDER_KEY}"}, timeout=10
    ).json()
    if provider is MISTRAL:
        return [(job["total_requests"], job["succeeded_requests"]) for job in reversed(page[items])]
    return [(batch["state"]["num_requests"], batch["state"]["num_success"]) for batch in reversed(page[items])]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_worker_sends_the_expired_half_again(tmp_path: Path, redis_url: str, provider: Provider) -> None:
    def models(url: str) -> list[dict[str, Any]]:
        params = {"model": provider.litellm_model, "api_base": url + provider.prefix, "api_key": PROVIDER_KEY}
        return [{"model_name": provider.model, "litellm_params": params}]

    knobs = {**FAST, "finish_fraction": 0.5, "expiry_s": 1.5}
    async with deferred_env(tmp_path, redis_url, simulator=knobs, models=models) as env:
        sent = [chat_body(provider.model, f"{provider.name} q{i}") for i in range(10)]
        views = [await env.accept(body) for body in sent]
        worker = asyncio.create_task(Worker(env.runtime, worker_id="w1").run(burst=True))
        await wait_until(lambda: face_batches(env, provider), timeout=30, what="the first batch created")
        env.configure_simulator(finish_fraction=1.0)
        await asyncio.wait_for(worker, 90)
        assert face_batches(env, provider) == [(10, 5), (5, 5)]  # only the expired half went again
        await assert_answered(env, sent, views)


# xAI's batch creation rate: one create per second per team


async def test_the_xai_face_refuses_a_second_create_within_the_interval() -> None:
    async with batch_client(XAI, xai_create_interval_s=30.0) as (client, url):
        await submit(client, XAI, 1, "first")
        prepared = await client.prepare(pairs(bodies(XAI, 1, "second")), metadata={LABEL: "second"})
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {PROVIDER_KEY}"}, timeout=10) as http:
            response = await http.post(
                f"{url}{XAI.prefix}/batches", json={"name": "second", "input_file_id": prepared.ref}
            )
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["retry-after"]) <= 30


async def test_an_xai_create_refused_for_the_rate_waits_and_is_made() -> None:
    """Two processes of one team create at once: the second is refused (429) and its client waits the Retry-After
    and creates the batch, raising nothing."""
    async with batch_client(XAI, xai_create_interval_s=1.0) as (client, url):
        other = XAI.client(url)
        try:
            first, _ = await submit(client, XAI, 2, "first")
            second, _ = await submit(other, XAI, 2, "second")
            third, _ = await submit(other, XAI, 2, "third")  # paced by its own client: no 429 at all
        finally:
            await other.aclose()
        infos = [await until_ended(client, batch.batch_id) for batch in (first, second, third)]
        assert [(info.state, info.completed) for info in infos] == [(BatchState.COMPLETED, 2)] * 3


async def test_the_worker_keeps_jobs_queued_while_xai_refuses_creates(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A create refused for longer than the client waits goes back to the submitter as transient: the batch's
    jobs stay with it, none fails, and the batch is created once the rate allows."""

    def models(url: str) -> list[dict[str, Any]]:
        params = {"model": XAI.litellm_model, "api_base": url + XAI.prefix, "api_key": PROVIDER_KEY}
        return [{"model_name": XAI.model, "litellm_params": params}]

    caplog.set_level(logging.WARNING, logger="batchgate.worker.submitter")
    knobs = {**FAST, "xai_create_interval_s": 60.0}
    async with deferred_env(tmp_path, redis_url, simulator=knobs, models=models) as env:
        probe = XAI.client(env.simulator_url)
        try:
            await submit(probe, XAI, 1, "someone-else")  # the team's create for the next minute
        finally:
            await probe.aclose()
        sent = [chat_body(XAI.model, f"rate {i}") for i in range(3)]
        views = [await env.accept(body) for body in sent]
        worker = asyncio.create_task(Worker(env.runtime, worker_id="w1").run(burst=True))
        try:
            await wait_until(lambda: _told_to_retry(caplog), timeout=30, what="the create refused for its rate")
            jobs = await env.store.jobs.get_many([view.id for view in views])
            assert [job.status for job in jobs if job is not None] == ["queued"] * 3
            assert len(face_batches(env, XAI)) == 1  # only the other process's
            env.configure_simulator(xai_create_interval_s=0.0)
            await asyncio.wait_for(worker, 90)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        assert face_batches(env, XAI) == [(1, 1), (3, 3)]
        await assert_answered(env, sent, views)


async def _told_to_retry(caplog: pytest.LogCaptureFixture) -> bool:
    return any("will retry" in record.getMessage() and "429" in record.getMessage() for record in caplog.records)
