"""The error map: exception class -> OpenAI-shaped answer, looked up along the MRO; nothing of a cause leaks."""

from __future__ import annotations

import logging

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.exceptions import HTTPException

from proxy.delivery.answers import error_status
from proxy.error_map import ErrorMap, ErrorRule, default_error_map
from proxy.errors import (
    INTERNAL_MESSAGE,
    ApiError,
    InvalidRequest,
    NotFound,
    UpstreamError,
    caller_facing_error,
    error_body,
    provider_error_object,
    upstream_auth_error_object,
)


class ProviderTrouble(Exception):
    """Stands for a provider error base class that an adapter would raise kinds of."""


class CapacityTrouble(ProviderTrouble):
    pass


def body_of(exc: Exception) -> tuple[int, dict[str, object], dict[str, str]]:
    response = default_error_map().response(exc)
    return response.status_code, orjson.loads(response.body), dict(response.headers)


def test_api_errors_answer_with_their_own_status_type_param_and_code() -> None:
    status, body, _ = body_of(NotFound("No such job.", param="id"))
    assert status == 404
    assert body == error_body("No such job.", "invalid_request_error", param="id", code="not_found")


def test_the_first_class_of_the_mro_with_an_entry_wins() -> None:
    to_503 = ErrorRule(lambda exc: ApiError(str(exc), status=503, code="capacity"))
    errors = default_error_map().with_rule(ProviderTrouble, to_503)
    assert errors.answer(CapacityTrouble("busy")).status == 503  # covered by its base class's entry
    errors = errors.with_rule(CapacityTrouble, ErrorRule(lambda exc: ApiError(str(exc), status=429)))
    assert errors.answer(CapacityTrouble("busy")).status == 429  # its own entry comes first
    assert errors.answer(ProviderTrouble("down")).status == 503
    assert errors.answer(InvalidRequest("bad")).status == 400  # ApiError subclasses keep theirs


def test_an_unexpected_exception_is_a_500_that_names_no_cause_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise KeyError("/srv/batchgate/proxy/secret_module.py line 12")
    except KeyError as exc:
        with caplog.at_level(logging.ERROR, logger="batchgate"):
            response = default_error_map().response(exc, request_id="req-1")
    assert response.status_code == 500
    body = orjson.loads(response.body)
    assert body == error_body(INTERNAL_MESSAGE, "server_error")
    assert b"secret_module" not in response.body
    assert b"KeyError" not in response.body
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    assert "secret_module.py" in record.getMessage()
    assert getattr(record, "request_id", None) == "req-1"


def test_the_job_store_unreachable_is_a_503_with_retry_after() -> None:
    status, body, headers = body_of(RedisConnectionError("Error 111 connecting to 10.0.0.5:6379"))
    assert status == 503
    assert body["error"] == {
        "message": "The job store is unavailable right now; please retry.",
        "type": "server_error",
        "param": None,
        "code": "service_unavailable",
    }
    assert headers["retry-after"] == "1"


def test_framework_http_errors_keep_their_status_and_headers() -> None:
    status, body, headers = body_of(HTTPException(405, "Method Not Allowed", headers={"allow": "GET"}))
    assert status == 405
    assert body == error_body("Method Not Allowed", "invalid_request_error", code="method_not_allowed")
    assert headers["allow"] == "GET"


def test_a_provider_status_and_error_object_are_passed_on() -> None:
    error = UpstreamError(429, "Slow down.", error_type="rate_limit_error", headers={"retry-after": "3"})
    status, body, headers = body_of(error)
    assert (status, body["error"]["type"], headers["retry-after"]) == (429, "rate_limit_error", "3")


def test_provider_error_objects_keep_the_providers_fields_or_name_the_status() -> None:
    own = {"error": {"message": "No.", "type": "invalid_request_error", "param": "n", "code": 7, "extra": 1}}
    assert provider_error_object(400, orjson.dumps(own)) == {
        "message": "No.",
        "type": "invalid_request_error",
        "param": "n",
        "code": "7",
    }
    assert provider_error_object(502, b"<html>bad gateway</html>") == {
        "message": "The upstream provider answered with HTTP 502.",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_error",
    }


def test_a_map_without_an_answer_to_the_unexpected_is_refused() -> None:
    with pytest.raises(ValueError, match="Exception"):
        ErrorMap({ApiError: ErrorRule(lambda exc: exc)})


@pytest.mark.parametrize(
    ("status", "content"),
    [
        (
            401,
            b'{"error": {"message": "Incorrect API key provided: sk-pr***9999.", "type": "invalid_request_error",'
            b' "param": null, "code": "invalid_api_key"}}',
        ),
        (401, b"<html>Unauthorized</html>"),
        (400, b'{"error": {"message": "bad key", "type": "authentication_error"}}'),  # Anthropic's shape
    ],
)
def test_a_provider_refusing_batchgates_key_is_an_upstream_failure_not_the_callers(status: int, content: bytes) -> None:
    error = provider_error_object(status, content)
    assert error == upstream_auth_error_object()
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_authentication_error")
    assert "invalid_api_key" not in orjson.dumps(error).decode()


def test_a_stored_provider_auth_error_is_answered_502_with_the_upstream_code() -> None:
    stored = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}
    assert error_status(stored) == 502
    assert caller_facing_error(stored)["code"] == "upstream_authentication_error"
    passed = {"message": "Bad input.", "type": "invalid_request_error", "code": "invalid_value"}
    assert caller_facing_error(passed) == passed
    assert error_status(passed) == 400
