"""A real S3-compatible server on loopback for the Bedrock tests: moto in server mode (its own HTTP server in a
thread, on a free port), spoken to with boto3 like real S3. Not a mock of the SDK: requests go over HTTP, SigV4
signed, and answers (NoSuchBucket, NoSuchKey) are S3's own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

BEDROCK_MODEL = "anthropic.claude-haiku-4-5-20251001-v1:0"  # the simulator bills Bedrock calls under the model id
BEDROCK_ROLE = "arn:aws:iam::123456789012:role/BedrockBatchInference"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"  # moto accepts any key; these are AWS's documented example credentials
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    url: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """`name` (a fresh random one when None), created."""
        name = name or f"bg-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(str(item["Key"]) for item in listing.get("Contents") or [])


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (a port the OS picks) for as long as the block runs."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def aws_environment(monkeypatch: pytest.MonkeyPatch, s3: S3Server, bedrock_url: str) -> None:
    """Point boto3 (the adapter's and the simulator's) at the local S3 server and the simulator's Bedrock face,
    with fixed credentials and no shared config files read."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", bedrock_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def bedrock_deployment(bucket: str, simulator_url: str, min_records: int | None = None) -> dict[str, Any]:
    """BEDROCK_MODEL as LiteLLM users declare it (its sync calls at the simulator's Converse face), plus the
    batch-only settings: jobs under `s3://<bucket>/bg`, `min_records` per job (None: Bedrock's own minimum)."""
    params: dict[str, Any] = {
        "model": f"bedrock/{BEDROCK_MODEL}", "aws_region_name": REGION, "batch_s3_bucket": f"s3://{bucket}/bg",
        "batch_role_arn": BEDROCK_ROLE, "api_base": simulator_url + "/bedrock-runtime",
    }  # fmt: skip
    if min_records is not None:
        params["batch_min_records"] = min_records
    return {"model_name": BEDROCK_MODEL, "litellm_params": params}


def bedrock_models(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, bucket: str, min_records: int | None = None
) -> Callable[[str], list[dict[str, Any]]]:
    """A model_list maker for a simulator URL (tests/support/deferred_env.py's `models`): the Bedrock deployment on
    `bucket`, with this process's AWS environment (inherited by worker processes) pointed at that simulator."""

    def models(simulator_url: str) -> list[dict[str, Any]]:
        aws_environment(monkeypatch, s3, simulator_url + "/bedrock")
        return [bedrock_deployment(bucket, simulator_url, min_records)]

    return models
