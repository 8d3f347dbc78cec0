"""Cache and batch discounts together, over real HTTP against the simulator: deferred calls that share a long
prompt prefix go out in one batch, adjacent, with the prefix marked (Anthropic `cache_control` with the 1-hour
TTL; OpenAI `prompt_cache_key`); the simulator bills the cache writes and reads as the provider does, and the books
record what the cache saved, equal to the bill; a shared prefix too short to cache is counted, not marked."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.prompt_cache import prefix_of
from proxy.simulator.app import create_simulator_app
from proxy.simulator.ledger import PriceBook, Tier
from proxy.simulator.options import SimulatorOptions
from proxy.worker.process import run_in_app
from tests.integration.test_anthropic_stack import CLAUDE, FAST_SIMULATOR, claude_deployment
from tests.integration.test_intake import Recorded, Recorder
from tests.support.servers import ServerThread
from tests.support.stack import MASTER_KEY, config_document, serving

GPT = "gpt-4o-mini"
DOCUMENT = " ".join(f"Clause {i}: the supplier delivers the goods described in annex {i}." for i in range(160))
SHORT = "Answer briefly."


@pytest.fixture
def recorded(tmp_path: Path, redis_url: str) -> Iterator[Recorded]:
    recorder = Recorder(create_simulator_app(SimulatorOptions(**FAST_SIMULATOR)))
    with ServerThread(recorder) as upstream:
        # one flush per queue after max_wait: every call below is accepted well before it
        document = config_document(upstream.url, batching={"max_wait": "4s", "turnaround_estimate": "5s"})
        document["model_list"].append(claude_deployment(upstream.url))
        with serving(document, tmp_path, redis_url, upstream.url, [run_in_app]) as stack:
            yield Recorded(stack, recorder)


def body(model: str, system: str, question: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 30,
    }


def defer(http: httpx.Client, request: dict[str, Any]) -> str:
    response = http.post("/v1/chat/completions", json=request, headers={"X-Batch-Deadline": "1h"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_shared_prefixes_are_marked_in_one_batch_and_the_books_equal_the_cache_bill(recorded: Recorded) -> None:
    stack = recorded.stack
    calls = [body(CLAUDE, DOCUMENT, f"What does clause {i} say?") for i in range(3)]
    calls += [body(CLAUDE, SHORT, f"Name a colour, {i}.") for i in range(2)]
    calls.insert(1, calls.pop())  # arrival order interleaves the prefixes
    openai_calls = [body(GPT, DOCUMENT, f"Summarise clause {i}.") for i in range(2)]
    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30) as http:
        jobs = [defer(http, call) for call in calls + openai_calls]
    finished = stack.final_jobs(jobs, timeout=60)
    assert all((job["status"], job["lane"]) == ("completed", "batch") for job in finished), finished

    [sent] = recorded.upstream.bodies("/v1/messages/batches")  # one batch for all five Claude calls
    lines = orjson.loads(sent)["requests"]
    assert len(lines) == len(calls)
    marked = [line["params"]["system"][-1].get("cache_control") for line in lines]
    assert marked == [{"type": "ephemeral", "ttl": "1h"}] * 3 + [None] * 2  # shared long prefix first, adjacent
    assert all(DOCUMENT in line["params"]["system"][-1]["text"] for line in lines[:3])

    [upload] = [raw for raw in recorded.upstream.bodies("/v1/files") if b"Summarise clause" in raw]
    digest = prefix_of(openai_calls[0])
    assert digest is not None
    assert upload.count(f'"prompt_cache_key":"{digest.digest}"'.encode()) == 2

    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30) as http:
        report = http.get("/v1/savings", params={"since": "1h"}).json()
        metrics = http.get("/metrics").text
    books = {row["model"]: row for row in report["by_model"]}
    bill = stack.ledger()["models"]
    for model, writes in ((CLAUDE, 1), (GPT, 0)):
        billed = bill[model]["batch"]
        assert billed["cache_write_tokens"] > 0 if writes else billed["cache_write_tokens"] == 0
        assert billed["cache_read_tokens"] > 0
        price = PriceBook().price(model, Tier.BATCH)
        assert price is not None
        uncached = price.input * billed["input_tokens"] + price.output * billed["output_tokens"]
        cache = books[model]["prompt_cache"]
        assert cache["read_tokens"] == billed["cache_read_tokens"]
        assert cache["write_tokens"] == billed["cache_write_tokens"]
        assert Decimal(books[model]["paid_usd"]) == Decimal(billed["cost_usd"])  # the books equal the bill
        assert Decimal(cache["saved_usd"]) == uncached - Decimal(billed["cost_usd"])
        assert Decimal(cache["saved_usd"]) > 0
    too_short = f'batchgate_prompt_cache_prefix_too_short_total{{model="{CLAUDE}"}} 2.0'
    assert too_short in metrics
