"""Signed webhooks over real HTTP: a receiver verifying with `standardwebhooks`, retries with one webhook-id,
dead letters listed and replayed per owner, and callbacks refused by the SSRF guard at the door."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.support.openai_schema import assert_valid
from tests.support.servers import ServerThread
from tests.support.stack import MASTER_KEY, TEAM_KEYS, Stack, running_stack
from tests.support.waiting import wait_until_sync

SECRET = "whsec_" + base64.b64encode(b"batchgate-test-webhook-secret-32b").decode()
ALPHA_SECRET = "whsec_" + base64.b64encode(b"alpha-team-own-webhook-secret-32").decode()
DEFER = {"X-Batch-Deadline": "1h"}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    verified: Any  # the payload the standardwebhooks library returned, or None when verification failed


@dataclass
class Receiver:
    """A tiny ASGI webhook receiver: verifies every call, fails the first `failures` calls (or all while `broken`),
    and can hold the first call open until `release` is set (to kill a worker mid-delivery)."""

    secret: str
    failures: int = 0
    broken: bool = False
    hang_first: bool = False
    calls: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                done = message["type"] == "lifespan.shutdown"
                await send({"type": message["type"] + ".complete"})
                if done:
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        first = not self.calls and not self.arrived.is_set()
        self.arrived.set()
        if first and self.hang_first:
            await asyncio.to_thread(self.release.wait, 60)
            return  # the worker that sent it is dead by now; nobody reads an answer
        try:
            verified = Webhook(self.secret).verify(body, headers)
        except Exception:
            verified = None
        failing = self.broken or sum(1 for call in self.calls if call.status >= 500) < self.failures
        status = 500 if failing or verified is None else 204
        self.calls.append(Received(headers, body, status, verified))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def delivered(self) -> list[Received]:
        return [call for call in self.calls if call.status < 300]


@contextlib.contextmanager
def receiving(receiver: Receiver) -> Iterator[str]:
    with ServerThread(receiver) as server:
        yield server.url + "/hooks/batchgate"


def webhook_stack(tmp_path: Path, redis_url: str, *, retry_period: float = 30) -> Any:
    return running_stack(
        tmp_path,
        redis_url,
        background=[run_in_app],
        simulator={"turnaround_s": 1.0, "validating_s": 0.1, "finalizing_s": 0.1},
        auth={
            "master_key": MASTER_KEY,
            "keys": [
                {"name": "alpha-key", "key": TEAM_KEYS["alpha"], "team": "alpha", "webhook_secret": ALPHA_SECRET},
                {"name": "beta-key", "key": TEAM_KEYS["beta"], "team": "beta"},
            ],
        },
        delivery={"webhook": {"secret": SECRET, "retry_period": retry_period, "timeout": 2,
                              "allow_hosts": ["127.0.0.1"]}},
    )  # fmt: skip


def post(stack: Stack, key: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    with stack.client(key) as client:
        raw = client.chat.completions.with_raw_response.create(**body, extra_headers={**DEFER, **headers})
        return raw.http_response


def api(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_a_receiver_failing_three_times_gets_one_logical_delivery(tmp_path: Path, redis_url: str) -> None:
    receiver = Receiver(ALPHA_SECRET, failures=3)
    with receiving(receiver) as url, webhook_stack(tmp_path, redis_url) as stack:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "call me back"}]}
        accepted = post(stack, TEAM_KEYS["alpha"], body, {"X-Batch-Callback-Url": url})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        wait_until_sync(lambda: bool(receiver.delivered()), timeout=20)
        assert [call.status for call in receiver.calls] == [500, 500, 500, 204]
        assert {call.headers["webhook-id"] for call in receiver.calls} == {f"msg_{job_id}"}
        assert all(call.verified is not None for call in receiver.calls)  # signed with alpha's own secret
        payload = receiver.delivered()[0].verified
        assert payload["id"] == job_id
        assert payload["status"] == "completed"
        assert payload["response"]["choices"][0]["message"]["content"] == expected_content(body)
        assert_valid("CreateChatCompletionResponse", payload["response"])
        time.sleep(0.5)
        assert len(receiver.delivered()) == 1


def test_dead_letters_are_listed_by_owner_and_replayed(tmp_path: Path, redis_url: str) -> None:
    receiver = Receiver(SECRET, broken=True)
    with receiving(receiver) as url, webhook_stack(tmp_path, redis_url, retry_period=1.5) as stack:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "nobody home"}]}
        job_id = post(stack, TEAM_KEYS["beta"], body, {"X-Batch-Callback-Url": url}).json()["id"]
        with api(stack, TEAM_KEYS["beta"]) as beta, api(stack, TEAM_KEYS["alpha"]) as alpha, \
                api(stack, MASTER_KEY) as master:  # fmt: skip
            wait_until_sync(lambda: bool(beta.get("/v1/webhooks/dead-letters").json()["data"]), timeout=20)
            [dead] = beta.get("/v1/webhooks/dead-letters").json()["data"]
            assert (dead["id"], dead["state"], dead["webhook_id"]) == (job_id, "dead", f"msg_{job_id}")
            assert dead["attempts"] == len(receiver.calls) >= 2
            assert alpha.get("/v1/webhooks/dead-letters").json()["data"] == []
            assert [d["id"] for d in master.get("/v1/webhooks/dead-letters").json()["data"]] == [job_id]
            assert alpha.post(f"/v1/webhooks/dead-letters/{job_id}/replay").status_code == 404

            receiver.broken = False
            replayed = beta.post(f"/v1/webhooks/dead-letters/{job_id}/replay")
            assert replayed.status_code == 202
            assert replayed.json()["state"] == "pending"
            wait_until_sync(lambda: bool(receiver.delivered()), timeout=20)
            assert receiver.delivered()[0].headers["webhook-id"] == f"msg_{job_id}"
            assert beta.get("/v1/webhooks/dead-letters").json()["data"] == []
            assert beta.post(f"/v1/webhooks/dead-letters/{job_id}/replay").status_code == 409


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", "callback_url_refused"),
        ("http://10.0.0.7/hook", "callback_url_refused"),
        ("http://[::ffff:127.0.0.2]/hook", "callback_url_refused"),
        ("http://localhost:8080/hook", "callback_url_refused"),
        ("http://metadata.google.internal/", "callback_url_refused"),
        ("https://user:secret@example.com/hook", "callback_url_refused"),
        ("file:///etc/passwd", "callback_url_refused"),
    ],
)
def test_unsafe_callbacks_are_refused_at_the_door(tmp_path: Path, redis_url: str, url: str, code: str) -> None:
    with running_stack(tmp_path, redis_url, delivery={"webhook": {"secret": SECRET}}) as stack:
        with stack.client() as client, pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                extra_headers={**DEFER, "X-Batch-Callback-Url": url},
            )  # fmt: skip
        error = orjson.loads(caught.value.response.content)["error"]
        assert (error["param"], error["code"]) == ("X-Batch-Callback-Url", code)


def test_a_webhook_without_a_signing_secret_is_refused(tmp_path: Path, redis_url: str) -> None:
    with running_stack(tmp_path, redis_url) as stack, stack.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                extra_headers={**DEFER, "X-Batch-Callback-Url": "http://127.0.0.1:9/hook"},
            )  # fmt: skip
        assert orjson.loads(caught.value.response.content)["error"]["code"] == "webhook_secret_missing"
