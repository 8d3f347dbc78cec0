"""The table from exception class to the OpenAI-shaped HTTP answer, used by the fast chat path and FastAPI alike.

`ErrorMap` turns any exception into an `ApiError`, looking its class up along the exception's MRO (first match
wins, as Starlette looks up its exception handlers); `app.py` answers through the same map on the fast chat path
and in FastAPI's handlers. An exception with no entry of its own meets the `Exception` entry: a 500 that names no
cause, with the detail (traceback included) in the log. Kept apart from `proxy/errors.py` because it needs the web
framework, which the worker process does not load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from proxy.errors import (
    INTERNAL_MESSAGE,
    JSON_MEDIA_TYPE,
    ApiError,
    InternalError,
    InvalidRequest,
    ServiceUnavailable,
    error_bytes,
)

log = logging.getLogger("batchgate")


def error_response(exc: ApiError) -> Response:
    """An ApiError as an HTTP response."""
    return Response(
        error_bytes(exc.message, exc.error_type, param=exc.param, code=exc.code),
        status_code=exc.status,
        media_type=JSON_MEDIA_TYPE,
        headers=exc.headers,
    )


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one exception class is answered: `answer` builds the ApiError; `log_level` (None: not logged) is
    the level at which the exception is logged with `log_message`, its traceback too when `traceback`."""

    answer: Callable[[Any], ApiError]
    log_level: int | None = None
    log_message: str = ""
    traceback: bool = False


class ErrorMap:
    """Exception class -> ErrorRule; an exception is answered by the rule of the first class of its MRO
    that has one (so an entry for a base class covers every subclass without one of its own)."""

    def __init__(self, rules: Mapping[type[Exception], ErrorRule]) -> None:
        if Exception not in rules:
            raise ValueError("an ErrorMap needs an entry for Exception (the answer to the unexpected)")
        self._rules = dict(rules)

    @property
    def classes(self) -> tuple[type[Exception], ...]:
        """The exception classes that have a rule of their own (Exception among them)."""
        return tuple(self._rules)

    def with_rule(self, cls: type[Exception], rule: ErrorRule) -> ErrorMap:
        """A copy with `cls` answered by `rule`."""
        return ErrorMap({**self._rules, cls: rule})

    def rule_for(self, exc: BaseException) -> ErrorRule:
        """The rule of the first class along `exc`'s MRO that has one; Exception's for anything else."""
        for cls in type(exc).__mro__:
            rule = self._rules.get(cls)
            if rule is not None:
                return rule
        return self._rules[Exception]

    def answer(self, exc: BaseException, *, request_id: str | None = None) -> ApiError:
        """The ApiError for `exc`; logs it first when its rule says so."""
        rule = self.rule_for(exc)
        if rule.log_level is not None:
            log.log(
                rule.log_level,
                "%s: %r",
                rule.log_message,
                exc,
                exc_info=exc if rule.traceback else None,
                extra={"request_id": request_id},
            )
        return rule.answer(exc)

    def response(self, exc: BaseException, *, request_id: str | None = None) -> Response:
        """`answer(exc)` as an HTTP response: its status, headers and OpenAI error object (`{"error": {...}}`)."""
        return error_response(self.answer(exc, request_id=request_id))


def _same(exc: ApiError) -> ApiError:
    return exc


def _validation(exc: RequestValidationError) -> ApiError:
    problem = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(part) for part in problem.get("loc", ())[1:]) or None
    return InvalidRequest(str(problem.get("msg")), param=param, code="invalid_value")


def _http(exc: HTTPException) -> ApiError:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return ApiError(
        str(exc.detail),
        code=code,
        headers=exc.headers,
        status=exc.status_code,
        error_type="invalid_request_error",
    )


def _store_unavailable(_: RedisError) -> ApiError:
    """Redis could not be reached (or its pool is exhausted): nothing was accepted, the caller may retry."""
    return ServiceUnavailable("The job store is unavailable right now; please retry.", headers={"retry-after": "1"})


def _internal(_: BaseException) -> ApiError:
    return InternalError(INTERNAL_MESSAGE)


def default_error_map() -> ErrorMap:
    """batchgate's table. A provider error type gets its entry here (its base class covers its kinds)."""
    return ErrorMap(
        {
            ApiError: ErrorRule(_same),
            RequestValidationError: ErrorRule(_validation),
            HTTPException: ErrorRule(_http),
            RedisError: ErrorRule(_store_unavailable, logging.WARNING, "job store unavailable"),
            Exception: ErrorRule(_internal, logging.ERROR, "unhandled error", traceback=True),
        }
    )
