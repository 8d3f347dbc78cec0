"""Settings: the process environment (BATCHGATE_*) and the YAML config file, validated once at start.

The YAML file declares models the way LiteLLM users already write them (`model_list` with `litellm_params`),
caller keys, batching knobs, delivery and the policy. `os.environ/NAME` values are read from the environment
when the file is loaded; secrets are kept as `SecretStr` so they never print.

Every key is either static (fixed at start: the models and the provider clients built from them, limits, retry,
batching, worker) or live (swapped on reload: policy, caller keys, prices, delivery). A field is live
when it carries `LIVE` (its whole subtree is then live); proxy/config_scope.py reads the marks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from proxy.durations import parse_duration
from proxy.endpoints import model_of
from proxy.errors import ConfigError
from proxy.policy.model import PolicyConfig

DEFAULT_CONFIG_PATH = Path("policies/default.yaml")
ENV_REFERENCE_PREFIX = "os.environ/"
DEV_MASTER_KEY = "sk-batchgate-dev"
AZURE_SECRET_ENV = ("AZURE_API_KEY", "AZURE_AD_TOKEN")  # litellm's Azure credentials (proxy/providers/azure_config.py)

Seconds = Annotated[float, BeforeValidator(parse_duration)]
LIVE: dict[str, JsonValue] = {"reload": "live"}  # json_schema_extra of a field that a reload may change


def _resolve_env_reference(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(ENV_REFERENCE_PREFIX):
        return os.environ.get(value.removeprefix(ENV_REFERENCE_PREFIX)) or None
    return value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_resolve_env_reference)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LitellmParams(StrictModel):
    """The provider deployment behind a model name, as LiteLLM's `litellm_params` spells it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str = Field(description="provider/model, e.g. openai/gpt-4o-mini")
    api_base: str | None = None
    api_key: OptionalSecret = None
    input_cost_per_token: float | None = Field(default=None, ge=0, json_schema_extra=LIVE)
    output_cost_per_token: float | None = Field(default=None, ge=0, json_schema_extra=LIVE)
    input_cost_per_token_batches: float | None = Field(default=None, ge=0, json_schema_extra=LIVE)
    output_cost_per_token_batches: float | None = Field(default=None, ge=0, json_schema_extra=LIVE)
    cache_read_input_token_cost: float | None = Field(default=None, ge=0, json_schema_extra=LIVE)
    # Azure: the Global-Batch deployment whose name is the `model` of every batch line (the real-time deployment
    # in `model` cannot run batches); an azure model without one is never deferred
    batch_deployment: str | None = Field(default=None, min_length=1)
    # Azure: a Microsoft Entra ID token sent as `Authorization: Bearer` when no api_key is given (AZURE_AD_TOKEN)
    azure_ad_token: OptionalSecret = None
    # Bedrock: where batch inputs and outputs go (`s3://bucket/prefix` or a bucket name), the service role jobs
    # run as, and the fewest records a job takes (Bedrock's quota for the model; default 100); a bedrock model
    # without a bucket and a role is never deferred
    batch_s3_bucket: str | None = Field(default=None, min_length=1)
    batch_role_arn: str | None = Field(default=None, min_length=1)
    batch_min_records: int | None = Field(default=None, ge=1)
    # Vertex AI: the GCS bucket (`gs://bucket[/folder]` or a bare name) batch inputs and outputs go through; a
    # vertex_ai model without one is never deferred
    batch_gcs_bucket: str | None = Field(default=None, min_length=1)

    @field_validator("model")
    @classmethod
    def _has_provider(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError("expected provider/model, e.g. openai/gpt-4o-mini")
        return value

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def upstream_model(self) -> str:
        return self.model.split("/", 1)[1]


class BatchKnobs(StrictModel):
    """When a queue of deferred jobs is flushed into a provider batch, and how its batches are watched."""

    max_wait: Seconds = 600.0
    max_requests: int = Field(default=50_000, ge=1, le=50_000)
    max_bytes: int = Field(default=190_000_000, ge=1024, le=200_000_000)
    turnaround_estimate: Seconds = 3600.0
    completion_window: str = "24h"
    # seconds: the upload's expires_after and the batch's output_expires_after (OpenAI takes 1 h to 30 days)
    file_expiry: int = Field(default=7 * 24 * 3600, ge=3600, le=30 * 24 * 3600)
    # prompt tokens of open batches the provider accepts per model (None: the provider's tier-1 default, see
    # proxy/worker/capacity.py); lowered at run time when the provider reports a smaller limit
    enqueued_token_limit: int | None = Field(default=None, ge=1)


class ModelDeployment(StrictModel):
    model_name: str = Field(min_length=1)
    litellm_params: LitellmParams
    batch: BatchKnobs | None = None
    supports_flex: bool = False


class Budget(StrictModel):
    """A spending limit in USD per UTC day and per UTC month (None: no limit for that period); proxy/budgets.py."""

    daily_usd: float | None = Field(default=None, ge=0)
    monthly_usd: float | None = Field(default=None, ge=0)


class CallerKey(StrictModel):
    name: str = Field(min_length=1)
    key: OptionalSecret
    team: str = "default"
    webhook_secret: OptionalSecret = None
    budget: Budget | None = None  # this key's own spending limit (the team's applies too)


MASTER_KEY_NAME = "master"  # the caller name of the master key; no caller key may take it
RESERVED_KEY_NAMES = frozenset({MASTER_KEY_NAME})


class AuthConfig(StrictModel):
    master_key: OptionalSecret = None
    keys: list[CallerKey] = Field(default_factory=list)
    team_budgets: dict[str, Budget] = Field(default_factory=dict)  # team name -> its spending limit

    @model_validator(mode="after")
    def _distinct_keys(self) -> AuthConfig:
        """A key's name owns its jobs: two keys of one name would read and cancel each other's jobs, and a key
        named like the master would be taken for it. Two keys with one secret could not be told apart."""
        names = [declared.name for declared in self.keys]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"auth.keys[].name must be unique; repeated: {', '.join(repeated)}")
        reserved = sorted({name for name in names if name.casefold() in RESERVED_KEY_NAMES})
        if reserved:
            raise ValueError(f"auth.keys[].name {', '.join(map(repr, reserved))} is reserved for the master key")
        secrets = [declared.key.get_secret_value() for declared in self.keys if declared.key is not None]
        if self.master_key is not None:
            secrets.append(self.master_key.get_secret_value())
        if len(set(secrets)) != len(secrets):
            raise ValueError("auth: two keys (or a key and master_key) share one secret value")
        return self


