"""The Bedrock adapter's pure parts: statuses, output records, job names within Bedrock's patterns, credentials
as LiteLLM configs write them, and which bedrock deployments get a batch lane."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pytest

from proxy.providers.base import BatchState, LineOutcome
from proxy.providers.bedrock_aws import AwsAccount, client_error
from proxy.providers.bedrock_batch import bedrock_model, input_token, job_info, job_name, result_line
from proxy.providers.registry import no_batch_reason
from proxy.settings import ModelDeployment

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}$")  # botocore's ModelInvocationJobName


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("Submitted", BatchState.VALIDATING),
        ("Scheduled", BatchState.VALIDATING),
        ("InProgress", BatchState.IN_PROGRESS),
        ("PartiallyCompleted", BatchState.COMPLETED),
        ("Stopping", BatchState.CANCELLING),
        ("Stopped", BatchState.CANCELLED),
        ("Expired", BatchState.EXPIRED),
        ("Failed", BatchState.FAILED),
    ],
)
def test_every_bedrock_status_has_its_state(status: str, state: BatchState) -> None:
    job = {
        "jobArn": ARN,
        "status": status,
        "message": "why",
        "submitTime": datetime(2026, 12, 1, tzinfo=UTC),
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/p/input/x.jsonl"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/p/output/x/"}},
        "totalRecordCount": 4,
        "successRecordCount": 3,
        "errorRecordCount": 1,
    }
    info = job_info(job, {"label": "v"})
    assert (info.state, info.total, info.completed, info.failed) == (state, 4, 3, 1)
    assert info.output_file_id == "s3://b/p/output/x/abc123def456/x.jsonl.out"
    assert info.created_at == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert info.errors == ("why" if state is BatchState.FAILED else None)


def test_output_records_become_answers_or_errors() -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "hi"}],
               "usage": {"input_tokens": 3, "output_tokens": 1}}  # fmt: skip
    ok = result_line(orjson.dumps({"recordId": "job_1", "modelInput": {}, "modelOutput": message}))
    assert ok is not None
    assert (ok.custom_id, ok.outcome, ok.status_code) == ("job_1", LineOutcome.SUCCEEDED, 200)
    assert ok.body is not None
    assert ok.body["choices"][0]["message"]["content"] == "hi"
    error = {"recordId": "job_2", "modelInput": {}, "error": {"errorCode": 429, "errorMessage": "slow down"}}
    failed = result_line(orjson.dumps(error))
    assert failed is not None
    assert (failed.outcome, failed.status_code, failed.error_message, failed.transient) == (
        LineOutcome.ERRORED, 429, "slow down", True,
    )  # fmt: skip
    assert result_line(b"not json\n") is None
    assert result_line(b"\n") is None


def test_job_names_and_tokens_fit_bedrocks_patterns_and_follow_the_input() -> None:
    source = "s3://bucket/prefix/input/0123.jsonl"
    name = job_name(source, 1_790_000_000.7)
    assert NAME_PATTERN.match(name)
    assert len(name) <= 63
    assert input_token("s3://a") == input_token("s3://a") != input_token("s3://b")
    assert input_token(source)[:16] in name  # how find_batches looks it up again


def test_credentials_are_read_as_litellm_configs_write_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_AWS_SECRET", "from-the-environment")
    account = AwsAccount.from_params(
        {
            "aws_region_name": "eu-west-1",
            "aws_access_key_id": "AKIA",
            "aws_secret_access_key": "os.environ/MY_AWS_SECRET",
        }
    )
    assert account.region == "eu-west-1"
    assert account.credentials == {"aws_access_key_id": "AKIA", "aws_secret_access_key": "from-the-environment"}
    assert AwsAccount.from_params({}).credentials is None  # boto3's default chain


def test_aws_error_codes_are_classified() -> None:
    throttled = client_error({"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 429}})
    assert throttled.transient
    full = client_error(
        {"Error": {"Code": "ServiceQuotaExceededException", "Message": "too many jobs"},
         "ResponseMetadata": {"HTTPStatusCode": 400}}
    )  # fmt: skip
    assert (full.classification.value, full.message) == ("transient_capacity", "too many jobs")
    denied = client_error({"Error": {"Code": "AccessDeniedException"}, "ResponseMetadata": {"HTTPStatusCode": 403}})
    assert denied.classification.value == "account_problem"


def test_only_claude_with_a_bucket_and_a_role_gets_a_batch_lane() -> None:
    assert bedrock_model("anthropic.claude-haiku-4-5-20251001-v1:0")
    assert bedrock_model("us.anthropic.claude-sonnet-4-20250514-v1:0")
    assert not bedrock_model("amazon.nova-pro-v1:0")
    params = {"model": "bedrock/anthropic.claude-haiku-4-5-20251001-v1:0", "batch_s3_bucket": "s3://b/p",
              "batch_role_arn": "arn:aws:iam::123456789012:role/r"}  # fmt: skip
    assert no_batch_reason(ModelDeployment.model_validate({"model_name": "c", "litellm_params": params})) is None
    without_role = {key: value for key, value in params.items() if key != "batch_role_arn"}
    reason = no_batch_reason(ModelDeployment.model_validate({"model_name": "c", "litellm_params": without_role}))
    assert reason is not None
    assert "batch_role_arn" in reason
