"""A `gemini/...` model behind batchgate, over real HTTP with the official openai client: synchronous calls
(plain and streamed) through litellm to the simulator's Gemini face, deferred calls answered from a Gemini
batch, and the savings ledger reconciling exactly with what the face billed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.simulator.embeddings import embedding_answer, vector
from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.integration.test_savings_reconcile import FLEX_ASYNC, assert_books_equal_the_bill, defer, savings
from tests.support.deferred_env import GEMINI, gemini_models
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, Stack, config_document, serving, simulator_server
from tests.support.waiting import wait_until_sync

FAST_SIMULATOR = {"turnaround_s": 1.2, "validating_s": 0.1, "finalizing_s": 0.1, "api_key": PROVIDER_KEY}
DEFER = {"X-Batch-Deadline": "1h"}
BILLED = f"gemini/{GEMINI}"  # the face bills litellm's price-map name
EMBEDDER = "gemini-embedding-001"


@contextlib.contextmanager
def gemini_stack(tmp_path: Path, redis_url: str, **sections: Any) -> Iterator[Stack]:
    """Simulator (only PROVIDER_KEY accepted) + batchgate with the in-process worker."""
    with simulator_server(**FAST_SIMULATOR) as upstream:
        document = config_document(upstream.url, **sections)
        embedder = {"model": f"gemini/{EMBEDDER}", "api_base": upstream.url + "/v1beta", "api_key": PROVIDER_KEY}
        document["model_list"] = [*gemini_models(upstream.url), {"model_name": EMBEDDER, "litellm_params": embedder}]
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield stack


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with gemini_stack(tmp_path, redis_url, delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30}) as s:
        yield s


def body(text: str) -> dict[str, Any]:
    return {
        "model": GEMINI,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}],
    }


def gemini_batches(stack: Stack) -> list[dict[str, Any]]:
    with stack.simulator() as client:
        page = client.get("/v1beta/batches", params={"pageSize": 100}, headers={"x-goog-api-key": PROVIDER_KEY})
    page.raise_for_status()
    operations: list[dict[str, Any]] = page.json().get("operations", [])
    return operations


def savings_totals(stack: Stack, requests: int) -> dict[str, Any] | None:
    response = httpx.get(f"{stack.url}/v1/savings", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    totals: dict[str, Any] = response.json()["totals"]
    return totals if totals["requests"] >= requests else None


def test_sync_calls_plain_and_streamed_return_openai_shapes(stack: Stack) -> None:
    request = body("what is a batch?")
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(**request)
        chunks = list(client.chat.completions.create(**request, stream=True))
    completion = raw.parse()
    assert raw.headers["x-batchgate-decision"].startswith("lane=sync")
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected_content(request)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected_content(request)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    billed = stack.ledger()["models"][BILLED]["sync"]
    assert billed["requests"] == 2
    assert billed["input_tokens"] == 2 * completion.usage.prompt_tokens
    assert gemini_batches(stack) == []


def test_deferred_calls_are_answered_from_a_gemini_batch_and_reconcile(stack: Stack) -> None:
    requests = [body(f"defer me to a gemini batch {i}") for i in range(3)]
    with stack.client(timeout=60) as client:
        raws = [
            client.chat.completions.with_raw_response.create(**request, extra_headers=DEFER) for request in requests
        ]
    for raw, request in zip(raws, requests, strict=True):
        completion = raw.parse()
        assert raw.status_code == 200
        assert raw.headers["x-batchgate-job"].startswith("dfr_")
        assert isinstance(completion, openai.types.chat.ChatCompletion)
        assert completion.choices[0].message.content == expected_content(request)
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > 0
    operations = gemini_batches(stack)
    assert {op["metadata"]["state"] for op in operations} == {"BATCH_STATE_SUCCEEDED"}
    assert sum(int(op["metadata"]["batchStats"]["successfulRequestCount"]) for op in operations) == 3
    ledger = stack.ledger()["models"][BILLED]
    assert ledger["sync"]["requests"] == 0
    assert ledger["batch"]["requests"] == 3
    totals = wait_until_sync(lambda: savings_totals(stack, 3), timeout=10, what="the batch lines in the savings")
    assert totals["unknown_cost_requests"] == 0
    assert totals["prompt_tokens"] == ledger["batch"]["input_tokens"]
    assert totals["completion_tokens"] == ledger["batch"]["output_tokens"]
    assert Decimal(totals["paid_usd"]) == Decimal(ledger["batch"]["cost_usd"])  # exactly what the face billed
    assert Decimal(totals["paid_usd"]) * 2 == Decimal(totals["list_usd"])  # Gemini's batch discount: 50%


def test_deferred_calls_go_through_the_files_api_when_inline_is_too_large(stack: Stack) -> None:
    stack.configure_simulator(gemini_inline_max_bytes=256)
    requests = [body(f"a deferred call sent as a file {i}") for i in range(3)]
    with stack.client(timeout=60) as client:
        answers = [client.chat.completions.create(**request, extra_headers=DEFER) for request in requests]
    for completion, request in zip(answers, requests, strict=True):
        assert completion.choices[0].message.content == expected_content(request)
    operations = gemini_batches(stack)
    assert all(op["response"]["responsesFile"].startswith("files/") for op in operations)
    assert sum(int(op["metadata"]["batchStats"]["successfulRequestCount"]) for op in operations) == 3

    def no_input_left() -> bool:
        with stack.simulator() as sim:
            files = sim.get("/v1beta/files", headers={"x-goog-api-key": PROVIDER_KEY}).json()["files"]
        return not [found for found in files if "responses" not in found["displayName"]]

    wait_until_sync(no_input_left, timeout=20, what="the uploaded inputs deleted")


def test_deferred_embeddings_are_answered_from_a_gemini_embeddings_batch_and_the_books_equal_the_bill(
    stack: Stack,
) -> None:
    texts = [["first page", "second page"], ["third page"]]
    with stack.client(timeout=60) as client:
        answers = [
            client.embeddings.create(
                model=EMBEDDER, input=batch, dimensions=8, encoding_format="float", extra_headers=DEFER
            )
            for batch in texts
        ]  # held: each an ordinary CreateEmbeddingResponse once its batch has answered
    for answer, batch in zip(answers, texts, strict=True):
        assert answer.object == "list"
        assert [item.embedding for item in answer.data] == [simulated_vector(text) for text in batch]
        assert answer.usage.prompt_tokens == sum(-(-len(text) // 4) for text in batch)
    operations = gemini_batches(stack)
    assert {op["metadata"]["@type"].rsplit(".", 1)[1] for op in operations} == {"EmbedContentBatch"}
    ledger = stack.ledger()
    assert ledger["models"][f"gemini/{EMBEDDER}"]["batch"]["requests"] == 3  # one Gemini request per input
    assert_books_equal_the_bill(savings(stack, 2), ledger, {EMBEDDER: f"gemini/{EMBEDDER}"})


def simulated_vector(text: str) -> list[float]:
    """What the face embeds `text` as on EMBEDDER at 8 dimensions."""
    answer = embedding_answer({"model": EMBEDDER, "input": text, "dimensions": 8})
    assert answer.embedding is not None
    return vector(answer.embedding.digests[0], 8)


def test_gemini_flex_calls_are_sent_at_the_flex_tier_and_billed_at_its_price_on_both_sides(
    tmp_path: Path, redis_url: str
) -> None:
    """`service_tier: "flex"` reaches Gemini as `serviceTier` (litellm maps it): answered and billed at the flex
    price by the face and on the books; when flex capacity is gone (429) the worker pays list instead."""
    policy = {"rules": [{"name": "flex", "match": {"headers": {"x-lane": "flex"}}, "lane": "flex", "deadline": "1h"}]}
    with simulator_server(**FAST_SIMULATOR) as upstream:
        document = config_document(upstream.url, policy=policy)
        document["model_list"] = [{**model, "supports_flex": True} for model in gemini_models(upstream.url)]
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            flex = stack.final_jobs([defer(stack, GEMINI, **FLEX_ASYNC) for _ in range(2)])
            stack.configure_simulator(flex_429_rate=1.0)
            [fallback] = stack.final_jobs([defer(stack, GEMINI, **FLEX_ASYNC)])
            report, ledger = savings(stack, 3), stack.ledger()
    assert [(job["status"], job["lane"]) for job in flex] == [("completed", "flex")] * 2
    assert (fallback["status"], fallback["lane"]) == ("completed", "sync")
    assert ledger["models"][BILLED]["flex"]["requests"] == 2
    assert ledger["models"][BILLED]["sync"]["requests"] == 1
    assert_books_equal_the_bill(report, ledger, {GEMINI: BILLED})
    [row] = [row for row in report["by_lane"] if row["lane"] == "flex"]
    assert Decimal(row["paid_usd"]) == Decimal(row["list_usd"]) / 2  # Gemini Flex: 50% of list
