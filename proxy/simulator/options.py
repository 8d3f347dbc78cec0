"""Every knob of the simulated upstream. Timing knobs default to what suits tests (a batch finishes in about
3 s); behaviour knobs default to what the real provider does (strict: enqueued-token limit, `metadata` refused
without `store`, a bad line fails its whole batch, Claude's parameter rules, Anthropic counts hidden until the
batch ends). docs/simulator.md tabulates them with the real behaviour each models and its source.

Knobs can be changed at runtime (`PATCH /_sim/config`); a batch copies the knobs in force when it is created,
so a test can make "the next batch" stall, fail lines or finish in 1 s without touching batches already
running. Account-state knobs (`insufficient_quota`, `billing_hard_limit_reached`) apply to every later call.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rate = float  # a probability in [0, 1]
Flavor = Literal["openai", "azure", "groq"]

# OpenAI usage tier 1 batch queue limit for gpt-4o-mini-class models (enqueued prompt tokens per model)
DEFAULT_ENQUEUED_TOKEN_LIMIT = 2_000_000
DEFAULT_FILES_WITHOUT_EXPIRY = 500  # Azure: batch files per resource when no expires_after is set


class SimulatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = Field(
        default=None, description="when set, only `Authorization: Bearer <api_key>` is accepted (else 401)"
    )
    echo_credentials_in_errors: bool = Field(
        default=False,
        description="every error answer, on every endpoint, quotes the credential it was sent (raw, base64, "
        "Basic-encoded, URL-encoded), as careless providers do: batchgate must mask it everywhere",
    )

    # synchronous chat completions
    sync_latency_s: float = Field(default=0.0, ge=0, description="extra delay before every sync answer")
    flex_latency_s: float = Field(default=0.2, ge=0, description="extra delay for service_tier=flex")
    sync_429_rate: Rate = Field(default=0.0, ge=0, le=1, description="share of sync calls answered 429")
    sync_500_rate: Rate = Field(default=0.0, ge=0, le=1, description="share of sync calls answered 500")
    flex_429_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="share of flex calls answered 429 resource_unavailable"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After header on every 429")
    off_peak_utc: str | None = Field(
        default=None,
        pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="cheap hours of sync calls, `HH:MM-HH:MM` UTC on the simulator's clock, as DeepSeek's off-peak "
        "window (16:30-00:30 UTC): a call that lands in it is billed off_peak_share of list (None: no window)",
    )
    off_peak_share: float = Field(
        default=0.5, ge=0, le=1, description="share of list billed in the off-peak window (DeepSeek V3: half)"
    )
    venue_tiers: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="extra `service_tier` values the chat endpoint takes (tiers a provider adds later, declared "
        "as venues in batchgate's config), each billed at that share of list (JSON)",
    )
    stream_chunk_chars: int = Field(default=12, ge=1, description="characters per streamed content delta")

    # batches (all durations in seconds of compressed time)
    turnaround_s: float = Field(default=3.0, ge=0, description="batch creation -> completed, end to end")
    turnaround_sigma: float = Field(
        default=0.0,
        ge=0,
        description="when > 0, each batch's turnaround is drawn log-normally: median turnaround_s, this sigma (of "
        "the log; 1.08 gives p90 = 4 x median, p99 = 12 x median, as published batch turnarounds spread)",
    )
    stall_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="share of batches that stall: no line finishes until expiry or cancel"
    )
    validating_s: float = Field(default=0.2, ge=0, description="time spent in `validating` (within turnaround)")
    finalizing_s: float = Field(default=0.2, ge=0, description="time spent in `finalizing` (within turnaround)")
    expiry_s: float = Field(default=86400.0, gt=0, description="batch creation -> expired, if not finished")
    cancel_delay_s: float = Field(default=0.5, ge=0, description="`cancelling` -> `cancelled`")
    finish_fraction: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of a batch's lines that finish; the rest hang until expiry or cancel (0: stall)",
    )
    line_500_rate: Rate = Field(default=0.0, ge=0, le=1, description="share of batch lines answered 500")
    line_429_rate: Rate = Field(default=0.0, ge=0, le=1, description="share of batch lines answered 429")
    line_400_rate: Rate = Field(default=0.0, ge=0, le=1, description="share of batch lines answered 400")
    line_errors_file: Literal["error", "output"] = Field(
        default="error",
        description="where lines answered 4xx/5xx go: the error file (as OpenAI does) or the output file",
    )
    max_batch_lines: int = Field(default=50_000, ge=1, description="input lines allowed in one batch")
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="largest accepted upload")

    # provider strictness (defaults: what the real providers do)
    flavor: Flavor = Field(
        default="openai",
        description="wire flavour of the OpenAI face: openai, azure (capitalised statuses, ISO timestamps, null "
        "counts, no 24 h expiry, token limit and file cap answered at create/upload) or groq (24h..7d windows)",
    )
    compatible_server_nulls: bool = Field(
        default=False,
        description="answer chat as OpenAI-compatible servers (vLLM and others) do, not as OpenAI does: optional "
        "fields present as null (tool_calls, function_call, token details) and a stream's usage on its last "
        "content chunk instead of a usage-only chunk",
    )
    enqueued_token_limit: int | None = Field(
        default=DEFAULT_ENQUEUED_TOKEN_LIMIT,
        ge=1,
        description="enqueued prompt tokens allowed per model over open batches (None: unlimited)",
    )
    enqueued_token_limits: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="per-model enqueued-token limits overriding enqueued_token_limit (JSON)"
    )
    insufficient_quota: bool = Field(
        default=False, description="account out of quota: chat and batch create answer 429 insufficient_quota"
    )
    billing_hard_limit_reached: bool = Field(
        default=False,
        description="account at its billing hard limit: batch create answers 400, chat 429 insufficient_quota",
    )
    files_read_forbidden: bool = Field(
        default=False,
        description="file downloads (`GET /v1/files/{id}/content`: batch results) answer 403, as for a restricted "
        "key without the api.files.read scope",
    )
    invalid_body_fails_batch: bool = Field(
        default=True,
        description="a batch line whose body the endpoint refuses fails the whole batch (else only that line, 400)",
    )
    validation_names_line: bool = Field(
        default=True,
        description="a batch failed validation names the bad `line` in errors.data[] (else `line: null`, which "
        "some failures carry: batchgate must then find the bad request itself)",
    )
    metadata_requires_store: bool = Field(
        default=True, description="chat `metadata` without `store: true` is refused (400; in a batch, that line)"
    )
    azure_deployments: dict[str, str] = Field(
        default_factory=dict,
        description="Azure paths: deployment name -> the model it serves, which names its price in the ledger as "
        "azure/<model> (a deployment not listed serves the model of its own name) (JSON)",
    )
    azure_ad_token: str | None = Field(
        default=None,
        description="Azure paths: a Microsoft Entra ID token accepted as `Authorization: Bearer` on both the v1 and "
        "the legacy endpoint (a key is still refused the other style's way)",
    )
    max_files_without_expiry: int = Field(
        default=DEFAULT_FILES_WITHOUT_EXPIRY,
        ge=0,
        description="azure flavour: batch files allowed without expires_after (the next upload answers 400)",
    )
    anthropic_live_counts: bool = Field(
        default=False,
        description="Anthropic request_counts move while the batch runs (real: all in `processing` until it ends)",
    )
    claude_sampling_exclusive: bool = Field(
        default=True, description="Claude 4.5 and later refuse `temperature` and `top_p` together (400)"
    )
    claude_nonempty_text: bool = Field(default=True, description="Claude refuses empty text content blocks (400)")
    gemini_inline_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1,
        description="Gemini face: the largest inline batchGenerateContent call (400 above it; a file is needed)",
    )
    xai_create_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="xAI face: one batch create per this many seconds per team (xAI: 1 per second); a create "
        "sooner answers 429 with Retry-After (0: no limit)",
    )

    bedrock_min_records: int = Field(
        default=100, ge=1, description="Bedrock face: the fewest records a batch inference job takes (fails below)"
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Bedrock face: the S3-compatible server its jobs read input from and write output to "
        "(None: boto3's default, e.g. AWS_ENDPOINT_URL_S3)",
    )
    gcs_url: str | None = Field(
        default=None,
        description="Vertex AI face: the JSON API root of the GCS-compatible server its batch jobs read inputs "
        "from and write outputs to (e.g. a gcp-storage-emulator on loopback; None: Vertex jobs are refused)",
    )

    google_token_lifetime_s: float = Field(
        default=3600.0,
        gt=0,
        description="Google STS token endpoint (/v1/token): how long an exchanged access token lives",
    )

    seed: int | None = Field(default=None, description="seed for the injected-fault dice (None: random)")

    @model_validator(mode="after")
    def _phases_fit(self) -> SimulatorOptions:
        if self.sync_429_rate + self.sync_500_rate > 1:
            raise ValueError("sync_429_rate + sync_500_rate must not exceed 1")
        if self.line_500_rate + self.line_429_rate + self.line_400_rate > 1:
            raise ValueError("line_500_rate + line_429_rate + line_400_rate must not exceed 1")
        return self

    def token_limit(self, model: str) -> int | None:
        """The enqueued-token limit of `model` (tokens), or None when unlimited."""
        return self.enqueued_token_limits.get(model, self.enqueued_token_limit)

    @property
    def processing_s(self) -> float:
        """Time the lines of a batch take to run: the turnaround less the validating and finalizing phases."""
        return max(0.0, self.turnaround_s - self.validating_s - self.finalizing_s)

    def updated(self, changes: dict[str, Any]) -> SimulatorOptions:
        """A validated copy with `changes` applied (unknown knobs and bad values raise ValueError)."""
        return SimulatorOptions.model_validate({**self.model_dump(), **changes})
