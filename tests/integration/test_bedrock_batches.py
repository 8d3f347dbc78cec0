"""The Bedrock batch adapter against the simulator's Bedrock face, with inputs and outputs on a real S3-compatible
server (moto's, on loopback): a job's lifecycle and answers, per-record errors, a stop, an expiry with half the
records done, finding a job again after a crash, Bedrock's refusals (too few records, a bad role, a missing
bucket); then deferred calls made with the official openai client, answered from a Bedrock job and reconciled with
the face's bill. A worker killed at each stage of a Bedrock job: tests/e2e/test_crash_faces.py."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proxy.providers.base import BatchInfo, BatchState, LineOutcome, ProviderError
from proxy.providers.bedrock_aws import AwsAccount
from proxy.providers.bedrock_batch import BedrockBatchClient
from proxy.simulator.engine import expected_content
from proxy.simulator.ledger import PriceBook, Tier
from proxy.worker.process import run_in_app
from tests.integration.test_savings_reconcile import assert_books_equal_the_bill, savings
from tests.support.batch_clients import lines_of, pairs, until_ended
from tests.support.deferred_env import chat_body
from tests.support.s3_server import BEDROCK_MODEL, BEDROCK_ROLE, S3Server, aws_environment, bedrock_deployment
from tests.support.stack import Stack, config_document, serving, simulator_server
from tests.support.waiting import wait_until, wait_until_sync

MODEL, ROLE = BEDROCK_MODEL, BEDROCK_ROLE
MINIMUM = 3  # the face's and the adapter's minimum records per job (Bedrock's default is 100)
FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}
LABEL = "batchgate_batch"


@contextlib.asynccontextmanager
async def bedrock(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, **knobs: Any
) -> AsyncIterator[tuple[BedrockBatchClient, str]]:
    """A Bedrock batch client on a fresh bucket, the face reading and writing the same S3; yields (client, bucket)."""
    options = {**FAST, "bedrock_min_records": MINIMUM, "s3_endpoint_url": s3.url, **knobs}
    with simulator_server(**options) as upstream:
        aws_environment(monkeypatch, s3, upstream.url + "/bedrock")
        bucket = s3.make_bucket()
        client = BedrockBatchClient(
            model_id=MODEL, s3_uri=f"s3://{bucket}/jobs", role_arn=ROLE, account=AwsAccount(), timeout=10,
            min_records=MINIMUM,
        )  # fmt: skip
        try:
            yield client, bucket
        finally:
            await client.aclose()


def bodies(count: int, name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"job_{i}", chat_body(MODEL, f"{name} question {i}")) for i in range(count)]


async def submit(client: BedrockBatchClient, count: int, name: str = "b1") -> tuple[BatchInfo, str]:
    prepared = await client.prepare(pairs(bodies(count, name)), metadata={LABEL: name})
    assert prepared.requests == count
    return await client.create(prepared.ref, metadata={LABEL: name}), prepared.ref


async def test_a_job_completes_with_its_answers_and_cleanup_empties_the_bucket(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bedrock(s3, monkeypatch) as (client, bucket):
        created, ref = await submit(client, 4)
        assert created.state is BatchState.VALIDATING
        assert created.batch_id.startswith("arn:aws:bedrock:")
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.total, info.completed, info.failed) == (BatchState.COMPLETED, 4, 4, 0)
        job_id = info.batch_id.rsplit("/", 1)[-1]
        name = ref.rsplit("/", 1)[-1]
        output = [key for key in s3.keys(bucket) if "/output/" in key]
        assert sorted(key.rsplit("/", 2)[-2:][1] for key in output) == sorted([f"{name}.out", "manifest.json.out"])
        assert all(f"/{job_id}/" in key for key in output)
        lines = await lines_of(client, info)
        assert sorted(line.custom_id for line in lines) == [f"job_{i}" for i in range(4)]
        for line in lines:
            assert line.outcome is LineOutcome.SUCCEEDED
            assert line.body is not None
            sent = chat_body(MODEL, f"b1 question {line.custom_id.removeprefix('job_')}")
            assert line.body["choices"][0]["message"]["content"] == expected_content(sent)
        await client.cleanup(ref)
        await client.cleanup(ref)  # already gone is fine
        assert s3.keys(bucket) == []


async def test_per_record_errors_keep_their_status(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async with bedrock(s3, monkeypatch, line_400_rate=0.5, line_500_rate=0.5, seed=3) as (client, _):
        created, _ = await submit(client, 8)
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.failed) == (BatchState.COMPLETED, 0, 8)  # PartiallyCompleted
        lines = await lines_of(client, info)
        assert set(Counter(line.status_code for line in lines)) == {400, 500}
        for line in lines:
            assert line.outcome is LineOutcome.ERRORED
            assert line.error_message
            assert line.transient is (line.status_code == 500)


async def test_a_stopped_job_goes_stopping_then_stopped(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async with bedrock(s3, monkeypatch, finish_fraction=0.0, cancel_delay_s=0.3) as (client, _):
        created, _ = await submit(client, 4)
        await wait_until(lambda: _running(client, created.batch_id), timeout=10, what="the job running before the stop")
        stopping = await client.cancel(created.batch_id)
        assert stopping.state is BatchState.CANCELLING
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed) == (BatchState.CANCELLED, 0)
        assert await lines_of(client, info) == []


async def _running(client: BedrockBatchClient, batch_id: str) -> bool:
    return (await client.retrieve(batch_id)).state is BatchState.IN_PROGRESS


async def test_an_expired_job_gives_the_half_that_finished(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async with bedrock(s3, monkeypatch, finish_fraction=0.5, expiry_s=1.5) as (client, _):
        created, _ = await submit(client, 6)
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed) == (BatchState.EXPIRED, 3)
        lines = await lines_of(client, info)
        assert [line.outcome for line in lines] == [LineOutcome.SUCCEEDED] * 3


async def test_a_crashed_submission_finds_its_job_again(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async with bedrock(s3, monkeypatch, turnaround_s=60.0) as (client, bucket):
        since = time.time()
        first, first_ref = await submit(client, 3, "first")
        second, second_ref = await submit(client, 3, "second")
        again = await client.create(first_ref, metadata={LABEL: "first"})  # the same client token: the same job
        assert again.batch_id == first.batch_id
        elsewhere = BedrockBatchClient(
            model_id=MODEL, s3_uri=f"s3://{bucket}/jobs", role_arn=ROLE, account=AwsAccount(), min_records=MINIMUM
        )
        try:
            [found] = await elsewhere.find_batches({LABEL: "first"}, since=since, prepared=first_ref)
            assert (found.batch_id, found.metadata) == (first.batch_id, {LABEL: "first"})
            [other] = await elsewhere.find_batches({LABEL: "second"}, since=since, prepared=second_ref)
            assert other.batch_id == second.batch_id
            assert await elsewhere.find_batches({LABEL: "x"}, since=since, prepared=first_ref + "-other") == []
        finally:
            await elsewhere.aclose()


async def test_bedrock_refusals_are_its_own(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async with bedrock(s3, monkeypatch) as (client, bucket):
        with pytest.raises(ProviderError) as held:  # under the minimum: not sent to fail
            await client.prepare(pairs(bodies(MINIMUM - 1, "few")), metadata={LABEL: "few"})
        assert (held.value.code, s3.keys(bucket)) == ("too_few_records", [])

        lenient = BedrockBatchClient(
            model_id=MODEL, s3_uri=f"s3://{bucket}/jobs", role_arn=ROLE, account=AwsAccount(), min_records=1
        )
        try:  # the face itself fails a job under its minimum, with Bedrock's message
            prepared = await lenient.prepare(pairs(bodies(MINIMUM - 1, "few")), metadata={LABEL: "few"})
            info = await until_ended(client, (await lenient.create(prepared.ref, metadata={})).batch_id)
            assert info.state is BatchState.FAILED
            assert f"contains less records ({MINIMUM - 1}) than the required minimum of: {MINIMUM}" in str(info.errors)
            assert await lines_of(client, info) == []
        finally:
            await lenient.aclose()

        prepared = await client.prepare(pairs(bodies(MINIMUM, "ok")), metadata={})
        for role, uri, where in (
            ("not-a-role", f"s3://{bucket}/jobs", "roleArn"),
            (ROLE, "s3://no-such-bucket-here/jobs", "is not accessible"),
        ):
            wrong = BedrockBatchClient(model_id=MODEL, s3_uri=uri, role_arn=role, account=AwsAccount())
            source = (
                prepared.ref if role != ROLE else prepared.ref.replace(f"s3://{bucket}/", "s3://no-such-bucket-here/")
            )
            try:
                with pytest.raises(ProviderError) as refused:
                    await wrong.create(source, metadata={})
            finally:
                await wrong.aclose()
            assert (refused.value.status, refused.value.code) == (400, "ValidationException")
            assert where in refused.value.message


# the whole stack: batchgate's API and worker, the official openai client as the caller


@contextlib.contextmanager
def bedrock_stack(
    tmp_path: Path, redis_url: str, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, str]]:
    """batchgate (API and worker) with one Bedrock model on the simulator, jobs on a fresh bucket; yields (stack,
    bucket)."""
    with simulator_server(**FAST, bedrock_min_records=MINIMUM, s3_endpoint_url=s3.url) as upstream:
        aws_environment(monkeypatch, s3, upstream.url + "/bedrock")
        bucket = s3.make_bucket()
        document = config_document(upstream.url)
        document["model_list"] = [bedrock_deployment(bucket, upstream.url, MINIMUM)]
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app], worker=True) as stack:
            yield stack, bucket


def defer(stack: Stack, text: str, deadline: str = "1h") -> str:
    raw = stack.client().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=40,
        extra_headers={"X-Batch-Deadline": deadline},
    )
    assert raw.http_response.status_code == 202, raw.http_response.text
    job_id: str = raw.http_response.json()["id"]
    return job_id


def answer_of(text: str) -> str:
    return expected_content({"model": MODEL, "messages": [{"role": "user", "content": text}]})


def test_a_mixed_workload_is_answered_from_converse_and_a_bedrock_job_and_reconciles_exactly(
    tmp_path: Path, redis_url: str, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync calls (litellm to the Converse face) and deferred ones (a Bedrock job): batchgate's books equal the
    face's bill per lane, in exact Decimal, and the batch lines cost half of on-demand."""
    with bedrock_stack(tmp_path, redis_url, s3, monkeypatch) as (stack, bucket):
        client = stack.client()
        for i in range(2):
            text = f"bedrock now {i}"
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=40
            )
            assert answer.choices[0].message.content == answer_of(text)
        jobs = [defer(stack, f"bedrock later {i}") for i in range(MINIMUM + 1)]
        finished = stack.final_jobs(jobs, timeout=120)
        assert [(job["status"], job["lane"]) for job in finished] == [("completed", "batch")] * len(jobs)
        for i, job in enumerate(finished):
            assert job["response"]["choices"][0]["message"]["content"] == answer_of(f"bedrock later {i}")

        report = savings(stack, 2 + len(jobs))
        assert report["totals"]["unknown_cost_requests"] == 0
        ledger = stack.ledger()
        billed = ledger["models"][MODEL]
        assert (billed["sync"]["requests"], billed["batch"]["requests"]) == (2, len(jobs))
        assert_books_equal_the_bill(report, ledger)
        by_lane = {row["lane"]: row for row in report["by_lane"]}
        assert Decimal(by_lane["batch"]["paid_usd"]) * 2 == Decimal(by_lane["batch"]["list_usd"]) > 0
        assert Decimal(by_lane["sync"]["paid_usd"]) == Decimal(by_lane["sync"]["list_usd"]) > 0
        prices = PriceBook()
        batch, listed = prices.price(MODEL, Tier.BATCH), prices.price(MODEL, Tier.SYNC)
        assert batch is not None
        assert listed is not None
        assert batch.input * 2 == listed.input  # Bedrock batch: half of on-demand
        wait_until_sync(  # the input is deleted once the job's results are in
            lambda: s3.keys(bucket, "bg/input/") == [],
            timeout=20,
            interval=0.1,
            what="the input cleaned up",
        )


