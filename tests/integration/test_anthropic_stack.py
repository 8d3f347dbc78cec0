"""An `anthropic/claude-...` model behind batchgate, over real HTTP with the official openai client: synchronous
calls (plain, streamed, failing) through litellm, and a deferred call answered from an Anthropic Message Batch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, Stack, config_document, serving, simulator_server
from tests.support.waiting import wait_until_sync

CLAUDE = "claude-haiku-4-5-20251001"  # in litellm's price map with batch prices
FAST_SIMULATOR = {"turnaround_s": 1.2, "validating_s": 0.1, "finalizing_s": 0.1, "api_key": PROVIDER_KEY}
DEFER = {"X-Batch-Deadline": "1h"}


def claude_deployment(simulator_url: str) -> dict[str, Any]:
    return {
        "model_name": CLAUDE,
        "litellm_params": {"model": f"anthropic/{CLAUDE}", "api_base": simulator_url, "api_key": PROVIDER_KEY},
    }


@contextlib.contextmanager
def anthropic_stack(tmp_path: Path, redis_url: str, **sections: Any) -> Iterator[Stack]:
    """Simulator (both faces; only PROVIDER_KEY accepted) + batchgate with the in-process worker."""
    with simulator_server(**FAST_SIMULATOR) as upstream:
        document = config_document(upstream.url, **sections)
        document["model_list"].append(claude_deployment(upstream.url))
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield stack


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with anthropic_stack(
        tmp_path, redis_url, delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30}
    ) as running:
        yield running


def body(text: str) -> dict[str, Any]:
    return {
        "model": CLAUDE,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}],
    }


def anthropic_batches(stack: Stack) -> list[dict[str, Any]]:
    with stack.simulator() as client:
        page = client.get("/v1/messages/batches", params={"limit": 100}, headers={"x-api-key": PROVIDER_KEY})
    page.raise_for_status()
    batches: list[dict[str, Any]] = page.json()["data"]
    return batches


def test_sync_call_returns_an_openai_chat_completion(stack: Stack) -> None:
    request = body("what is a batch?")
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(**request)
    completion = raw.parse()
    assert raw.headers["x-batchgate-decision"].startswith("lane=sync")
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected_content(request)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    ledger = stack.ledger()["models"][CLAUDE]
    assert ledger["sync"]["requests"] == 1
    assert ledger["sync"]["input_tokens"] == completion.usage.prompt_tokens
    assert anthropic_batches(stack) == []


def test_streamed_sync_call_yields_openai_chunks(stack: Stack) -> None:
    """Through litellm too, every stream is priced from the usage batchgate asks for; a caller that did not ask
    gets no usage, one that asked gets it in a last chunk with no choices."""
    request = body("stream me an answer please")
    with stack.client(timeout=60) as client:
        chunks = list(client.chat.completions.create(**request, stream=True))
        asked = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected_content(request)
    assert len(chunks) > 2
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert asked[-1].usage is not None
    assert asked[-1].choices == []
    billed = stack.ledger()["models"][CLAUDE]["sync"]
    assert billed["requests"] == 2
    savings = wait_until_sync(lambda: counted(stack, 2), timeout=10, what="both streams in the ledger")
    assert savings["unknown_cost_requests"] == 0
    assert savings["prompt_tokens"] == billed["input_tokens"]
    assert savings["completion_tokens"] == billed["output_tokens"]
    assert Decimal(savings["paid_usd"]) == Decimal(billed["cost_usd"])


def counted(stack: Stack, requests: int) -> dict[str, Any] | None:
    response = httpx.get(f"{stack.url}/v1/savings", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    totals: dict[str, Any] = response.json()["totals"]
    return totals if totals["requests"] >= requests else None


def test_provider_errors_come_back_openai_shaped_without_the_key(stack: Stack) -> None:
    with stack.simulator() as sim:
        sim.post("/_sim/fail-next", json={"count": 1, "status": 400}).raise_for_status()
    with stack.client(timeout=60) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body("this one fails"))
    assert caught.value.status_code == 400
    assert PROVIDER_KEY not in caught.value.response.text
    assert caught.value.response.json()["error"]["message"]


def test_a_throttled_sync_call_is_retried(stack: Stack) -> None:
    with stack.simulator() as sim:
        sim.post("/_sim/fail-next", json={"count": 1, "status": 429}).raise_for_status()
        sim.patch("/_sim/config", json={"retry_after_s": 0}).raise_for_status()
    request = body("try again")
    with stack.client(timeout=60) as client:
        completion = client.chat.completions.create(**request)
    assert completion.choices[0].message.content == expected_content(request)


def test_deferred_call_is_answered_from_an_anthropic_batch(stack: Stack) -> None:
    request = body("defer me to a message batch")
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(**request, extra_headers=DEFER)
    completion = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["x-batchgate-job"].startswith("dfr_")
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == expected_content(request)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    [batch] = anthropic_batches(stack)
    assert batch["processing_status"] == "ended"
    assert batch["request_counts"]["succeeded"] == 1
    ledger = stack.ledger()["models"][CLAUDE]
    assert ledger["sync"]["requests"] == 0
    batch_tier = ledger["batch"]
    assert batch_tier["requests"] == 1
    # Anthropic's batch prices from litellm's map: $0.50 / $2.50 per million tokens
    expected = batch_tier["input_tokens"] * 5 / 10**7 + batch_tier["output_tokens"] * 25 / 10**7
    assert float(batch_tier["cost_usd"]) == pytest.approx(expected)
