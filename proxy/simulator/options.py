"""Every knob of the simulated upstream, with defaults that suit tests (a batch finishes in about 3 s).

Knobs can be changed at runtime (`PATCH /_sim/config`); a batch copies the knobs in force when it is created,
so a test can make "the next batch" stall, fail lines or finish in 1 s without touching batches already
running.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rate = float  # a probability in [0, 1]


class SimulatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = Field(
        default=None, description="when set, only `Authorization: Bearer <api_key>` is accepted (else 401)"
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
    stream_chunk_chars: int = Field(default=12, ge=1, description="characters per streamed content delta")

    # batches (all durations in seconds of compressed time)
    turnaround_s: float = Field(default=3.0, ge=0, description="batch creation -> completed, end to end")
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

    seed: int | None = Field(default=None, description="seed for the injected-fault dice (None: random)")

    @model_validator(mode="after")
    def _phases_fit(self) -> SimulatorOptions:
        if self.sync_429_rate + self.sync_500_rate > 1:
            raise ValueError("sync_429_rate + sync_500_rate must not exceed 1")
        if self.line_500_rate + self.line_429_rate + self.line_400_rate > 1:
            raise ValueError("line_500_rate + line_429_rate + line_400_rate must not exceed 1")
        return self

    @property
    def processing_s(self) -> float:
        """Time the lines of a batch take to run: the turnaround less the validating and finalizing phases."""
        return max(0.0, self.turnaround_s - self.validating_s - self.finalizing_s)

    def updated(self, changes: dict[str, Any]) -> SimulatorOptions:
        """A validated copy with `changes` applied (unknown knobs and bad values raise ValueError)."""
        return SimulatorOptions.model_validate({**self.model_dump(), **changes})
