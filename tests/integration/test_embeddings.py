"""`/v1/embeddings` through batchgate with the official openai client: the sync lane (single and array input),
deferred by header and by a policy rule through a batch (each answer its own, by polling, held connection,
long poll and webhook), answers valid against OpenAI's schema, and the books reconciling with the simulator's.

The simulator embeds deterministically (proxy/simulator/embeddings.py), so a deferred answer must equal the
synchronous answer to the same input, vector for vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.worker.process import run_in_app
from tests.integration.test_savings_reconcile import assert_books_equal_the_bill, savings
from tests.integration.test_webhooks import SECRET, Receiver, receiving
from tests.support.openai_schema import assert_valid
from tests.support.stack import MASTER_KEY, TEAM_KEYS, Stack, running_stack
from tests.support.waiting import wait_until_sync

EMBEDDER = "text-embedding-3-small"
CHAT = "gpt-4o-mini"
LITELLM_EMBEDDER = "embedder-via-litellm"  # a provider with no raw path: litellm.aembedding
MODELS = {CHAT: f"openai/{CHAT}", EMBEDDER: f"openai/{EMBEDDER}", LITELLM_EMBEDDER: f"litellm_proxy/{EMBEDDER}"}
POLICY = {
    "rules": [
        {"name": "team-beta-embeddings", "match": {"teams": ["beta"], "endpoints": ["embeddings"]},
         "lane": "batch", "deadline": "1h"},
    ]
}  # fmt: skip
DIMENSIONS = 8


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    delivery = {"webhook": {"secret": SECRET, "allow_hosts": ["127.0.0.1"]}}
    with running_stack(
        tmp_path, redis_url, background=[run_in_app], policy=POLICY, models=MODELS, delivery=delivery
    ) as running:
        yield running


def http(stack: Stack, key: str = MASTER_KEY) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {key}"}, timeout=60)


def vectors(answer: Any) -> list[list[float]]:
    return [list(item.embedding) for item in answer.data]


def test_sync_lane_single_and_array_input(stack: Stack) -> None:
    client = stack.client()
    single = client.embeddings.with_raw_response.create(model=EMBEDDER, input="the sky", dimensions=DIMENSIONS)
    assert single.headers["x-batchgate-decision"].startswith("lane=sync; rule=default; endpoint=embeddings")
    one = single.parse()
    assert one.object == "list"
    assert one.model == EMBEDDER
    assert [item.index for item in one.data] == [0]
    assert len(one.data[0].embedding) == DIMENSIONS
    assert one.usage.prompt_tokens == one.usage.total_tokens == 2  # ceil(7 bytes / 4)
    many = client.embeddings.create(model=EMBEDDER, input=["the sky", "the sea", "x" * 9], dimensions=DIMENSIONS)
    assert [item.index for item in many.data] == [0, 1, 2]
    assert vectors(many)[0] == vectors(one)[0]  # the same input embeds the same
    assert vectors(many)[1] != vectors(many)[0]
    assert many.usage.prompt_tokens == 2 + 2 + 3
    tokens = client.embeddings.create(model=EMBEDDER, input=[[1, 2, 3], [4]], dimensions=DIMENSIONS)
    assert tokens.usage.prompt_tokens == 4
    via_litellm = client.embeddings.create(model=LITELLM_EMBEDDER, input=["the sky", "the sea"], dimensions=DIMENSIONS)
    assert vectors(via_litellm) == vectors(many)[:2]
    assert via_litellm.usage.prompt_tokens == 4
    # the raw bytes of an OpenAI-shaped provider, in OpenAI's schema (floats asked for)
    with http(stack) as raw:
        answer = raw.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["a", "b"], "encoding_format": "float"})
        assert answer.status_code == 200
        assert_valid("CreateEmbeddingResponse", answer.json())
        refused = raw.post("/v1/embeddings", json={"model": EMBEDDER, "input": ""})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "input"
        assert_valid("ErrorResponse", refused.json())
        chat_model = raw.post("/v1/embeddings", json={"model": "no-such-model", "input": "a"})
        assert chat_model.status_code == 404


def test_deferred_by_header_each_answer_its_own(stack: Stack) -> None:
    client = stack.client()
    texts = [f"document {n}" for n in range(4)]
    job_ids = []
    for text in texts:
        raw = client.embeddings.with_raw_response.create(
            model=EMBEDDER,
            input=[text, text.upper()],
            dimensions=DIMENSIONS,
            encoding_format="float",
            extra_headers={"X-Batch-Deadline": "1h", "Prefer": "respond-async"},
        )
        assert raw.http_response.status_code == 202, raw.http_response.text
        job = raw.http_response.json()
        assert job["object"] == "embedding.deferred"
        assert job["endpoint"] == "embeddings"
        assert job["model"] == EMBEDDER
        assert "endpoint=embeddings" in raw.headers["x-batchgate-decision"]
        job_ids.append(job["id"])
    jobs = stack.final_jobs(job_ids)
    for text, job in zip(texts, jobs, strict=True):
        assert job["status"] == "completed", job
        assert job["lane"] == "batch", job
        response = job["response"]
        assert_valid("CreateEmbeddingResponse", response)
        direct = client.embeddings.create(
            model=EMBEDDER, input=[text, text.upper()], dimensions=DIMENSIONS, encoding_format="float"
        )
        assert [item["embedding"] for item in response["data"]] == vectors(direct)
    with stack.simulator() as simulator:
        batches = simulator.get("/v1/batches", headers={"authorization": "Bearer x"}).json()["data"]
    assert {batch["endpoint"] for batch in batches} == {"/v1/embeddings"}


def test_deferred_by_policy_rule_held_long_polled_and_webhook(stack: Stack) -> None:
    beta = stack.client(TEAM_KEYS["beta"])
    # held: the rule defers it, the connection is held and the answer is an ordinary CreateEmbeddingResponse
    held = beta.embeddings.with_raw_response.create(model=EMBEDDER, input="held call", dimensions=DIMENSIONS)
    decision = held.headers["x-batchgate-decision"]
    assert "rule=team-beta-embeddings" in decision, decision
    assert "lane=batch" in decision, decision
    answer = held.parse()
    assert answer.object == "list"
    assert len(answer.data[0].embedding) == DIMENSIONS
    sync = stack.client().embeddings.create(model=EMBEDDER, input="held call", dimensions=DIMENSIONS)
    assert vectors(answer) == vectors(sync)
    # the rule names embeddings only: the same team's chat call stays synchronous
    chat = beta.chat.completions.with_raw_response.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert chat.headers["x-batchgate-decision"].startswith("lane=sync; rule=default")
    # long poll
    with http(stack, TEAM_KEYS["beta"]) as raw:
        body = {"model": EMBEDDER, "input": ["polled"], "encoding_format": "float", "dimensions": DIMENSIONS}
        polled = raw.post("/v1/embeddings", json=body, headers={"Prefer": "wait=60"})
        assert polled.status_code == 200, polled.text
        assert_valid("CreateEmbeddingResponse", polled.json())
    # webhook
    receiver = Receiver(SECRET)
    with receiving(receiver) as url:
        hooked = beta.embeddings.with_raw_response.create(
            model=EMBEDDER, input="hooked", dimensions=DIMENSIONS, extra_headers={"X-Batch-Callback-Url": url}
        )
        assert hooked.http_response.status_code == 202, hooked.http_response.text
        job_id = hooked.http_response.json()["id"]
        wait_until_sync(lambda: bool(receiver.delivered()), timeout=40, interval=0.1, what="the webhook")
    job = receiver.delivered()[0].verified
    assert job["id"] == job_id
    assert job["object"] == "embedding.deferred"
    assert job["response"]["data"][0]["object"] == "embedding"


def test_mixed_workload_reconciles_with_the_simulator_ledger(stack: Stack) -> None:
    client = stack.client()
    client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hello"}])
    client.embeddings.create(model=EMBEDDER, input=["one", "two"], dimensions=DIMENSIONS)
    client.responses.create(model=CHAT, input="hello")
    with client.responses.stream(model=CHAT, input="streamed hello") as stream:
        stream.get_final_response()  # its usage read from response.completed
    deferred = {"X-Batch-Deadline": "1h", "Prefer": "respond-async"}
    ids = [
        client.embeddings.with_raw_response.create(
            model=EMBEDDER, input=f"deferred {n}", dimensions=DIMENSIONS, extra_headers=deferred
        ).http_response.json()["id"]
        for n in range(3)
    ]
    ids += [
        client.chat.completions.with_raw_response.create(
            model=CHAT, messages=[{"role": "user", "content": f"later {n}"}], extra_headers=deferred
        ).http_response.json()["id"]
        for n in range(2)
    ]
    ids += [
        client.responses.with_raw_response.create(
            model=CHAT, input=f"later {n}", extra_headers=deferred
        ).http_response.json()["id"]
        for n in range(2)
    ]
    jobs = stack.final_jobs(ids)
    assert all(job["status"] == "completed" and job["lane"] == "batch" for job in jobs), jobs
    report = savings(stack, 4 + 7)
    assert report["totals"]["unknown_cost_requests"] == 0
    ledger = stack.ledger()
    assert_books_equal_the_bill(report, ledger)
    assert {(row["model"], row["endpoint"]) for row in report["rows"]} == {
        (CHAT, "chat_completions"),
        (EMBEDDER, "embeddings"),
        (CHAT, "responses"),
    }
    assert {row["endpoint"]: row["requests"] for row in report["by_endpoint"]} == {
        "chat_completions": 3,
        "embeddings": 4,
        "responses": 4,
    }
    embedded = ledger["models"][EMBEDDER]
    assert embedded["batch"]["input_tokens"] == 3 * 3
    assert embedded["batch"]["output_tokens"] == 0
    assert Decimal(embedded["batch"]["cost_usd"]) > 0


def test_an_embeddings_queue_is_split_at_50000_inputs_per_batch(tmp_path: Path, redis_url: str) -> None:
    """25 calls of 2,048 inputs each (51,200) flushed together make two batches, none over OpenAI's limit (the
    simulator fails a batch over it, as OpenAI does)."""
    batching = {"max_wait": "1h", "max_requests": 25, "turnaround_estimate": "5s"}
    with running_stack(tmp_path, redis_url, background=[run_in_app], models=MODELS, batching=batching) as stack:
        client = stack.client()
        deferred = {"X-Batch-Deadline": "24h", "Prefer": "respond-async"}
        ids = [
            client.embeddings.with_raw_response.create(
                model=EMBEDDER, input=[f"w{n}"] * 2048, dimensions=1, extra_headers=deferred
            ).http_response.json()["id"]
            for n in range(25)
        ]
        jobs = stack.final_jobs(ids, timeout=60)
        assert all(job["status"] == "completed" for job in jobs), [job.get("error") for job in jobs]
        assert all(len(job["response"]["data"]) == 2048 for job in jobs)
        with stack.simulator() as simulator:
            batches = simulator.get("/v1/batches", headers={"authorization": "Bearer x"}).json()["data"]
    assert sorted(batch["request_counts"]["total"] for batch in batches) == [1, 24]
    assert all(batch["status"] == "completed" for batch in batches)
