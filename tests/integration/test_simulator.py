"""The simulated upstream, driven over real HTTP by the official openai client."""

from __future__ import annotations

import math
import re
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
    # a body the endpoint refuses is that line's 400 only when the batch is not failed whole for it
    configure(sim, **FAST_BATCH, line_500_rate=0.3, line_429_rate=0.3, invalid_body_fails_batch=False)
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
    assert ledger(sim)["totals"] == {
        "requests": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
        "cost_usd": "0",
    }  # fmt: skip


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


# strict defaults: what the real providers do (docs/simulator.md, "Strictness knobs")

AUTH = {"Authorization": "Bearer sk-sim"}
ISO_AZURE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00$"


def raw_batch(sim: ServerThread, batch_id: str) -> dict[str, Any]:
    response = httpx.get(f"{sim.url}/v1/batches/{batch_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def test_defaults_are_the_real_providers(sim: ServerThread) -> None:
    config = httpx.get(f"{sim.url}/_sim/config").json()
    assert config["flavor"] == "openai"
    assert config["enqueued_token_limit"] == 2_000_000
    assert (config["insufficient_quota"], config["billing_hard_limit_reached"]) == (False, False)
    assert config["invalid_body_fails_batch"]
    assert config["metadata_requires_store"]
    assert config["claude_sampling_exclusive"]
    assert config["claude_nonempty_text"]
    assert config["anthropic_live_counts"] is False


def test_enqueued_token_limit_fails_the_batch_that_would_exceed_it(sim: ServerThread, client: OpenAI) -> None:
    bodies = [chat_body(f"enqueued question number {i}") for i in range(3)]
    per_line = prompt_tokens(bodies[0]["messages"])
    configure(sim, **FAST_BATCH, finish_fraction=0, enqueued_token_limits={MODEL: 3 * per_line + 1})
    holding = submit(client, [line(f"h{i}", body) for i, body in enumerate(bodies)])  # stalls: holds its tokens
    configure(sim, finish_fraction=1)
    other_model = submit(client, [line("o", chat_body("another model", model="gpt-4o"))])

    refused = wait_for(client, submit(client, [line("x", bodies[0])]).id, "failed", "completed")
    assert refused.status == "failed"
    assert refused.errors is not None
    assert refused.errors.data is not None
    [error] = refused.errors.data
    assert (error.code, error.line, error.param) == ("token_limit_exceeded", None, None)
    assert (error.message or "").startswith(f"Enqueued token limit reached for {MODEL} ")
    assert (error.message or "").endswith("Please try again once some in_progress batches have been completed.")
    assert refused.request_counts is not None
    assert refused.request_counts.total == 0
    assert wait_for(client, other_model.id, "completed", "failed").status == "completed"  # limits are per model

    client.batches.cancel(holding.id)
    wait_for(client, holding.id, "cancelled")
    fits = wait_for(client, submit(client, [line("x", bodies[0])]).id, "failed", "completed")
    assert fits.status == "completed"
    too_big = submit(client, [line(f"b{i}", chat_body(f"enqueued question number {i}")) for i in range(4)])
    assert wait_for(client, too_big.id, "failed", "completed").status == "failed"  # alone over the limit


def test_azure_refuses_the_create_call_over_the_token_limit(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, flavor="azure", enqueued_token_limit=5)
    raw = orjson.dumps(line("a", chat_body("too many tokens for this resource"))) + b"\n"
    uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert refused.value.code == "token_limit_exceeded"
    assert "Enqueued token limit reached" in refused.value.message
    assert client.batches.list().data == []  # nothing was created


def test_insufficient_quota_refuses_every_later_call(sim: ServerThread, client: OpenAI) -> None:
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    configure(sim, insufficient_quota=True)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as no_quota:
            client.chat.completions.create(**chat_body("hello"))
        assert (no_quota.value.code, no_quota.value.type) == ("insufficient_quota", "insufficient_quota")
        assert "check your plan and billing details" in no_quota.value.message
        assert "retry-after" not in no_quota.value.response.headers
    uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    with pytest.raises(openai.RateLimitError) as no_batch:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert no_batch.value.code == "insufficient_quota"
    assert ledger(sim)["totals"]["requests"] == 0

    configure(sim, insufficient_quota=False)  # the account was topped up
    assert client.chat.completions.create(**chat_body("hello")).choices


def test_billing_hard_limit_refuses_batch_creation(sim: ServerThread, client: OpenAI) -> None:
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    configure(sim, billing_hard_limit_reached=True)
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as refused:
            client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert refused.value.code == "billing_hard_limit_reached"
    with pytest.raises(openai.RateLimitError) as no_quota:
        client.chat.completions.create(**chat_body("hello"))
    assert no_quota.value.code == "insufficient_quota"


def test_a_body_the_endpoint_refuses_fails_the_whole_batch_naming_its_line(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, **FAST_BATCH)
    lines = [
        line("fine-1", chat_body("fine")),
        line("bad", {"model": MODEL, "messages": "not a list"}),
        line("fine-2", chat_body("also fine")),
        line("bad-tokens", chat_body("zero", max_tokens=0)),
    ]
    batch = wait_for(client, submit(client, lines).id, "failed", "completed")
    assert batch.status == "failed"
    assert batch.errors is not None
    found = [(error.line, error.code, error.param) for error in batch.errors.data or []]
    assert found == [(2, "invalid_request", "body.messages"), (4, "invalid_request", "body.max_tokens")]
    assert batch.output_file_id is None
    assert ledger(sim)["totals"]["requests"] == 0


def test_metadata_without_store_is_refused_sync_and_per_batch_line(sim: ServerThread, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**chat_body("tagged"), metadata={"team": "search"})
    assert refused.value.param == "metadata"
    assert "only allowed when 'store' is enabled" in refused.value.message
    assert client.chat.completions.create(**chat_body("tagged"), metadata={"team": "search"}, store=True).choices

    configure(sim, **FAST_BATCH)
    lines = [
        line("plain", chat_body("plain")),
        line("tagged", chat_body("tagged", metadata={"team": "search"})),
        line("stored", chat_body("stored", metadata={"team": "search"}, store=True)),
    ]
    batch = wait_for(client, submit(client, lines).id, "completed", "failed")
    assert batch.status == "completed"
    output, errors = jsonl(client, batch.output_file_id), jsonl(client, batch.error_file_id)
    assert sorted(item["custom_id"] for item in output) == ["plain", "stored"]
    [error] = errors
    assert (error["custom_id"], error["response"]["status_code"]) == ("tagged", 400)
    assert "only allowed when 'store' is enabled" in error["response"]["body"]["error"]["message"]

    configure(sim, metadata_requires_store=False)
    assert client.chat.completions.create(**chat_body("lenient"), metadata={"team": "search"}).choices


def test_groq_flavour_accepts_windows_up_to_seven_days(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, flavor="groq")
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    for window in ("24h", "48h", "7d"):
        created = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window=window,  # type: ignore[arg-type]
        )
        assert created.completion_window == window
    for window in ("1h", "8d"):
        with pytest.raises(openai.BadRequestError):
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window=window,  # type: ignore[arg-type]
            )


