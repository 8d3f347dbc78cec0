"""The one provider error type: what a status and a provider's error code classify as."""

from __future__ import annotations

import pytest

from proxy.providers.base import ErrorClass, ProviderError, classify


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (None, None, ErrorClass.TRANSIENT),  # no answer at all
        (429, "rate_limit_exceeded", ErrorClass.TRANSIENT),
        (500, None, ErrorClass.TRANSIENT),
        (529, "overloaded_error", ErrorClass.TRANSIENT),
        (400, "token_limit_exceeded", ErrorClass.TRANSIENT_CAPACITY),
        (401, None, ErrorClass.ACCOUNT_PROBLEM),
        (403, "permission_error", ErrorClass.ACCOUNT_PROBLEM),
        (429, "insufficient_quota", ErrorClass.ACCOUNT_PROBLEM),
        (400, "billing_hard_limit_reached", ErrorClass.ACCOUNT_PROBLEM),
        (404, None, ErrorClass.NOT_FOUND),
        (400, "not_found_error", ErrorClass.NOT_FOUND),
        (400, "invalid_value", ErrorClass.BAD_REQUEST),
        (413, "request_too_large", ErrorClass.BAD_REQUEST),
    ],
)
def test_a_first_cut_of_classification_by_status_and_code(
    status: int | None, code: str | None, expected: ErrorClass
) -> None:
    assert classify(status, code) is expected
    error = ProviderError(status, "x", code=code)
    assert error.classification is expected
    assert error.transient is (expected in (ErrorClass.TRANSIENT, ErrorClass.TRANSIENT_CAPACITY))


def test_an_adapter_may_say_what_a_failure_is() -> None:
    refused = ProviderError(400, "custom_id too long", classification=ErrorClass.BAD_LINE, custom_id="job_1")
    assert (refused.classification, refused.custom_id, refused.transient) == (ErrorClass.BAD_LINE, "job_1", False)
