"""Held connections with the official openai client: the ChatCompletion of a deferred call, failures as exceptions,
and a client that gives up and retries re-attaching to its job (one batch line upstream)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.support.stack import MASTER_KEY, Stack, running_stack

FAST_SIMULATOR = {"turnaround_s": 1.2, "validating_s": 0.1, "finalizing_s": 0.1}
DEFER = {"X-Batch-Deadline": "1h"}


def hold_stack(tmp_path: Path, redis_url: str, **delivery: Any) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        redis_url,
        background=[run_in_app],
        simulator=FAST_SIMULATOR,
        delivery={"default": "hold", "hold_heartbeat": 0.25, "max_wait": 30, **delivery},
    ) as stack:
        yield stack


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    yield from hold_stack(tmp_path, redis_url)


def message(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def batch_lines(stack: Stack) -> int:
    with stack.simulator() as client:
        page = client.get("/v1/batches", params={"limit": 100}, headers={"authorization": "Bearer sk-x"}).json()
    return sum(int(batch["request_counts"]["total"]) for batch in page["data"])


def create(stack: Stack, body: dict[str, Any], headers: dict[str, str], *, retries: int = 0) -> Any:
    """One call with the official sync client (closed afterwards)."""
    with stack.client(timeout=60) as client:
        return client.with_options(max_retries=retries).chat.completions.create(**body, extra_headers=headers)


def test_sync_client_gets_a_chat_completion_through_a_held_connection(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "messages": message("hold me, sync")}
    started = time.monotonic()
    with stack.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(**body, extra_headers=DEFER)  # type: ignore[call-overload]
    completion = raw.parse()
    assert time.monotonic() - started > 0.25  # longer than a heartbeat: the 200 was committed, spaces were sent
    assert raw.status_code == 200
    assert raw.headers["x-batchgate-job"].startswith("dfr_")
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == expected_content(body)
    assert raw.http_response.content.startswith(b" ")  # heartbeats, then the JSON
    assert batch_lines(stack) == 1  # it really went through a batch


async def test_async_client_gets_a_chat_completion_through_a_held_connection(stack: Stack) -> None:
    client = stack.async_client(timeout=60)
    bodies = [{"model": "gpt-4o-mini", "messages": message(f"hold me, async {i}")} for i in range(5)]
    completions = await asyncio.gather(
        *(client.chat.completions.create(**body, extra_headers=DEFER) for body in bodies)  # type: ignore[call-overload]
    )
    assert [c.choices[0].message.content for c in completions] == [expected_content(b) for b in bodies]
    await client.close()


def test_a_failed_job_raises_an_openai_exception(stack: Stack) -> None:
    stack.configure_simulator(line_400_rate=1.0)
    body = {"model": "gpt-4o-mini", "messages": message("this line fails")}
    # the failure comes after the 200 was committed: the connection is cut (APIConnectionError), the SDK's own
    # retry finds the failed job and gets its real status
    with pytest.raises(openai.BadRequestError) as caught:
        create(stack, body, DEFER, retries=2)
    assert caught.value.status_code == 400
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert batch_lines(stack) == 1
    # without retries the client still raises (never a bogus ChatCompletion)
    with pytest.raises(openai.APIConnectionError):
        create(stack, {"model": "gpt-4o-mini", "messages": message("this fails too")}, DEFER)


async def give_up_after(stack: Stack, seconds: float, body: dict[str, Any], headers: dict[str, str]) -> None:
    """A client that hangs up mid-hold (after the 200 and some heartbeats): its connection is closed."""
    client = stack.async_client(timeout=60)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.chat.completions.create(**body, extra_headers=headers), seconds)
    await client.close()


async def test_a_client_that_gives_up_and_retries_reattaches_to_its_job(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "messages": message("impatient")}
    headers = {**DEFER, "Idempotency-Key": "impatient-1"}
    await give_up_after(stack, 0.7, body, headers)
    client = stack.async_client(timeout=60)
    completion = await client.chat.completions.create(**body, extra_headers=headers)  # type: ignore[call-overload]
    await client.close()
    assert completion.choices[0].message.content == expected_content(body)
    assert batch_lines(stack) == 1


def test_identical_bodies_attach_when_the_config_allows_it(tmp_path: Path, redis_url: str) -> None:
    for stack in hold_stack(tmp_path, redis_url, dedupe_identical_bodies=60):
        body = {"model": "gpt-4o-mini", "messages": message("same body twice")}
        asyncio.run(give_up_after(stack, 0.7, body, DEFER))
        completion = create(stack, body, DEFER)
        assert completion.choices[0].message.content == expected_content(body)
        assert batch_lines(stack) == 1


def test_max_wait_ends_a_hold_with_an_error_naming_the_job(tmp_path: Path, redis_url: str) -> None:
    for stack in hold_stack(tmp_path, redis_url, max_wait=0.8):
        stack.configure_simulator(turnaround_s=4.0)
        with pytest.raises(openai.APIStatusError) as caught:
            create(stack, {"model": "gpt-4o-mini", "messages": message("too slow")}, DEFER, retries=1)
        assert caught.value.status_code == 504
        job_id = caught.value.response.headers["x-batchgate-job"]
        assert job_id in caught.value.message
        assert batch_lines(stack) == 1
        with httpx.Client(base_url=stack.url) as http:  # the job goes on and can be fetched
            got = http.get(f"/v1/deferred/{job_id}", headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert got.json()["status"] in ("queued", "submitted")
