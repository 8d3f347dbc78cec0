"""Structured request logs: one JSON object per line when asked, with secrets masked."""

from __future__ import annotations

import logging

import orjson

from proxy.logs import JsonFormatter, TextFormatter, redact


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("batchgate.access", logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return entry


def test_json_line_carries_request_fields() -> None:
    line = JsonFormatter().format(
        record(
            "POST /v1/chat/completions 200",
            request_id="abc",
            team="research",
            model="gpt-4o-mini",
            decision="sync",
            status=200,
            latency_ms=1.25,
        )
    )
    parsed = orjson.loads(line)
    assert "\n" not in line
    assert parsed["message"] == "POST /v1/chat/completions 200"
    assert parsed["request_id"] == "abc"
    assert parsed["team"] == "research"
    assert parsed["model"] == "gpt-4o-mini"
    assert parsed["decision"] == "sync"
    assert parsed["status"] == 200
    assert parsed["latency_ms"] == 1.25
    assert parsed["level"] == "info"


def test_secrets_are_masked_in_json_and_text_lines() -> None:
    secret = "sk-proj-abcdefghijklmnop"
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record(f"upstream said: Incorrect API key {secret}", header=f"Bearer {secret}"))
        assert secret not in line
        assert "sk-pr***" in line


def test_redact_masks_webhook_secrets_and_bearer_tokens() -> None:
    text = redact("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw and Authorization: Bearer tok_123456789")
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in text
    assert "tok_123456789" not in text
