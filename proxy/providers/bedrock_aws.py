"""AWS plumbing for the Bedrock batch adapter: boto3 clients (SigV4 signing, credentials, endpoints) run off the
event loop, and botocore's errors as ProviderError.

Credentials come from the deployment (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`,
`aws_profile_name`, as LiteLLM users write them) or else boto3's default chain (environment, shared config,
instance role). Endpoints are boto3's own: the region's, or `AWS_ENDPOINT_URL_BEDROCK` / `AWS_ENDPOINT_URL_S3`
(how tests point the adapter at the simulator and a local S3 server).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from proxy.providers.base import ErrorClass, ProviderError

T = TypeVar("T")
CREDENTIAL_PARAMS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
DEFAULT_REGION = "us-east-1"
ENV_PREFIX = "os.environ/"
# Bedrock's error codes (the `x-amzn-ErrorType` of its answers) and S3's, by what the worker does about them
CODE_CLASSES: Mapping[str, ErrorClass] = {
    "AccessDeniedException": ErrorClass.ACCOUNT_PROBLEM,
    "AccessDenied": ErrorClass.ACCOUNT_PROBLEM,
    "UnrecognizedClientException": ErrorClass.ACCOUNT_PROBLEM,
    "InvalidAccessKeyId": ErrorClass.ACCOUNT_PROBLEM,
    "SignatureDoesNotMatch": ErrorClass.ACCOUNT_PROBLEM,
    "ExpiredTokenException": ErrorClass.ACCOUNT_PROBLEM,
    "NoSuchBucket": ErrorClass.ACCOUNT_PROBLEM,  # the configured bucket is missing: someone must act
    "ServiceQuotaExceededException": ErrorClass.TRANSIENT_CAPACITY,  # too many jobs in flight for the model
    "ThrottlingException": ErrorClass.TRANSIENT,
    "SlowDown": ErrorClass.TRANSIENT,
    "InternalServerException": ErrorClass.TRANSIENT,
    "ServiceUnavailableException": ErrorClass.TRANSIENT,
    "ResourceNotFoundException": ErrorClass.NOT_FOUND,
    "NoSuchKey": ErrorClass.NOT_FOUND,
    "ValidationException": ErrorClass.BAD_REQUEST,
    "ConflictException": ErrorClass.BAD_REQUEST,
}


@dataclass(frozen=True, slots=True)
class AwsAccount:
    """Where and as whom the adapter calls AWS: the region, and credentials (None: boto3's default chain)."""

    region: str = DEFAULT_REGION
    credentials: Mapping[str, str] | None = None
    profile: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AwsAccount:
        """From a deployment's litellm params (`aws_region_name`, the credential params, `aws_profile_name`)."""
        given = {name: resolved(params[name]) for name in CREDENTIAL_PARAMS if params.get(name)}
        profile = params.get("aws_profile_name")
        return cls(
            region=str(params.get("aws_region_name") or DEFAULT_REGION),
            credentials=given or None,
            profile=str(profile) if profile else None,
        )

    def clients(self, timeout: float) -> tuple[Any, Any]:
        """(bedrock, s3) boto3 clients (blocking: reads config files; call it in a thread)."""
        import boto3  # noqa: PLC0415 - deferred calls only (boto3 takes a while to import)
        from botocore.config import Config  # noqa: PLC0415

        session = boto3.session.Session(region_name=self.region, profile_name=self.profile, **(self.credentials or {}))
        config = Config(
            connect_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        return session.client("bedrock", config=config), session.client("s3", config=config)


def resolved(value: Any) -> str:
    """A param as LiteLLM's config reads it: `os.environ/NAME` is the variable's value (empty when unset)."""
    text = str(value)
    return os.environ.get(text.removeprefix(ENV_PREFIX), "") if text.startswith(ENV_PREFIX) else text


@dataclass(frozen=True, slots=True)
class S3Location:
    """An S3 object or prefix, `s3://bucket/key`."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """ValueError when `uri` is not `s3://bucket[/key]`."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket:
            raise ValueError(f"expected s3://bucket/prefix, got {uri!r}")
        return cls(bucket, key.strip("/"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{name}" if self.key else name)


async def call(function: Callable[..., T], /, **kwargs: Any) -> T:
    """A blocking boto3 call in a thread, its errors as ProviderError."""
    with aws_errors():
        return await asyncio.to_thread(functools.partial(function, **kwargs))


@contextmanager
def aws_errors() -> Iterator[None]:
    """botocore's ClientError (an AWS answer) and its other errors (no answer, no credentials) as ProviderError."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # noqa: PLC0415

    try:
        yield
    except ClientError as exc:
        raise client_error(exc.response) from None
    except NoCredentialsError as exc:
        raise ProviderError(None, str(exc), code="no_credentials", classification=ErrorClass.ACCOUNT_PROBLEM) from None
    except BotoCoreError as exc:
        raise ProviderError(None, f"{type(exc).__name__}: {exc}", classification=ErrorClass.TRANSIENT) from None


def client_error(response: Mapping[str, Any]) -> ProviderError:
    """The ProviderError of an AWS error answer (botocore's parsed `ClientError.response`)."""
    error = response.get("Error") or {}
    code = str(error.get("Code") or "") or None
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    message = str(error.get("Message") or code or "AWS error")
    kind = CODE_CLASSES.get(code or "")
    return ProviderError(status if isinstance(status, int) else None, message, code=code, classification=kind)
