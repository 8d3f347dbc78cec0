"""The simulated upstream, driven over real HTTP by the official openai client."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from openai.types import Batch

from proxy.simulator.app import create_simulator_app
from proxy.simulator.engine import expected_content
from proxy.simulator.options import SimulatorOptions
from tests.support.servers import ServerThread
from tests.support.waiting import wait_until_sync

MODEL = "gpt-4o-mini"
FAST_BATCH = {"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1}


@pytest.fixture
def sim() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(SimulatorOptions(api_key="sk-sim", seed=7))) as server:
        yield server


@pytest.fixture
def client(sim: ServerThread) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{sim.url}/v1", api_key="sk-sim", max_retries=0) as openai_client:
        yield openai_client


def configure(sim: ServerThread, **knobs: Any) -> dict[str, Any]:
    response = httpx.patch(f"{sim.url}/_sim/config", json=knobs)
    assert response.status_code == 200, response.text
    config: dict[str, Any] = response.json()
    return config


def ledger(sim: ServerThread) -> dict[str, Any]:
    response = httpx.get(f"{sim.url}/_sim/ledger", timeout=60)
    assert response.status_code == 200
    report: dict[str, Any] = response.json()
    return report


def tokens(text: str) -> int:
    return math.ceil(len(text.encode()) / 4)


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    return 3 + sum(3 + tokens(m["role"]) + tokens(m["content"]) for m in messages)


def chat_body(text: str, *, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def submit(client: OpenAI, lines: list[dict[str, Any]] | bytes, **metadata: str) -> Batch:
    raw = lines if isinstance(lines, bytes) else b"\n".join(orjson.dumps(item) for item in lines) + b"\n"
    uploaded = client.files.create(file=("input.jsonl", raw, "application/jsonl"), purpose="batch")
    assert uploaded.purpose == "batch"
    assert uploaded.bytes == len(raw)
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=metadata or None,
    )


def wait_for(client: OpenAI, batch_id: str, *statuses: str, timeout: float = 15.0) -> Batch:
    def reached() -> Batch | None:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None

    return wait_until_sync(reached, timeout=timeout, what=f"batch {batch_id} reaching {statuses}")


def jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(raw) for raw in client.files.content(file_id).content.splitlines()]


# synchronous chat completions


def test_answers_are_deterministic_distinct_and_honestly_counted(client: OpenAI) -> None:
    first, second = chat_body("What is the capital of France?"), chat_body("And of Spain?")
    answers = [client.chat.completions.create(**body) for body in (first, second, first)]

    contents = [answer.choices[0].message.content for answer in answers]
    assert contents == [expected_content(first), expected_content(second), expected_content(first)]
    assert contents[0] != contents[1]
    assert "What is the capital of France?" in (contents[0] or "")
    for answer, body in zip(answers, (first, second, first), strict=True):
        assert answer.object == "chat.completion"
        assert answer.model == MODEL
        assert answer.id.startswith("chatcmpl-")
        assert answer.system_fingerprint
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None
        assert answer.usage.prompt_tokens == prompt_tokens(body["messages"])
        assert answer.usage.completion_tokens == tokens(answer.choices[0].message.content or "")
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    cut = client.chat.completions.create(**chat_body("What is the capital of France?"), max_completion_tokens=2)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 2
    assert (contents[0] or "").startswith(cut.choices[0].message.content or "-")


def test_streaming_sends_openai_chunks_then_usage_then_done(client: OpenAI, sim: ServerThread) -> None:
    body = chat_body("Tell me a story about a lighthouse keeper and a very patient cat.")
    chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == expected_content(body)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(body["messages"])
    assert chunks[-1].usage.completion_tokens == tokens(text)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)

    raw = httpx.post(
        f"{sim.url}/v1/chat/completions",
        json={**body, "stream": True},
        headers={"Authorization": "Bearer sk-sim"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [event for event in raw.text.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in raw.text


def test_wrong_key_is_401_and_bad_body_is_400(sim: ServerThread, client: OpenAI) -> None:
    stranger = OpenAI(base_url=f"{sim.url}/v1", api_key="sk-wrong", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError) as denied:
        stranger.chat.completions.create(**chat_body("hello"))
    assert denied.value.code == "invalid_api_key"
    assert httpx.post(f"{sim.url}/v1/chat/completions", json=chat_body("hi")).status_code == 401

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.param == "messages"
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad_tokens:
        client.chat.completions.create(**chat_body("hi"), max_tokens=0)
    assert bad_tokens.value.param == "max_tokens"
    not_json = httpx.post(
        f"{sim.url}/v1/chat/completions", content=b"{nope", headers={"Authorization": "Bearer sk-sim"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"


def test_flex_is_slower_labelled_and_can_be_unavailable(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, flex_latency_s=0.3)
    started = time.monotonic()
    answer = client.chat.completions.create(**chat_body("flex please"), service_tier="flex")
    assert time.monotonic() - started >= 0.3
    assert answer.service_tier == "flex"
    assert client.chat.completions.create(**chat_body("default please")).service_tier == "default"

    configure(sim, flex_latency_s=0.0, flex_429_rate=1.0)
    with pytest.raises(openai.RateLimitError) as unavailable:
        client.chat.completions.create(**chat_body("flex again"), service_tier="flex")
    assert unavailable.value.code == "resource_unavailable"
    assert client.chat.completions.create(**chat_body("sync still fine")).choices


def test_fail_next_and_injected_rates(sim: ServerThread, client: OpenAI) -> None:
    assert httpx.post(f"{sim.url}/_sim/fail-next", json={"count": 2, "status": 429}).json() == {"pending": 2}
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(**chat_body("hello"))
        assert limited.value.response.headers["retry-after"] == "1"
        assert limited.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(**chat_body("hello")).choices

    httpx.post(f"{sim.url}/_sim/fail-next", json={"count": 1, "status": 500})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**chat_body("hello"))

    configure(sim, sync_500_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**chat_body("hello"))
    configure(sim, sync_500_rate=0.0, sync_429_rate=1.0, retry_after_s=7)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**chat_body("hello"))
    assert limited.value.response.headers["retry-after"] == "7"
    assert ledger(sim)["totals"]["requests"] == 1  # only the call that succeeded was billed


# batches


def test_batch_completes_with_progress_and_output_out_of_input_order(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, turnaround_s=2.0, validating_s=0.2, finalizing_s=0.2)
    bodies = {f"req-{i}": chat_body(f"question number {i}") for i in range(8)}
    created = submit(client, [line(cid, body) for cid, body in bodies.items()], job="abc", team="search")
    assert created.status == "validating"
    assert created.metadata == {"job": "abc", "team": "search"}
    assert created.request_counts is not None
    assert created.request_counts.total == 8

    seen_counts: set[int] = set()
    seen_statuses: list[str] = []
    deadline = time.monotonic() + 10
    batch = created
    while batch.status != "completed" and time.monotonic() < deadline:
        batch = client.batches.retrieve(created.id)
        if not seen_statuses or seen_statuses[-1] != batch.status:
            seen_statuses.append(batch.status)
        assert batch.request_counts is not None
        seen_counts.add(batch.request_counts.completed)
        time.sleep(0.05)
    assert seen_statuses[-1] == "completed"
    assert [s for s in ("validating", "in_progress", "finalizing", "completed") if s in seen_statuses] == [
        s for s in seen_statuses if s in ("validating", "in_progress", "finalizing", "completed")
    ]
    assert "in_progress" in seen_statuses
    assert len(seen_counts - {0, 8}) >= 2  # progress grew over the turnaround
    for stamp in (batch.in_progress_at, batch.finalizing_at, batch.completed_at):
        assert stamp is not None
        assert batch.created_at <= stamp <= batch.created_at + 5
    assert batch.error_file_id is None
    assert batch.failed_at is None
    assert batch.expired_at is None
    assert batch.cancelled_at is None

    output = jsonl(client, batch.output_file_id)
    assert sorted(item["custom_id"] for item in output) == sorted(bodies)
    assert [item["custom_id"] for item in output] != list(bodies)
    for item in output:
        assert item["id"].startswith("batch_req_")
        assert item["error"] is None
        assert item["response"]["status_code"] == 200
        completion = item["response"]["body"]
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"]["content"] == expected_content(bodies[item["custom_id"]])
    usage = batch.usage
    assert usage is not None
    assert usage.input_tokens == sum(item["response"]["body"]["usage"]["prompt_tokens"] for item in output)
    assert usage.output_tokens == sum(item["response"]["body"]["usage"]["completion_tokens"] for item in output)
    output_file = client.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output"


def test_malformed_input_fails_validation_and_bills_nothing(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, **FAST_BATCH)
    good = line("ok", chat_body("fine"))
    raw = b"\n".join(
        [
            orjson.dumps(good),
            b"this is not json",
            orjson.dumps(line("ok", chat_body("duplicate id"))),
            orjson.dumps({**line("x1", chat_body("hi")), "url": "/v1/embeddings"}),
            orjson.dumps(line("x2", {"messages": [{"role": "user", "content": "no model"}]})),
            orjson.dumps(line("x3", chat_body("streamed", stream=True))),
            orjson.dumps({"method": "POST", "url": "/v1/chat/completions", "body": chat_body("no id")}),
        ]
    )
    batch = wait_for(client, submit(client, raw).id, "failed", "completed")
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.output_file_id is None
    assert batch.error_file_id is None
    assert batch.errors is not None
    assert batch.errors.object == "list"
    found = {(error.line, error.code) for error in batch.errors.data or []}
    assert found == {
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "invalid_url"),
        (5, "missing_required_parameter"),
        (6, "invalid_request"),
        (7, "missing_required_parameter"),
    }
    assert ledger(sim)["totals"]["requests"] == 0


def test_expiry_keeps_finished_lines_and_expires_the_rest(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, turnaround_s=3.0, validating_s=0.1, finalizing_s=0.1, expiry_s=1.5)
    bodies = {f"e-{i}": chat_body(f"expiring {i}") for i in range(10)}
    batch = wait_for(client, submit(client, [line(c, b) for c, b in bodies.items()]).id, "expired")
    assert batch.expired_at is not None
    assert batch.expires_at is not None
    assert batch.completed_at is None

    output, errors = jsonl(client, batch.output_file_id), jsonl(client, batch.error_file_id)
    assert 0 < len(output) < 10
    assert {item["custom_id"] for item in output} | {item["custom_id"] for item in errors} == set(bodies)
    assert len(output) + len(errors) == 10
    assert all(item["response"] is None and item["error"]["code"] == "batch_expired" for item in errors)
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(output)
    assert ledger(sim)["models"][MODEL]["batch"]["requests"] == len(output)


def test_cancel_keeps_finished_lines_and_snapshots_knobs(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, **FAST_BATCH, finish_fraction=0.5)  # half the lines finish, then the batch stalls
    stalled = submit(client, [line(f"s-{i}", chat_body(f"stall {i}")) for i in range(6)])
    configure(sim, finish_fraction=1.0)  # the next batch runs normally
    normal = submit(client, [line(f"n-{i}", chat_body(f"normal {i}")) for i in range(3)])

    assert wait_for(client, normal.id, "completed").request_counts.completed == 3  # type: ignore[union-attr]
    time.sleep(0.5)
    still = client.batches.retrieve(stalled.id)
    assert still.status == "in_progress"
    assert still.request_counts is not None
    assert still.request_counts.completed == 3

    cancelling = client.batches.cancel(stalled.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    cancelled = wait_for(client, stalled.id, "cancelled")
    assert cancelled.cancelled_at is not None
    output, errors = jsonl(client, cancelled.output_file_id), jsonl(client, cancelled.error_file_id)
    assert len(output) == 3
    assert len(errors) == 3
    assert all(item["error"]["code"] == "batch_cancelled" for item in errors)
    assert ledger(sim)["models"][MODEL]["batch"]["requests"] == 3 + 3

    with pytest.raises(openai.ConflictError):
        client.batches.cancel(stalled.id)


def test_line_errors_carry_status_and_error_body(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, **FAST_BATCH, line_500_rate=0.3, line_429_rate=0.3)
    bodies = {f"l-{i}": chat_body(f"line {i}") for i in range(20)}
    lines = [line(c, b) for c, b in bodies.items()]
    lines.append(line("bad-body", {"model": MODEL, "messages": "not a list"}))
    batch = wait_for(client, submit(client, lines).id, "completed")

    output, errors = jsonl(client, batch.output_file_id), jsonl(client, batch.error_file_id)
    statuses = [item["response"]["status_code"] for item in errors]
    assert set(statuses) == {500, 429, 400}
    assert all(item["error"] is None and "error" in item["response"]["body"] for item in errors)
    assert [item["custom_id"] for item in errors if item["response"]["status_code"] == 400] == ["bad-body"]
    assert all(item["response"]["status_code"] == 200 for item in output)
    assert len(output) + len(errors) == 21
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(output), len(errors))
    assert ledger(sim)["models"][MODEL]["batch"]["requests"] == len(output)


def test_list_is_newest_first_with_cursor(client: OpenAI, sim: ServerThread) -> None:
    ids = [submit(client, [line("only", chat_body(f"batch {i}"))], n=str(i)).id for i in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]]
    assert page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the client follows the cursor
    raw = httpx.get(f"{sim.url}/v1/batches?limit=2", headers={"Authorization": "Bearer sk-sim"}).json()
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[2], ids[1], True)


# ledger


def test_ledger_reconciles_exactly_with_what_was_sent(sim: ServerThread, client: OpenAI) -> None:
    import litellm

    configure(sim, **FAST_BATCH, flex_latency_s=0.0)
    sent: dict[str, list[int]] = {"sync": [0, 0, 0], "flex": [0, 0, 0], "batch": [0, 0, 0]}

    def add(tier: str, usage: Any) -> None:
        sent[tier][0] += 1
        sent[tier][1] += usage["prompt_tokens"]
        sent[tier][2] += usage["completion_tokens"]

    for i in range(3):
        add("sync", client.chat.completions.create(**chat_body(f"sync {i}")).model_dump()["usage"])
    for i in range(2):
        answer = client.chat.completions.create(**chat_body(f"flex {i}"), service_tier="flex")
        add("flex", answer.model_dump()["usage"])
    httpx.post(f"{sim.url}/_sim/fail-next", json={"count": 1, "status": 500})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**chat_body("never billed"))
    batch = wait_for(client, submit(client, [line(f"b{i}", chat_body(f"batch {i}")) for i in range(4)]).id, "completed")
    for item in jsonl(client, batch.output_file_id):
        add("batch", item["response"]["body"]["usage"])
    client.chat.completions.create(**chat_body("who prices me?", model="sim-unpriced-model"))

    report = ledger(sim)
    prices = litellm.model_cost[MODEL]
    rates = {
        "sync": (prices["input_cost_per_token"], prices["output_cost_per_token"]),
        "flex": (prices["input_cost_per_token_batches"], prices["output_cost_per_token_batches"]),
        "batch": (prices["input_cost_per_token_batches"], prices["output_cost_per_token_batches"]),
    }
    total = Decimal(0)
    for tier, (requests, input_tokens, output_tokens) in sent.items():
        row = report["models"][MODEL][tier]
        assert (row["requests"], row["input_tokens"], row["output_tokens"]) == (requests, input_tokens, output_tokens)
        cost = Decimal(repr(rates[tier][0])) * input_tokens + Decimal(repr(rates[tier][1])) * output_tokens
        assert Decimal(row["cost_usd"]) == cost
        total += cost
    assert Decimal(report["totals"]["cost_usd"]) == total
    assert report["totals"]["requests"] == 3 + 2 + 4 + 1
    assert report["models"]["sim-unpriced-model"]["sync"]["cost_usd"] is None
    assert report["models"]["sim-unpriced-model"]["sync"]["requests"] == 1
    assert report["unpriced_models"] == ["sim-unpriced-model"]

    assert httpx.post(f"{sim.url}/_sim/reset").status_code == 200
    assert ledger(sim)["totals"] == {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": "0"}


def test_config_rejects_unknown_or_invalid_knobs(sim: ServerThread) -> None:
    assert httpx.patch(f"{sim.url}/_sim/config", json={"no_such_knob": 1}).status_code == 400
    assert httpx.patch(f"{sim.url}/_sim/config", json={"line_500_rate": 2}).status_code == 400
    assert configure(sim, turnaround_s=1.5)["turnaround_s"] == 1.5
    assert httpx.get(f"{sim.url}/_sim/config").json()["turnaround_s"] == 1.5


def test_files_round_trip_and_reject_bad_uploads(client: OpenAI, sim: ServerThread) -> None:
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    assert uploaded.id.startswith("file-")
    assert (uploaded.filename, uploaded.status) == ("in.jsonl", "processed")
    assert client.files.retrieve(uploaded.id).bytes == len(raw)
    assert client.files.content(uploaded.id).content == raw
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)

    auth = {"Authorization": "Bearer sk-sim"}
    no_purpose = httpx.post(f"{sim.url}/v1/files", files={"file": ("x.jsonl", raw)}, headers=auth)
    assert no_purpose.status_code == 400
    assert no_purpose.json()["error"]["param"] == "purpose"
    configure(sim, max_file_bytes=10)
    too_big = httpx.post(f"{sim.url}/v1/files", data={"purpose": "batch"}, files={"file": ("x", raw)}, headers=auth)
    assert too_big.status_code == 413


def test_a_completion_window_other_than_24h_is_refused_as_openai_does(client: OpenAI) -> None:
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    for window in ("1h", "48h", "24 h"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window=window,  # type: ignore[arg-type]
            )
        assert (refused.value.param, refused.value.code) == ("completion_window", "invalid_value")
    accepted = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert accepted.completion_window == "24h"