class RetryConfig(StrictModel):
    max_attempts: int = Field(default=3, ge=1, le=10)
    base_delay: Seconds = 0.2
    max_delay: Seconds = 8.0
    budget: Seconds = 30.0


class LimitsConfig(StrictModel):
    # room for vision calls with base64 images (Anthropic's Messages API takes 32 MB a request)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    upstream_timeout: Seconds = 600.0
    upstream_connect_timeout: Seconds = 10.0
    redis_idle_timeout: Seconds = Field(default=60.0, gt=0)  # a pooled Redis connection unused this long closes


class WorkerConfig(StrictModel):
    poll_interval_min: Seconds = 2.0
    poll_interval_max: Seconds = 60.0
    tick: Seconds = 0.5
    lease: Seconds = 30.0
    safety_margin: Seconds = 600.0
    flex_turnaround: Seconds = 900.0
    result_ttl: Seconds = 7 * 86400.0
    sync_concurrency: int = Field(default=16, ge=1)
    concurrency: int = Field(default=16, ge=1)  # flushes and batch looks running at once per worker
    # after SIGTERM: how long in-flight work may take to finish before it is handed back to other workers
    drain_timeout: Seconds = 20.0
    # after a provider account problem (quota, billing, 401/403) stopped batch submission: how often one submission
    # is tried again as a probe (its success clears the problem)
    account_probe_interval: Seconds = 60.0
    # learned turnaround (proxy/jobs/turnaround.py): a batch lane fits, and a waiting job stays, while its batch
    # ends before the deadline with this confidence; until `turnaround_min_batches` batches of a group were seen
    # its configured turnaround_estimate is used instead
    turnaround_confidence: float = Field(default=0.99, gt=0, lt=1)
    turnaround_min_batches: int = Field(default=20, ge=1)
    turnaround_half_life: Seconds = 3 * 86400.0
    # a running batch with no finished line past this quantile of its learned turnaround is declared stalled
    # (cancelling a batch with no finished line costs nothing: its jobs are re-batched or moved on)
    stall_quantile: float = Field(default=0.9, gt=0, lt=1)
    # how a learned turnaround chooses the batch lane (docs/architecture.md "Deciding by expected cost"):
    # `expected_cost` batches a call when the batch's expected cost, a late batch rescued at list price at the
    # last safe moment, is below the next venue's price; `confidence` only when the batch ends in time with
    # turnaround_confidence
    lane_rule: Literal["expected_cost", "confidence"] = "expected_cost"
    # a batch still running this long before a job's last safe moment (deadline less safety_margin) is cancelled:
    # its finished lines answer their jobs, the rest are re-batched when a batch still fits, else rescued
    cancel_lead: Seconds = 600.0