def test_azure_flavour_shapes_and_never_expires(sim: ServerThread, client: OpenAI) -> None:
    raw = b"\n".join(
        orjson.dumps({**line(f"a{i}", chat_body(f"azure {i}")), "url": "/chat/completions"}) for i in range(3)
    )

    def create_batch() -> str:
        uploaded = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
        assert client.files.retrieve(uploaded.id).expires_at is None  # Azure files without expires_after stay
        return client.batches.create(
            input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h"
        ).id

    # validation that outlasts the test: the first shape is seen however slowly the machine runs
    configure(sim, flavor="azure", turnaround_s=1.0, validating_s=3600, finalizing_s=0.1, expiry_s=0.5)
    first = raw_batch(sim, create_batch())
    assert first["status"] == "Validating"
    assert first["request_counts"] == {"total": None, "completed": None, "failed": None}
    assert first["expires_at"] is None
    assert re.match(ISO_AZURE, first["created_at"])

    configure(sim, flavor="azure", turnaround_s=1.0, validating_s=0.1, finalizing_s=0.1, expiry_s=0.5)
    created = create_batch()

    def ended() -> dict[str, Any] | None:
        payload = raw_batch(sim, created)
        return payload if payload["status"] in {"Completed", "Expired", "Failed"} else None

    done = wait_until_sync(ended, timeout=60, what="the azure batch ending")
    assert done["status"] == "Completed"  # past expiry_s, but Azure does not expire global batches
    assert re.match(ISO_AZURE, done["completed_at"])
    assert done["request_counts"] == {"total": None, "completed": None, "failed": None}
    assert len(jsonl(client, done["output_file_id"])) == 3