def test_a_queue_under_the_minimum_is_held_then_answered_by_the_deadline_guard(
    tmp_path: Path, redis_url: str, s3: S3Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fewer calls than a job's minimum records never make a job (it would fail): they wait, and the deadline guard
    answers them synchronously in time."""
    with bedrock_stack(tmp_path, redis_url, s3, monkeypatch) as (stack, _):
        texts = [f"bedrock held {i}" for i in range(MINIMUM - 1)]
        jobs = [defer(stack, text, deadline="10s") for text in texts]
        finished = stack.final_jobs(jobs, timeout=60)
        assert [(job["status"], job["lane"]) for job in finished] == [("completed", "sync")] * len(jobs)
        for text, job in zip(texts, finished, strict=True):
            assert job["response"]["choices"][0]["message"]["content"] == answer_of(text)
        with stack.simulator() as http:
            listing = http.get("/bedrock/model-invocation-jobs", headers=SIGNED).json()
        assert listing["invocationJobSummaries"] == []  # no job was sent to fail
        refused = [record for record in caplog.records if "too_few_records" in record.getMessage()]
        assert refused == []  # held by the submitter, not claimed into a batch the adapter must refuse
        billed = stack.ledger()["models"][MODEL]["sync"]  # the sync lane: litellm to the Converse face
        assert billed["requests"] == len(jobs)


SIGNED = {"authorization": "AWS4-HMAC-SHA256 Credential=test"}  # the face checks that a call is signed, not how
