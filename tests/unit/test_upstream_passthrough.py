"""What of an upstream answer reaches the caller: the passed headers, and the message of a litellm failure."""

from __future__ import annotations

import pytest

from proxy.providers.litellm_completion import public_message
from proxy.providers.passed_headers import from_litellm, passed_headers

LITELLM_TRACEBACK = (
    "litellm.APIConnectionError: 'content'\nTraceback (most recent call last):\n  File \"/venv/lib/python3.11/"
    'site-packages/litellm/main.py", line 687, in acompletion\n\nThis looks like a bug in LiteLLM rather than in '
    "your request. File it with one click: https://github.com/BerriAI/litellm/issues/new?template=bug_report.yml"
)


def test_passed_headers_keep_request_id_rate_limits_and_retry_hints_only() -> None:
    upstream = [
        ("X-Request-Id", "req_1"),
        ("x-ratelimit-remaining-tokens", "99"),
        ("Retry-After", "2"),
        ("retry-after-ms", "2000"),
        ("openai-processing-ms", "12"),
        ("content-type", "application/json"),
        ("set-cookie", "session=secret"),
        ("openai-organization", "org-123"),
    ]
    assert passed_headers(upstream) == {
        "x-request-id": "req_1",
        "x-ratelimit-remaining-tokens": "99",
        "retry-after": "2",
        "retry-after-ms": "2000",
        "openai-processing-ms": "12",
    }


def test_litellm_additional_headers_give_openai_names_and_anthropics_request_id() -> None:
    additional = {
        "x-ratelimit-remaining-requests": "9",
        "llm_provider-request-id": "req_anthropic",
        "llm_provider-anthropic-ratelimit-requests-remaining": "9",
        "llm_provider-retry-after": "3",
        "llm_provider-server": "envoy",
        "request-id": "req_anthropic",
    }
    assert from_litellm(additional) == {
        "x-ratelimit-remaining-requests": "9",
        "retry-after": "3",
        "x-request-id": "req_anthropic",
    }
    assert from_litellm({"llm_provider-x-request-id": "req_azure", "request-id": "req_azure"}) == {
        "x-request-id": "req_azure"
    }
    assert from_litellm(None) == {}


@pytest.mark.parametrize(
    ("detail", "status", "code", "expected"),
    [
        (
            'litellm.BadRequestError: AnthropicException - {"type":"error","error":{"type":"invalid_request_error",'
            '"message":"max_tokens: too large"}}',
            400,
            None,
            "max_tokens: too large",
        ),
        (LITELLM_TRACEBACK, 502, "upstream_error", "The upstream provider's call failed (HTTP 502)."),
        (
            "litellm.InternalServerError: AnthropicException - <html><body>502 Bad Gateway</body></html>. "
            "Handle with `litellm.InternalServerError`.",
            500,
            None,
            "The upstream provider's call failed (HTTP 500).",
        ),
        (
            "litellm.Timeout: Connection timed out after 600.0 seconds.",
            504,
            "upstream_timeout",
            "The upstream provider timed out.",
        ),
        (
            "litellm.BadRequestError: anthropic does not support parameters: ['frobnicate']",
            400,
            None,
            "anthropic does not support parameters: ['frobnicate']",
        ),
    ],
)
def test_public_message(detail: str, status: int, code: str | None, expected: str) -> None:
    assert public_message(detail, status, code) == expected