class WebhookConfig(StrictModel):
    default_url: str | None = None
    secret: OptionalSecret = None
    retry_period: Seconds = 86400.0
    timeout: Seconds = 10.0
    allow_hosts: list[str] = Field(default_factory=list)


class DeliveryConfig(StrictModel):
    """`default` applies to callers that sent X-Batch-Deadline (they opted in to deferral); `unrequested` to
    calls a policy rule deferred although the caller asked for nothing: held, so unmodified clients get an
    ordinary ChatCompletion, unless the config says otherwise."""

    default: Literal["hold", "async", "webhook"] = "async"
    unrequested: Literal["hold", "async", "webhook"] = "hold"
    hold_heartbeat: Seconds = 15.0
    max_wait: Seconds = 86400.0
    dedupe_identical_bodies: Seconds = 0.0
    # an SDK's automatic retry (x-stainless-retry-count > 0) of an identical body attaches to the first call's job
    attach_client_retries: bool = True
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)

    def mode_for(self, *, deadline_sent: bool) -> Literal["hold", "async", "webhook"]:
        """The configured delivery of a deferred call whose rule sets none."""
        return self.default if deadline_sent else self.unrequested


class PricingConfig(StrictModel):
    """Prices on top of litellm's map (per-model overrides live in `model_list[].litellm_params`)."""

    # provider -> share of the list price its batch API takes off (0.25 = 25% off); replaces the built-in table
    # (proxy/pricing.py BATCH_DISCOUNTS) for models whose map entry has no batch price
    batch_discounts: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)


class Config(StrictModel):
    """The validated YAML file."""

    model_list: list[ModelDeployment] = Field(min_length=1)
    auth: AuthConfig = Field(default_factory=AuthConfig, json_schema_extra=LIVE)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    batching: BatchKnobs = Field(default_factory=BatchKnobs)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig, json_schema_extra=LIVE)
    policy: PolicyConfig = Field(default_factory=PolicyConfig, json_schema_extra=LIVE)
    pricing: PricingConfig = Field(default_factory=PricingConfig, json_schema_extra=LIVE)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [deployment.model_name for deployment in self.model_list]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model_name must be unique; repeated: {', '.join(duplicates)}")
        return self

    def secret_values(self) -> list[str]:
        """Every secret the file holds, resolved: provider keys, the master and caller keys, webhook secrets."""
        found: list[SecretStr | None] = [d.litellm_params.api_key for d in self.model_list]
        found += [d.litellm_params.azure_ad_token for d in self.model_list]
        found += [self.auth.master_key, self.delivery.webhook.secret]
        for declared in self.auth.keys:
            found += [declared.key, declared.webhook_secret]
        if any(d.litellm_params.provider == "azure" for d in self.model_list):  # what litellm reads if not given
            found += [SecretStr(os.environ[name]) for name in AZURE_SECRET_ENV if os.environ.get(name)]
        return [secret.get_secret_value() for secret in found if secret is not None]

    def deployment(self, model_name: str) -> ModelDeployment | None:
        """The deployment of a model name or of a queue group (`proxy/endpoints.py`); None when unknown."""
        model_name = model_of(model_name)
        for deployment in self.model_list:
            if deployment.model_name == model_name:
                return deployment
        return None

    def batch_knobs(self, model_name: str) -> BatchKnobs:
        deployment = self.deployment(model_name)
        return deployment.batch if deployment and deployment.batch else self.batching


class Settings(BaseSettings):
    """The process environment. Every field can be set as BATCHGATE_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="BATCHGATE_", extra="ignore")

    config: Path = DEFAULT_CONFIG_PATH
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    log_json: bool = False
    data_dir: Path = Path(".batchgate")
    simulator_url: str | None = None
    simulator_port: int = 0
    worker: bool = True
    metrics_port: int = 9090


def load_config(path: Path) -> Config:
    """Read and validate a config file; any problem raises ConfigError naming the file, key path and expectation."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc)) from exc


def describe_validation_error(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s)"]
    for problem in exc.errors():
        location = _key_path(problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(problem["loc"][:-1])
            message = "unknown key" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def _key_path(location: tuple[int | str, ...]) -> str:
    """policy.rules[0].match.models, as the YAML reads."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(location: tuple[int | str, ...]) -> list[str]:
    """The keys the config model accepts at `location` (empty when it cannot be told)."""
    model: type[BaseModel] | None = Config
    for part in location:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = nested_model(field.annotation) if field else None
    return sorted(model.model_fields) if model is not None else []


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (`X`, `X | None`, `list[X]`), None when it holds none."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = nested_model(argument)
        if found is not None:
            return found
    return None