def test_azure_caps_batch_files_without_expiry(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, flavor="azure", max_files_without_expiry=2)
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    kept = [client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch") for _ in range(2)]
    with pytest.raises(openai.BadRequestError) as capped:
        client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    assert (capped.value.param, capped.value.code) == ("expires_after", "file_limit_exceeded")
    assert "without an expiry" in capped.value.message
    expiring = client.files.create(
        file=("in.jsonl", raw, "application/jsonl"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert expiring.expires_at == expiring.created_at + 3600
    client.files.delete(kept[0].id)
    assert client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch").id


def test_file_and_output_expiry_are_taken_and_checked(sim: ServerThread, client: OpenAI) -> None:
    raw = orjson.dumps(line("a", chat_body("hi"))) + b"\n"
    default = client.files.create(file=("in.jsonl", raw, "application/jsonl"), purpose="batch")
    assert default.expires_at == default.created_at + 30 * 24 * 3600
    with pytest.raises(openai.BadRequestError) as too_short:
        client.files.create(
            file=("in.jsonl", raw, "application/jsonl"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert too_short.value.param == "expires_after"
    uploaded = client.files.create(
        file=("in.jsonl", raw, "application/jsonl"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert uploaded.expires_at == uploaded.created_at + 7200

    configure(sim, **FAST_BATCH)
    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 86400},
    )
    batch = wait_for(client, created.id, "completed")
    output = client.files.retrieve(batch.output_file_id or "")
    assert output.expires_at == output.created_at + 86400
    with pytest.raises(openai.BadRequestError) as bad_output:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 10**9},
        )
    assert bad_output.value.param == "output_expires_after"
    assert client.files.delete(uploaded.id).deleted  # the input can go once its batch has ended


def test_a_batch_nobody_polls_is_still_billed(sim: ServerThread, client: OpenAI) -> None:
    configure(sim, **FAST_BATCH)
    submit(client, [line(f"late{i}", chat_body(f"late {i}")) for i in range(3)])  # never retrieved again

    def billed() -> dict[str, Any] | None:
        row = ledger(sim)["models"].get(MODEL, {}).get("batch", {})
        return row if row.get("requests") else None

    assert wait_until_sync(billed, timeout=15, what="the unpolled batch being billed")["requests"] == 3


# the Anthropic face's strict defaults

ANTHROPIC = {"x-api-key": "sk-sim", "anthropic-version": "2023-06-01"}


def claude(text: str, model: str = "claude-sonnet-4-5-20250929", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def test_claude_refuses_temperature_with_top_p_on_new_models_and_empty_text(sim: ServerThread) -> None:
    url = f"{sim.url}/v1/messages"
    both = httpx.post(url, json=claude("hi", temperature=0.5, top_p=0.9), headers=ANTHROPIC)
    assert both.status_code == 400
    assert both.json()["error"]["type"] == "invalid_request_error"
    assert "cannot both be specified" in both.json()["error"]["message"]
    for model in ("claude-haiku-4-5", "claude-opus-4-6"):
        assert (
            httpx.post(url, json=claude("hi", model, temperature=0.5, top_p=0.9), headers=ANTHROPIC).status_code == 400
        )
    for model in ("claude-3-5-sonnet-20241022", "claude-sonnet-4-20250514"):  # older models accept both
        assert (
            httpx.post(url, json=claude("hi", model, temperature=0.5, top_p=0.9), headers=ANTHROPIC).status_code == 200
        )
    assert httpx.post(url, json=claude("hi", temperature=0.5), headers=ANTHROPIC).status_code == 200

    empty_block = claude("x")
    empty_block["messages"][0]["content"] = [{"type": "text", "text": ""}]
    refused = httpx.post(url, json=empty_block, headers=ANTHROPIC)
    assert refused.status_code == 400
    assert "text content blocks must be non-empty" in refused.json()["error"]["message"]
    empty_turn = claude("x")
    empty_turn["messages"] += [{"role": "assistant", "content": ""}, {"role": "user", "content": "again"}]
    assert httpx.post(url, json=empty_turn, headers=ANTHROPIC).status_code == 400

    configure(sim, claude_sampling_exclusive=False, claude_nonempty_text=False)
    assert httpx.post(url, json=claude("hi", temperature=0.5, top_p=0.9), headers=ANTHROPIC).status_code == 200
    assert httpx.post(url, json=empty_block, headers=ANTHROPIC).status_code == 200


def test_anthropic_counts_stay_zero_until_the_batch_ends(sim: ServerThread) -> None:
    configure(sim, turnaround_s=2.0, validating_s=0.1, finalizing_s=0.1)
    requests = [{"custom_id": f"r{i}", "params": claude(f"question {i}")} for i in range(4)]
    requests.append({"custom_id": "both", "params": claude("both", temperature=0.5, top_p=0.9)})
    created = httpx.post(f"{sim.url}/v1/messages/batches", json={"requests": requests}, headers=ANTHROPIC).json()
    seen: list[dict[str, int]] = []

    def ended() -> dict[str, Any] | None:
        payload = httpx.get(f"{sim.url}/v1/messages/batches/{created['id']}", headers=ANTHROPIC).json()
        if payload["processing_status"] != "ended":
            seen.append(payload["request_counts"])
            return None
        return payload

    done = wait_until_sync(ended, timeout=15, what="the message batch ending")
    assert seen
    assert all(counts == {**counts, "processing": 5, "succeeded": 0, "errored": 0} for counts in seen)
    assert done["request_counts"]["succeeded"] == 4
    assert done["request_counts"]["errored"] == 1
    results = httpx.get(done["results_url"], headers=ANTHROPIC).text.splitlines()
    errored = [orjson.loads(raw) for raw in results if b'"errored"' in raw.encode()]
    assert [item["custom_id"] for item in errored] == ["both"]

    configure(sim, anthropic_live_counts=True, turnaround_s=3.0)
    live = httpx.post(f"{sim.url}/v1/messages/batches", json={"requests": requests[:4]}, headers=ANTHROPIC).json()

    def moving() -> dict[str, Any] | None:
        counts = httpx.get(f"{sim.url}/v1/messages/batches/{live['id']}", headers=ANTHROPIC).json()["request_counts"]
        return counts if 0 < counts["succeeded"] < 4 else None

    assert wait_until_sync(moving, timeout=15, what="live counts moving")["processing"] > 0


def test_an_account_out_of_credit_is_refused_by_the_anthropic_face(sim: ServerThread) -> None:
    configure(sim, insufficient_quota=True)
    for url, body in (
        (f"{sim.url}/v1/messages", claude("hi")),
        (f"{sim.url}/v1/messages/batches", {"requests": [{"custom_id": "a", "params": claude("hi")}]}),
    ):
        refused = httpx.post(url, json=body, headers=ANTHROPIC)
        assert refused.status_code == 400
        assert "credit balance is too low" in refused.json()["error"]["message"]
