"""VertexBatchClient against the simulator's Vertex AI face, which reads and writes a real GCS-compatible server
on loopback: a job end to end (input uploaded, output read, objects cleaned up), per-line errors, cancel, expiry,
the face's strictness and finding a job again after a crash."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.providers.base import BatchInfo, BatchState, ErrorClass, LineOutcome, PreparedInput, ProviderError
from proxy.providers.vertex_batch import VertexBatchClient, VertexTarget
from proxy.simulator.engine import expected_content
from tests.support.deferred_env import GEMINI, chat_body
from tests.support.gcs_server import application_default_credentials, gcs_server, object_names
from tests.support.stack import PROVIDER_KEY, simulator_server
from tests.support.waiting import wait_until

FAST = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}
BUCKET = "batchgate-tests"
BATCH_KEY = "batchgate_batch"


async def pairs(items: list[tuple[str, dict[str, Any]]]) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
    for custom_id, body in items:
        yield custom_id, body


def vertex_client(url: str, gcs: str, staging: Path, *, token: str | None = PROVIDER_KEY, model: str = GEMINI,
                  bucket: str = BUCKET) -> VertexBatchClient:  # fmt: skip
    target = VertexTarget(base_url=url, project="proj-1", location="us-central1", bucket=bucket, token=token)
    return VertexBatchClient(target, upstream_model=model, timeout=10, staging_dir=staging, gcs_root=gcs)


@contextlib.asynccontextmanager
async def batch_client(tmp_path: Path, **knobs: Any) -> AsyncIterator[tuple[VertexBatchClient, str, str]]:
    with (
        gcs_server(BUCKET) as gcs,
        simulator_server(**{**FAST, "api_key": PROVIDER_KEY, "gcs_url": gcs, **knobs}) as up,
    ):
        client = vertex_client(up.url, gcs, tmp_path / "staging")
        try:
            yield client, up.url, gcs
        finally:
            await client.aclose()


def question(name: str, index: int) -> dict[str, Any]:
    return chat_body(GEMINI, f"{name} vertex question {index}")


async def prepare(client: VertexBatchClient, count: int, name: str = "b1") -> PreparedInput:
    return await client.prepare(pairs([(f"job_{i}", question(name, i)) for i in range(count)]),
                                metadata={BATCH_KEY: name})  # fmt: skip


async def submit(client: VertexBatchClient, count: int, name: str = "b1") -> BatchInfo:
    prepared = await prepare(client, count, name)
    return await client.create(prepared.ref, metadata={BATCH_KEY: name})


async def until_ended(client: VertexBatchClient, batch_id: str, within: float = 20) -> BatchInfo:
    async def ended() -> BatchInfo | None:
        info = await client.retrieve(batch_id)
        return info if info.state.is_terminal else None

    return await wait_until(ended, timeout=within, what=f"job {batch_id} ending")


async def test_a_job_completes_with_openai_shaped_answers_and_leaves_no_objects(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, _, gcs):
        prepared = await prepare(client, 6)
        assert prepared.requests == 6
        assert object_names(gcs, BUCKET) == [f"batchgate/{prepared.ref.rsplit('-', 1)[1]}/input.jsonl"]
        created = await client.create(prepared.ref, metadata={BATCH_KEY: "b1"})
        assert created.batch_id.startswith("projects/proj-1/locations/us-central1/batchPredictionJobs/")
        assert created.state is BatchState.VALIDATING
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.failed, info.total) == (BatchState.COMPLETED, 6, 0, 6)
        assert info.output_file_id is not None
        assert info.output_file_id.startswith(f"gs://{BUCKET}/batchgate/")
        lines = [line async for line in client.results(info)]
        assert sorted(line.custom_id for line in lines) == [f"job_{i}" for i in range(6)]
        for line in lines:
            assert line.outcome is LineOutcome.SUCCEEDED
            assert line.body is not None
            assert line.body["object"] == "chat.completion"
            index = int(line.custom_id.removeprefix("job_"))
            assert line.body["choices"][0]["message"]["content"] == expected_content(question("b1", index))
            assert line.body["usage"]["total_tokens"] > line.body["usage"]["prompt_tokens"] > 0
        await client.cleanup(prepared.ref)
        assert object_names(gcs, BUCKET) == []
        await client.cleanup(prepared.ref)  # missing is fine


async def test_per_line_errors_keep_their_status_and_an_openai_error_body(tmp_path: Path) -> None:
    async with batch_client(tmp_path, line_400_rate=0.3, line_429_rate=0.3, seed=5) as (client, _, _):
        info = await until_ended(client, (await submit(client, 20)).batch_id)
        lines = [line async for line in client.results(info)]
        assert len(lines) == 20
        statuses = Counter(line.status_code for line in lines)
        assert set(statuses) == {200, 400, 429}
        assert (info.completed, info.failed) == (statuses[200], statuses[400] + statuses[429])
        for line in lines:
            if line.status_code == 200:
                continue
            assert line.outcome is LineOutcome.ERRORED
            assert line.body is not None
            assert line.body["error"]["type"] == (
                "invalid_request_error" if line.status_code == 400 else "rate_limit_error"
            )
            assert line.transient is (line.status_code == 429)


async def test_cancel_ends_the_job_with_only_finished_lines_answered(tmp_path: Path) -> None:
    async with batch_client(tmp_path, finish_fraction=0.5, cancel_delay_s=0.3) as (client, _, _):
        created = await submit(client, 6)

        async def half_done() -> BatchInfo | None:
            info = await client.retrieve(created.batch_id)
            return info if info.completed == 3 else None

        await wait_until(half_done, timeout=20, what="half the lines finished")
        cancelling = await client.cancel(created.batch_id)
        assert cancelling.state is BatchState.CANCELLING
        info = await until_ended(client, created.batch_id)
        assert (info.state, info.completed, info.total) == (BatchState.CANCELLED, 3, 6)
        lines = [line async for line in client.results(info)]
        assert len(lines) == 3
        assert all(line.outcome is LineOutcome.SUCCEEDED for line in lines)
        with pytest.raises(ProviderError) as caught:
            await client.cancel(created.batch_id)
        assert caught.value.status == 400


async def test_an_expired_job_answers_what_finished(tmp_path: Path) -> None:
    async with batch_client(tmp_path, finish_fraction=0.5, expiry_s=1.5) as (client, _, _):
        info = await until_ended(client, (await submit(client, 10)).batch_id)
        assert (info.state, info.completed) == (BatchState.EXPIRED, 5)
        assert len([line async for line in client.results(info)]) == 5


async def test_the_face_is_strict_about_token_model_and_bucket(tmp_path: Path) -> None:
    async with batch_client(tmp_path) as (client, url, gcs):
        prepared = await prepare(client, 1)
        for name, other, status, kind in (
            ("token", vertex_client(url, gcs, tmp_path / "a", token="wrong"), 401, ErrorClass.ACCOUNT_PROBLEM),
            # an unknown model is a 404, but not a lost input: preparing it again would not help
            ("model", vertex_client(url, gcs, tmp_path / "b", model="gemini-9-imaginary"), 404, ErrorClass.BAD_REQUEST),
            ("bucket", vertex_client(url, gcs, tmp_path / "c", bucket="no-such-bucket"), 400, ErrorClass.BAD_REQUEST),
        ):
            try:
                with pytest.raises(ProviderError) as caught:
                    await other.create(prepared.ref, metadata={BATCH_KEY: name})
            finally:
                await other.aclose()
            assert (caught.value.status, caught.value.classification) == (status, kind), name
        stranger = vertex_client(url, gcs, tmp_path / "d", token="wrong")
        try:
            with pytest.raises(ProviderError) as refused:
                await stranger.retrieve("projects/proj-1/locations/us-central1/batchPredictionJobs/1")
        finally:
            await stranger.aclose()
        assert refused.value.classification is ErrorClass.ACCOUNT_PROBLEM


async def test_a_crashed_submission_finds_its_job_again_on_any_host(tmp_path: Path) -> None:
    async with batch_client(tmp_path, turnaround_s=60.0, finish_fraction=0.0) as (client, url, gcs):
        since = time.time()
        first_input = await prepare(client, 3, "first")
        first = await client.create(first_input.ref, metadata={BATCH_KEY: "first"})
        second = await submit(client, 3, "second")
        elsewhere = vertex_client(url, gcs, tmp_path / "other-host")
        try:
            [found] = await elsewhere.find_batches({BATCH_KEY: "first"}, since=since, prepared=first_input.ref)
            assert (found.batch_id, found.metadata) == (first.batch_id, {BATCH_KEY: "first"})
            [other] = await elsewhere.find_batches({BATCH_KEY: "second"}, since=since, prepared="")
            assert other.batch_id == second.batch_id
            assert await elsewhere.find_batches({BATCH_KEY: "first"}, since=time.time() + 120, prepared="") == []
            assert await elsewhere.find_batches({BATCH_KEY: "never-sent"}, since=since, prepared="") == []
        finally:
            await elsewhere.aclose()


async def configure(url: str, **knobs: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as control:
        (await control.patch(url + "/_sim/config", json=knobs)).raise_for_status()


async def test_application_default_credentials_are_refreshed_before_they_expire_not_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No static token: a real ADC file (workload identity federation) exchanged at the simulator's STS endpoint.
    A token that google-auth counts stale (within 225 s of its expiry) is refreshed at the next call, before the
    face would refuse it; a fresh one is reused by every call, jobs and GCS objects alike."""
    async with batch_client(tmp_path, google_token_lifetime_s=226) as (_, url, gcs):
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(application_default_credentials(tmp_path, url)))
        adc = vertex_client(url, gcs, tmp_path / "adc-staging", token=None)

        def grants() -> int:
            found: int = httpx.get(url + "/_sim/google-tokens", timeout=10).json()["grants"]
            return found

        try:
            created = await submit(adc, 2)  # an upload to GCS and a create, on one token
            assert grants() == 1

            async def refreshed(count: int) -> BatchInfo | None:
                info = await adc.retrieve(created.batch_id)  # a stale token sent would be refused (401)
                return info if grants() == count else None

            await wait_until(lambda: refreshed(2), timeout=20, what="the stale token refreshed")
            await configure(url, google_token_lifetime_s=3600)
            await wait_until(lambda: refreshed(3), timeout=20, what="a long-lived token fetched")
            for _ in range(5):
                await adc.retrieve(created.batch_id)
            info = await until_ended(adc, created.batch_id)
            assert len([line async for line in adc.results(info)]) == 2
            assert grants() == 3
            await configure(url, echo_credentials_in_errors=True)
            with pytest.raises(ProviderError) as refused:
                await adc.retrieve("projects/proj-1/locations/us-central1/batchPredictionJobs/1")
            assert "credential received" in str(refused.value)
            assert "ya29." not in str(refused.value)  # the refreshed token is masked like a configured one
        finally:
            await adc.aclose()
