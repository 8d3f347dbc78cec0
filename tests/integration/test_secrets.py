"""A provider key of an unusual shape, echoed back by the upstream in every error answer (raw, base64, Basic,
URL-encoded), appears nowhere: not in responses, job objects, webhooks, metrics or log lines."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from proxy.logs import TextFormatter
from proxy.providers.redaction import MASK, Redactor, encodings
from proxy.worker.process import run_in_app
from tests.integration.test_webhooks import SECRET, Receiver, receiving
from tests.support.stack import MASTER_KEY, TEAM_KEYS, running_stack
from tests.support.waiting import wait_until_sync

# no `sk-` prefix, characters that JSON, URLs and base64 each treat specially
UNUSUAL_KEY = 'acct.7Q"z\\w/+=&~%20 x'


def leaked_forms() -> set[str]:
    return {
        UNUSUAL_KEY,
        base64.b64encode(UNUSUAL_KEY.encode()).decode(),
        quote(UNUSUAL_KEY, safe=""),
        json.dumps(UNUSUAL_KEY)[1:-1],
        base64.b64encode(f"user:{UNUSUAL_KEY}".encode()).decode()[8:-4],  # the key's part of a Basic credential
    }


def assert_clean(text: str, where: str) -> None:
    for form in leaked_forms():
        assert form not in text, f"the provider key ({form!r}) leaked into {where}"


def test_the_redactor_masks_every_encoding_at_any_base64_alignment() -> None:
    redactor = Redactor([UNUSUAL_KEY])
    for prefix in ("", "u", "us", "use", "user:"):
        basic = base64.b64encode(f"{prefix}{UNUSUAL_KEY}!tail".encode()).decode()
        assert_clean(redactor.text(basic), f"base64 after {prefix!r}")
    whole = [UNUSUAL_KEY, base64.b64encode(UNUSUAL_KEY.encode()).decode(), quote(UNUSUAL_KEY, safe="")]
    for form in [*whole, json.dumps(UNUSUAL_KEY)[1:-1], base64.urlsafe_b64encode(UNUSUAL_KEY.encode()).decode()]:
        assert redactor.text(f"<{form}>") == f"<{MASK}>"
    assert Redactor(["short"]).text("short stays") == "short stays"
    assert all(len(form) >= 6 for form in encodings(UNUSUAL_KEY))


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """The process's log as an operator reads it: the root handler with batchgate's own formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_an_echoed_provider_key_appears_nowhere(tmp_path: Path, redis_url: str, captured_log: io.StringIO) -> None:
    receiver = Receiver(SECRET)
    with (
        receiving(receiver) as hook,
        running_stack(
            tmp_path,
            redis_url,
            background=[run_in_app],
            simulator={"echo_credentials_in_errors": True, "turnaround_s": 1.0},
            provider_key=UNUSUAL_KEY,
            delivery={"webhook": {"secret": SECRET, "allow_hosts": ["127.0.0.1"], "timeout": 2}},
        ) as stack,
        httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=60) as http,
    ):
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        with stack.simulator() as simulator:
            simulator.post("/_sim/fail-next", json={"count": 1, "status": 400}).raise_for_status()
        passed_on = http.post("/v1/chat/completions", json=chat)
        assert passed_on.status_code == 400
        assert "credential received: ***" in passed_on.text  # the provider echoed the key; batchgate masked it
        assert_clean(passed_on.text, "a passed-on provider error")

        stack.configure_simulator(api_key="the-provider-expects-another-key")  # every endpoint: 401 + echo
        refused = http.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 502
        assert_clean(refused.text, "the upstream authentication failure")
        by_webhook = http.post(
            "/v1/chat/completions",
            json={**chat, "messages": [{"role": "user", "content": "webhook"}]},
            headers={"X-Batch-Deadline": "1s", "X-Batch-Callback-Url": hook, "Prefer": "respond-async"},
        )
        batched = http.post(
            "/v1/chat/completions",
            json={**chat, "messages": [{"role": "user", "content": "batch"}]},
            headers={"X-Batch-Deadline": "24h", "Prefer": "respond-async"},
        )
        assert (by_webhook.status_code, batched.status_code) == (202, 202), (by_webhook.text, batched.text)
        wait_until_sync(lambda: bool(receiver.delivered()), timeout=60, what="the failed job's webhook")
        wait_until_sync(
            lambda: "batch submission stopped" in captured_log.getvalue(), timeout=60, what="a refused upload"
        )
        for call in receiver.calls:
            assert_clean(call.body.decode(), "a webhook")
        for job_id in (by_webhook.json()["id"], batched.json()["id"]):
            assert_clean(http.get(f"/v1/deferred/{job_id}").text, "a job object")
        assert_clean(http.get("/v1/deferred").text, "the job list")
        assert_clean(http.get("/metrics").text, "metrics")
        alpha = {"authorization": f"Bearer {TEAM_KEYS['alpha']}"}
        assert_clean(http.get("/v1/savings", headers=alpha).text, "savings")
    log = captured_log.getvalue()
    assert "credential received" in log  # the batch client's refusal was logged, with the echo masked
    assert_clean(log, "the log")
