"""The upstream's request id and rate-limit headers reach the caller on both synchronous paths (the fast
OpenAI-shaped one and litellm's), plain, streamed and failing; batchgate's own id stays in
x-batchgate-request-id; a deferred answer's job object carries its batch line's upstream request id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.test_anthropic_stack import CLAUDE, anthropic_stack
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, Stack

GPT = "gpt-4o-mini"
MODELS = [GPT, CLAUDE]
MESSAGES = [{"role": "user", "content": "which request was this?"}]
RATE_LIMITS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-limit-tokens",
               "x-ratelimit-remaining-tokens")  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with anthropic_stack(tmp_path, redis_url) as running:
        yield running


@pytest.mark.parametrize("model", MODELS)
def test_request_id_and_rate_limits_come_through(stack: Stack, model: str) -> None:
    with stack.client(timeout=60) as client:
        first = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        second = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    completion = second.parse()
    upstream_id = second.headers["x-request-id"]
    assert upstream_id.startswith("req_")
    assert completion._request_id == upstream_id  # what the official client exposes
    assert first.headers["x-request-id"] != upstream_id
    assert second.headers["x-batchgate-request-id"]
    assert second.headers["x-batchgate-request-id"] != upstream_id
    for name in RATE_LIMITS:
        assert int(second.headers[name]) >= 0
    assert int(second.headers["x-ratelimit-limit-requests"]) == 10_000
    # the simulator counts every call in its minute: the second call leaves one request fewer
    before, after = (int(raw.headers["x-ratelimit-remaining-requests"]) for raw in (first, second))
    assert after == before - 1 or after == 9_999  # (or the minute rolled over between the two calls)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_answers_carry_the_headers_too(stack: Stack, model: str) -> None:
    with (
        stack.client(timeout=60) as client,
        client.chat.completions.with_streaming_response.create(model=model, messages=MESSAGES, stream=True) as response,
    ):
        headers = response.headers
        chunks = list(response.parse())
    assert chunks
    assert headers["x-request-id"].startswith("req_")
    assert headers["x-batchgate-request-id"] != headers["x-request-id"]
    assert int(headers["x-ratelimit-remaining-tokens"]) > 0


@pytest.mark.parametrize("model", MODELS)
def test_a_rate_limited_call_passes_retry_hints_and_the_request_id(stack: Stack, model: str) -> None:
    with stack.simulator() as sim:
        sim.patch("/_sim/config", json={"retry_after_s": 0}).raise_for_status()
        sim.post("/_sim/fail-next", json={"count": 3, "status": 429}).raise_for_status()  # outlasts the retries
    with stack.client(timeout=60) as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=model, messages=MESSAGES)
    headers = caught.value.response.headers
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")
    assert headers["retry-after"] == "0"
    if model == GPT:  # OpenAI's face sends the milliseconds too, and rate-limit state on errors
        assert headers["retry-after-ms"] == "0"
        assert "x-ratelimit-remaining-requests" in headers


def test_a_deferred_answer_names_its_batch_lines_request_id(stack: Stack) -> None:
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, extra_headers={"X-Batch-Deadline": "1h", "Prefer": "respond-async"}
        )
    assert raw.status_code == 202
    job_id = raw.http_response.json()["id"]
    assert "upstream_request_id" not in raw.http_response.json()  # no answer yet
    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30) as http:
        job = http.get(f"/v1/deferred/{job_id}", headers={"prefer": "wait=25"}).json()
        ended = time.monotonic() + 25
        while job["status"] != "completed" and time.monotonic() < ended:
            job = http.get(f"/v1/deferred/{job_id}", headers={"prefer": "wait=5"}).json()
    assert job["status"] == "completed"
    assert job["lane"] == "batch"
    assert job["upstream_request_id"].startswith("req_")
    provider = {"authorization": f"Bearer {PROVIDER_KEY}"}
    with stack.simulator() as sim:
        [batch] = sim.get("/v1/batches", headers=provider).json()["data"]
        output = sim.get(f"/v1/files/{batch['output_file_id']}/content", headers=provider)
    assert job["upstream_request_id"] in output.text  # the id of that very line of the batch's output file
