"""A job turned into the HTTP answer of the original call: the ChatCompletion, or the error it ended with."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from proxy.errors import caller_facing_error, error_bytes, error_object, is_provider_auth_failure
from proxy.jobs.render import job_json, location_of
from proxy.store.records import JobView

JSON = "application/json"
JOB_HEADER = "x-batchgate-job"
NO_RETRY = {"x-should-retry": "false"}  # the openai SDKs obey it: retrying would only replay the same answer

STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
}


def job_headers(view: JobView) -> dict[str, str]:
    return {JOB_HEADER: view.id, "location": location_of(view)}


def error_status(error: dict[str, Any] | None) -> int:
    """The HTTP status of a failed job's OpenAI-shaped error (502 when the provider's failure has no client cause)."""
    if not error or is_provider_auth_failure(None, error):
        return 502
    if str(error.get("code") or "") in ("rate_limit_exceeded", "insufficient_quota"):
        return 429
    return STATUS_BY_ERROR_TYPE.get(str(error.get("type") or ""), 502)


def error_json(view: JobView) -> bytes:
    """The body of a job that did not complete, in the OpenAI error shape."""
    if view.status == "cancelled":
        return error_bytes(f"The deferred job {view.id} was cancelled.", "invalid_request_error", code="job_cancelled")
    if view.error:
        error = caller_facing_error(view.error)
        return orjson.dumps({"error": {**error_object("The request failed.", "upstream_error"), **error}})
    return error_bytes(f"The deferred job {view.id} failed.", "upstream_error", code="job_failed")


def final_response(view: JobView, headers: dict[str, str] | None = None) -> Response:
    """A final job as the original call's answer: 200 with the provider's ChatCompletion bytes, or the error."""
    extra = {**job_headers(view), **(headers or {})}
    if view.status == "completed" and view.response is not None:
        return Response(view.response, status_code=200, media_type=JSON, headers=extra)
    status = 409 if view.status == "cancelled" else error_status(view.error)
    return Response(error_json(view), status_code=status, media_type=JSON, headers={**extra, **NO_RETRY})


def accepted_response(view: JobView, headers: dict[str, str] | None = None) -> Response:
    """202 Accepted with the job object (poll its Location, or wait for the webhook)."""
    return Response(job_json(view), status_code=202, media_type=JSON, headers={**job_headers(view), **(headers or {})})


def timeout_json(view: JobView, waited: float) -> bytes:
    return error_bytes(
        f"The answer was not ready within {waited:g}s (delivery.max_wait). The deferred job {view.id} continues: "
        f"fetch it with GET {location_of(view)}.",
        "timeout_error",
        code="hold_timeout",
    )


def timeout_response(view: JobView, waited: float) -> Response:
    """A held call that reached delivery.max_wait: 504 naming the job, which keeps running."""
    return Response(
        timeout_json(view, waited), status_code=504, media_type=JSON, headers={**job_headers(view), **NO_RETRY}
    )
