"""A call a policy rule defers although its caller asked for nothing (no X-Batch-Deadline, no Prefer): with the
default config it is held and answered with an ordinary ChatCompletion; a 202 goes only to callers that opt in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.support.stack import Stack, running_stack

FAST_SIMULATOR = {"turnaround_s": 1.2, "validating_s": 0.1, "finalizing_s": 0.1}
# every gpt-4o-mini call is deferred by the rule; the rule names no delivery, the config's `delivery` is untouched
POLICY = {"rules": [{"name": "defer-mini", "match": {"models": ["gpt-4o-mini"]}, "lane": "batch", "deadline": "1h"}]}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        redis_url,
        background=[run_in_app],
        simulator=FAST_SIMULATOR,
        policy=POLICY,
        delivery={"hold_heartbeat": 0.25, "max_wait": 30},
    ) as running:
        yield running


def batch_lines(stack: Stack) -> int:
    with stack.simulator() as client:
        page = client.get("/v1/batches", params={"limit": 100}, headers={"authorization": "Bearer sk-x"}).json()
    return sum(int(batch["request_counts"]["total"]) for batch in page["data"])


def test_an_unmodified_client_gets_a_chat_completion(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "deferred without asking"}]}
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]
    completion = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["x-batchgate-decision"].startswith("lane=batch; rule=defer-mini")
    assert raw.headers["x-batchgate-job"].startswith("dfr_")
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices is not None
    assert completion.choices[0].message.content == expected_content(body)
    assert batch_lines(stack) == 1  # answered from a batch, on the held connection


def test_prefer_respond_async_gets_the_202_job(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "deferred, and I will poll"}]}
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
            **body, extra_headers={"Prefer": "respond-async"}
        )
    assert raw.status_code == 202
    assert raw.headers["preference-applied"] == "respond-async"
    job = raw.http_response.json()
    assert job["object"] == "chat.completion.deferred"
    assert job["status"] == "queued"
    assert raw.headers["location"] == f"/v1/deferred/{job['id']}"


def test_the_deadline_header_keeps_async_delivery(stack: Stack) -> None:
    """A caller that sends X-Batch-Deadline opted in: `delivery.default` (async unless configured) applies."""
    body = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "I asked for a deadline"}]}
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {stack.client().api_key}", "X-Batch-Deadline": "1h"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    assert response.json()["object"] == "chat.completion.deferred"


def test_the_config_can_answer_unrequested_deferrals_202(tmp_path: Path, redis_url: str) -> None:
    with running_stack(
        tmp_path, redis_url, background=[run_in_app], simulator=FAST_SIMULATOR, policy=POLICY,
        delivery={"unrequested": "async"},
    ) as stack:  # fmt: skip
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "the operator chose 202"}]}
        with stack.client(timeout=60) as client:
            raw = client.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]
        assert raw.status_code == 202
        assert raw.http_response.json()["status"] == "queued"
