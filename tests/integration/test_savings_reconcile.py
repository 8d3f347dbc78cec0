"""Savings reconcile exactly with what the simulated upstream billed, over a mixed workload.

Sync, streamed (with and without `include_usage`), shadow, batch, flex, flex that fell back to list (429), rescued
and failed calls go through the official openai client to a running batchgate (API + in-process worker).
batchgate's ledger (`/v1/savings`) must agree, in exact Decimal, with the simulator's ledger: paid + waste per
model and lane = billed per model and tier, and list = every token the answers used at synchronous prices. Waste
(billed lines no job took): a stalled batch cancelled after its rescue, a late batch completing after a rescue, a
caller's cancel after the line ran, a rescued job answered by its batch line before its slow sync call. A Groq
model (simulator flavour groq) is billed at Groq's own batch discount, 25%, which the price map does not carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from proxy.simulator.ledger import PriceBook as SimulatorPrices
from proxy.simulator.ledger import Tier, litellm_price_map
from proxy.worker.process import run_in_app
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, TEAM_KEYS, Stack, running_stack
from tests.support.waiting import wait_until_sync

D = Decimal
POLICY = {
    "rules": [
        {"name": "flex-calls", "match": {"headers": {"x-lane": "flex"}}, "lane": "flex", "deadline": "1h"},
        {"name": "shadow-trial", "match": {"headers": {"x-shadow": "yes"}}, "lane": "batch", "deadline": "1h",
         "shadow": True},
    ]
}  # fmt: skip
# the flex rule matches calls that send no X-Batch-Deadline: such calls are held unless they opt in to a 202
FLEX_ASYNC = {"x-lane": "flex", "Prefer": "respond-async"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How much does waiting save?"}]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_url, background=[run_in_app], policy=POLICY) as running:
        yield running


def headers(key: str = MASTER_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def defer(stack: Stack, model: str, *, key: str = MASTER_KEY, **extra: str) -> str:
    """A deferred call through the openai client; returns the job id (202 Accepted)."""
    raw = stack.client(key).chat.completions.with_raw_response.create(
        model=model,
        messages=MESSAGES,
        max_tokens=50,
        extra_headers=extra,
    )
    assert raw.http_response.status_code == 202, raw.http_response.text
    job_id: str = raw.http_response.json()["id"]
    return job_id


def savings(stack: Stack, expected_requests: int, key: str = MASTER_KEY) -> dict[str, Any]:
    """The savings report once the ledger counts every request (it is written just after each answer)."""

    def counted() -> dict[str, Any] | None:
        report: dict[str, Any] = httpx.get(f"{stack.url}/v1/savings", headers=headers(key), timeout=10).json()
        return report if report["totals"]["requests"] >= expected_requests else None

    return wait_until_sync(counted, timeout=10, interval=0.1, what=f"{expected_requests} requests in the ledger")


def run_workload(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    client = stack.client()
    # sync: plain calls on both models, a team's call, a stream that asks for its usage, shadow-mode calls
    for model in ("gpt-4o-mini", "gpt-5-mini"):
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=40)
    stack.client(TEAM_KEYS["alpha"]).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stream = list(
        client.chat.completions.create(
            model="gpt-5-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert stream[-1].usage is not None
    assert stream[-1].choices == []
    # a stream that did not ask for usage is priced all the same, and its caller sees no usage
    assert '"usage"' not in stream_as_caller(stack, "gpt-4o-mini")
    for model in ("gpt-4o-mini", "gpt-5-mini"):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=MESSAGES,
            extra_headers={"x-shadow": "yes"},
        )
        assert "shadow=true" in raw.headers["x-batchgate-decision"]
    jobs: dict[str, list[dict[str, Any]]] = {}
    # batch lane, both models, two teams
    batch_ids = [defer(stack, model, **{"X-Batch-Deadline": "1h"}) for model in ("gpt-4o-mini", "gpt-5-mini") * 2]
    batch_ids.append(defer(stack, "gpt-5-mini", key=TEAM_KEYS["beta"], **{"X-Batch-Deadline": "2h"}))
    jobs["batch"] = stack.final_jobs(batch_ids)
    # flex lane, then flex capacity gone: the worker falls back to list price
    jobs["flex"] = stack.final_jobs([defer(stack, "gpt-5-mini", **FLEX_ASYNC) for _ in range(2)])
    stack.configure_simulator(flex_429_rate=1.0)
    jobs["flex_fallback"] = stack.final_jobs([defer(stack, "gpt-5-mini", **FLEX_ASYNC)])
    stack.configure_simulator(flex_429_rate=0.0)
    # a batch that stalls: the deadline guard answers its jobs synchronously in time
    stack.configure_simulator(finish_fraction=0.0)
    rescued = [defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "10s"}) for _ in range(2)]
    jobs["rescued"] = stack.final_jobs(rescued)
    stack.configure_simulator(finish_fraction=1.0)
    # batch lines the provider refuses: failed, billed nothing
    stack.configure_simulator(line_400_rate=1.0)
    jobs["failed"] = stack.final_jobs([defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "1h"}) for _ in range(2)])
    stack.configure_simulator(line_400_rate=0.0)
    return jobs


def stream_as_caller(stack: Stack, model: str) -> str:
    """The raw SSE text a caller gets for a stream that does not ask for usage."""
    body = {"model": model, "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, headers=headers(), timeout=30) as raw:
        assert raw.status_code == 200
        return raw.read().decode()


def without_ids(text: str) -> str:
    """An SSE stream with its per-response id and clock masked (they differ between two answers)."""
    return re.sub(r'"created":\d+', '"created":0', re.sub(r'"id":"[^"]*"', '"id":"-"', text))


def listed_models(report: dict[str, Any]) -> set[str]:
    return {row["model"] for row in report["rows"]}


def assert_books_equal_the_bill(
    report: dict[str, Any], ledger: dict[str, Any], billed_as: dict[str, str] | None = None
) -> None:
    """paid + waste per model and lane = billed per model and tier; list = every token the answers used, at
    synchronous prices (billed tokens less the waste's); saved = list - paid - waste. All exact (Decimal).
    `billed_as`: configured model name -> the simulator's ledger name (default: the same name)."""
    billed_as = billed_as or {}
    prices = SimulatorPrices()
    tiers = {"sync": Tier.SYNC, "batch": Tier.BATCH, "flex": Tier.FLEX}
    charged: dict[tuple[str, str], Decimal] = {}
    listed: dict[str, Decimal] = {}
    wasted_tokens: dict[str, tuple[int, int]] = {}
    for row in report["rows"]:
        model = billed_as.get(row["model"], row["model"])
        key = (model, row["lane"])
        charged[key] = charged.get(key, D(0)) + D(row["paid_usd"]) + D(row["waste_usd"])
        listed[model] = listed.get(model, D(0)) + D(row["list_usd"])
        prompt, completion = wasted_tokens.get(model, (0, 0))
        waste = row["waste"]
        wasted_tokens[model] = (prompt + waste["prompt_tokens"], completion + waste["completion_tokens"])
    assert set(listed) == set(ledger["models"])
    for model, per_tier in ledger["models"].items():
        list_price = prices.price(model, Tier.SYNC)
        assert list_price is not None
        used_at_list = D(0)
        for lane, tier in tiers.items():
            billed = per_tier[tier.value]
            assert charged.get((model, lane), D(0)) == D(billed["cost_usd"]), (model, lane, billed)
            used_at_list += list_price.input * billed["input_tokens"] + list_price.output * billed["output_tokens"]
        prompt, completion = wasted_tokens[model]
        used_at_list -= list_price.input * prompt + list_price.output * completion
        assert listed[model] == used_at_list, model
    totals = report["totals"]
    assert D(totals["paid_usd"]) + D(totals["waste_usd"]) == D(ledger["totals"]["cost_usd"])
    assert D(totals["saved_usd"]) == D(totals["list_usd"]) - D(totals["paid_usd"]) - D(totals["waste_usd"])


def test_savings_reconcile_exactly_with_the_upstream_ledger(stack: Stack) -> None:
    jobs = run_workload(stack)
    assert [job["lane"] for job in jobs["batch"]] == ["batch"] * 5
    assert [job["lane"] for job in jobs["flex"]] == ["flex"] * 2
    assert [job["lane"] for job in jobs["flex_fallback"]] == ["sync"]
    assert all(job["status"] == "completed" and job.get("rescued") for job in jobs["rescued"])
    assert [job["status"] for job in jobs["failed"]] == ["failed"] * 2

    sync_requests = 7  # 3 plain, 2 streams, 2 shadow
    expected = sync_requests + 5 + 2 + 1 + 2 + 2
    report = savings(stack, expected)
    totals = report["totals"]
    assert totals["requests"] == expected
    assert totals["unknown_cost_requests"] == 0
    assert totals["outcomes"] == {"completed": expected - 2, "failed": 2}
    assert D(totals["waste_usd"]) == 0
    assert set(listed_models(report)) == {"gpt-4o-mini", "gpt-5-mini"}
    by_lane = {row["lane"]: row for row in report["by_lane"]}
    assert by_lane["batch"]["requests"] == 5 + 2  # the failed jobs were batch lines
    assert by_lane["flex"]["requests"] == 2
    assert by_lane["sync"]["requests"] == sync_requests + 1 + 2
    assert D(by_lane["sync"]["saved_usd"]) == 0

    assert_books_equal_the_bill(report, stack.ledger())
    kept = httpx.get(f"{stack.url}/v1/status", headers=headers(), timeout=10).json()["reconciliation"]
    assert kept["last"]["checked"], kept
    assert kept["last"]["matched"], kept
    assert D(kept["last"]["difference_usd"]) == 0
    assert "last_mismatch" not in kept
    assert D(totals["saved_usd"]) > 0

    shadow = report["shadow"]["totals"]
    assert shadow["requests"] == 2
    assert D(shadow["saved_usd"]) > 0
    assert {row["lane"] for row in report["shadow"]["rows"]} == {"batch"}

    beta = savings(stack, 1, key=TEAM_KEYS["beta"])
    assert [row["team"] for row in beta["by_team"]] == ["beta"]
    assert beta["totals"]["requests"] == 1
    assert beta["by_lane"][0]["lane"] == "batch"


def test_a_stream_without_include_usage_is_priced_and_its_caller_gets_what_the_upstream_sends(
    stack: Stack,
) -> None:
    """batchgate asks the upstream for the usage; the caller, who did not, gets the upstream's own stream without
    it (the same events, byte for byte, as the upstream answers a stream that does not ask)."""
    seen = stream_as_caller(stack, "gpt-4o-mini")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with stack.simulator() as simulator:
        direct = simulator.post("/v1/chat/completions", json=body, headers=headers(PROVIDER_KEY))
    assert direct.status_code == 200
    assert without_ids(seen) == without_ids(direct.text)
    assert '"usage"' not in seen
    events = [orjson.loads(line[6:]) for line in seen.splitlines() if line.startswith("data: {")]
    assert len(events) > 2
    assert all(event["choices"] for event in events)

    report = savings(stack, 1)
    totals = report["totals"]
    assert totals["requests"] == 1
    assert totals["unknown_cost_requests"] == 0
    ledger = stack.ledger()
    billed = ledger["models"]["gpt-4o-mini"]["sync"]
    assert billed["requests"] == 2  # batchgate's call and the direct one
    assert totals["prompt_tokens"] * 2 == billed["input_tokens"]
    assert totals["completion_tokens"] * 2 == billed["output_tokens"]
    assert D(totals["paid_usd"]) * 2 == D(billed["cost_usd"])
    assert D(totals["saved_usd"]) == 0


GROQ = "gpt-oss-20b"
GROQ_UPSTREAM = "groq/openai/gpt-oss-20b"  # Groq's price; the price map has no batch price for it


def test_a_groq_model_reconciles_at_groqs_batch_discount(tmp_path: Path, redis_url: str) -> None:
    entry = litellm_price_map()[GROQ_UPSTREAM]
    assert entry["litellm_provider"] == "groq"
    assert "input_cost_per_token_batches" not in entry
    assert "output_cost_per_token_batches" not in entry
    with running_stack(
        tmp_path, redis_url, background=[run_in_app], simulator={"flavor": "groq"}, models={GROQ: GROQ_UPSTREAM}
    ) as stack:
        client = stack.client()
        client.chat.completions.create(model=GROQ, messages=MESSAGES, max_tokens=40)
        assert '"usage"' not in stream_as_caller(stack, GROQ)
        batch = stack.final_jobs([defer(stack, GROQ, **{"X-Batch-Deadline": "1h"}) for _ in range(3)])
        assert [(job["status"], job["lane"]) for job in batch] == [("completed", "batch")] * 3

        report = savings(stack, 2 + 3)
        assert report["totals"]["requests"] == 5
        assert report["totals"]["unknown_cost_requests"] == 0
        assert_books_equal_the_bill(report, stack.ledger(), {GROQ: GROQ_UPSTREAM})
        by_lane = {row["lane"]: row for row in report["by_lane"]}
        assert by_lane["batch"]["requests"] == 3
        assert D(by_lane["batch"]["list_usd"]) > 0
        assert D(by_lane["batch"]["paid_usd"]) == D(by_lane["batch"]["list_usd"]) * D("0.75")
        assert D(by_lane["batch"]["saved_usd"]) == D(by_lane["batch"]["list_usd"]) * D("0.25")


def in_flight_lines_done(stack: Stack) -> int:
    status = httpx.get(f"{stack.url}/v1/status", headers=headers(), timeout=10).json()
    return sum(batch["done"] or 0 for queue in status["queues"] for batch in queue["batches"])


def wasted(stack: Stack, reason: str, lines: int) -> dict[str, Any]:
    """The savings report once `lines` wasted lines of `reason` are on the books."""

    def counted() -> dict[str, Any] | None:
        report: dict[str, Any] = httpx.get(f"{stack.url}/v1/savings", headers=headers(), timeout=10).json()
        waste = report["totals"]["waste"]
        return report if waste["lines"] >= lines and reason in waste["by_reason"] else None

    return wait_until_sync(counted, timeout=30, interval=0.2, what=f"{lines} wasted lines ({reason})")


def test_billed_lines_no_job_took_are_waste_and_the_books_still_equal_the_bill(stack: Stack) -> None:
    # 1. a stalled batch: the guard rescues both jobs, the batch is cancelled and still bills its finished line
    stack.configure_simulator(finish_fraction=0.5)
    stalled = [defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "10s"}) for _ in range(2)]
    assert all(job["rescued"] and job["lane"] == "sync" for job in stack.final_jobs(stalled))
    wasted(stack, "answered_elsewhere", 1)
    # 2. a late batch: one job is rescued, the other keeps the batch alive; it completes and bills both lines
    stack.configure_simulator(finish_fraction=1.0, turnaround_s=12.0)
    kept = defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "1h"})
    late = defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "10s"})
    kept_job, late_job = stack.final_jobs([kept, late])
    assert kept_job["lane"] == "batch"
    assert late_job["rescued"]
    # 3. the caller cancels jobs whose line already ran: the batch is cancelled and bills that line
    stack.configure_simulator(finish_fraction=0.5, turnaround_s=3.0)
    cancelled = [defer(stack, "gpt-5-mini", **{"X-Batch-Deadline": "1h"}) for _ in range(2)]
    wait_until_sync(lambda: in_flight_lines_done(stack) >= 1 or None, timeout=30, interval=0.2, what="a line ran")
    for job_id in cancelled:
        assert httpx.delete(f"{stack.url}/v1/deferred/{job_id}", headers=headers(), timeout=10).status_code == 200
    lines = 3 if late_job["lane"] == "sync" else 2
    wasted(stack, "cancelled", lines)
    # 4. rescued jobs whose sync calls are slow: the cancelled batch's finished line answers one of them first
    # (batch price); its sync call, already running, is billed and becomes waste
    stack.configure_simulator(finish_fraction=0.5, sync_latency_s=8.0)
    slow = [defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "20s"}) for _ in range(2)]
    answered = stack.final_jobs(slow)
    assert all(job["rescued"] for job in answered)
    assert sorted(job["lane"] for job in answered) == ["batch", "sync"]
    report = wasted(stack, "answered_elsewhere", lines + 1)

    waste = report["totals"]["waste"]
    assert set(waste["by_reason"]) <= {"answered_elsewhere", "cancelled"}
    assert D(report["totals"]["waste_usd"]) > 0
    forfeited = report["totals"]["forfeited"]["by_reason"]
    assert D(forfeited["deadline_at_risk_in_batch"]) > 0  # rescues paid list instead of the batch price
    assert_books_equal_the_bill(report, stack.ledger())
    kept = httpx.get(f"{stack.url}/v1/status", headers=headers(), timeout=10).json()["reconciliation"]
    assert kept["last"]["checked"], kept
    assert kept["last"]["matched"], kept
    assert D(kept["last"]["difference_usd"]) == 0
    assert "last_mismatch" not in kept
