"""The job hash and the batch hash: each encoded and decoded here and nowhere else.

`encode_new_job`, `JobView.decode` / `JobView.decode_fields` (a partial HMGET) are the job hash's codec;
`BatchRecord.new_fields`, `BatchRecord.encode_fields` and `BatchRecord.decode` the batch hash's. The Lua scripts
(store/scripts.py) write the few fields a state change sets; `FINAL_STATUSES` is the one list of final job
statuses, and the scripts' `final()` check is generated from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

JobStatus = Literal["queued", "submitted", "completed", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "submitted", "completed", "failed", "cancelled")
FINAL_STATUSES: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")  # ordered: the Lua text is stable
BatchStage = Literal["building", "uploaded", "submitted", "ended"]
SYNC_OWNER = "sync"


def decoded(value: object) -> str:
    """A Redis reply as text (the client returns bytes; typing allows str too)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def raw_hash(value: object) -> dict[bytes, bytes]:
    """An HGETALL reply with bytes keys and values."""
    if not isinstance(value, dict):
        return {}
    return {_raw(k): _raw(v) for k, v in value.items()}


def _raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(raw: Mapping[bytes, bytes], name: str, default: str = "") -> str:
    value = raw.get(name.encode())
    return value.decode() if value is not None else default


def _number(raw: Mapping[bytes, bytes], name: str) -> float | None:
    value = raw.get(name.encode())
    return float(value) if value else None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A deferred call accepted by the API, before it is written."""

    caller: str
    team: str
    model: str
    body: Mapping[str, Any]
    lane: str = "batch"
    deadline: float | None = None
    delivery: str = "async"
    callback_url: str | None = None
    max_wait: float | None = None  # the policy rule's, for this job's flush; None: the queue's
    eta: float | None = None  # when its batch is expected to end (unix seconds): median, and 90th percentile
    eta_p90: float | None = None
    venue: str | None = None  # the declared venue (config `policy.venues`) it is sent on; its price rule applies


def encode_new_job(
    job: NewJob, *, body: bytes, created_at: float, size: int, tokens: int = 0
) -> list[str | bytes | float | int]:
    """The field/value pairs of a new job's hash (the enqueue script adds `id`); `tokens`: its line's estimated
    prompt tokens (proxy/token_estimate.py)."""
    batch_lane = job.lane == "batch"
    return [
        "caller", job.caller, "team", job.team, "model", job.model, "body", body,
        "deadline", "" if job.deadline is None else repr(job.deadline),
        "lane", job.lane, "delivery", job.delivery, "callback_url", job.callback_url or "",
        "created_at", repr(created_at), "attempts", 0, "status", "queued",
        "owner", "" if batch_lane else SYNC_OWNER, "size", size, "rescued", 0,
        "max_wait", "" if job.max_wait is None else repr(job.max_wait), "tokens", tokens,
        "eta", "" if job.eta is None else repr(job.eta), "eta_p90", "" if job.eta_p90 is None else repr(job.eta_p90),
        "venue", job.venue or "",
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobView:
    """A stored job. `response` is the provider's chat.completion as raw JSON bytes (never re-encoded)."""

    id: str
    status: JobStatus
    model: str
    caller: str
    team: str
    created_at: float
    deadline: float | None
    lane: str
    delivery: str
    callback_url: str | None
    owner: str
    batch: str | None
    attempts: int
    batch_failures: int
    rescued: bool
    rescue_reason: str | None
    finished_at: float | None
    response: bytes | None
    error: dict[str, Any] | None
    upstream_request_id: str | None = None
    max_wait: float | None = None
    eta: float | None = None
    eta_p90: float | None = None
    venue: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def decode_fields(cls, names: Sequence[str], values: Sequence[object]) -> JobView | None:
        """A job from an HMGET of `names` (the fields not read take their defaults); None when none exists."""
        raw = {name.encode(): _raw(value) for name, value in zip(names, values, strict=True) if value is not None}
        return cls.decode(raw) if raw else None

    @classmethod
    def decode(cls, raw: Mapping[bytes, bytes]) -> JobView:
        """A job from its whole hash (HGETALL)."""
        error = raw.get(b"error")
        status = _text(raw, "status", "queued")
        return cls(
            id=_text(raw, "id"),
            status=status if status in JOB_STATUSES else "queued",  # type: ignore[arg-type,unused-ignore]
            model=_text(raw, "model"),
            caller=_text(raw, "caller"),
            team=_text(raw, "team"),
            created_at=_number(raw, "created_at") or 0.0,
            deadline=_number(raw, "deadline"),
            lane=_text(raw, "lane", "batch"),
            delivery=_text(raw, "delivery", "async"),
            callback_url=_text(raw, "callback_url") or None,
            owner=_text(raw, "owner"),
            batch=_text(raw, "batch") or None,
            attempts=int(_text(raw, "attempts", "0") or 0),
            batch_failures=int(_text(raw, "batch_failures", "0") or 0),
            rescued=_text(raw, "rescued") == "1",
            rescue_reason=_text(raw, "rescue_reason") or None,
            finished_at=_number(raw, "finished_at"),
            response=raw.get(b"response"),
            error=orjson.loads(error) if error else None,
            upstream_request_id=_text(raw, "upstream_request_id") or None,
            max_wait=_number(raw, "max_wait"),
            eta=_number(raw, "eta"),
            eta_p90=_number(raw, "eta_p90"),
            venue=_text(raw, "venue") or None,
        )


# BatchRecord attribute -> batch hash field, where they differ
_BATCH_FIELD_NAMES = {"size": "bytes"}


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """Our record of one provider batch of a group."""

    id: str
    tag: str
    group: str
    state: BatchStage
    created_at: float
    jobs: int
    size: int
    file_id: str | None
    provider_batch_id: str | None
    provider_state: str | None
    submitted_at: float | None
    jobs_marked: bool
    poll_interval: float
    total: int
    done: int
    lines: int
    cancel_requested: bool
    ended_at: float | None
    tokens: int = 0  # estimated prompt tokens of its input, set when prepared (0: not yet known)

    @property
    def progress(self) -> float | None:
        """Share of the batch's lines the provider reports finished; None when unknown (no total reported)."""
        return self.done / self.total if self.total else None

    @staticmethod
    def new_fields(tag: str, group: str, *, created_at: float) -> list[str | float | int]:
        """The field/value pairs of a new, empty batch in state `building` (the create script adds `id`)."""
        return ["tag", tag, "group", group, "state", "building", "created_at", repr(created_at), "jobs", 0,
                "bytes", 0]  # fmt: skip

    @staticmethod
    def encode_fields(fields: Mapping[str, str | float | int | bool]) -> list[str | int]:
        """Attribute/value pairs (as named on this class) as the hash's field/value pairs.

        Raises ValueError for a name that is not a BatchRecord attribute (a typo would write a field nobody reads).
        """
        flat: list[str | int] = []
        for name, value in fields.items():
            if name not in BatchRecord.__dataclass_fields__ or name == "id":
                raise ValueError(f"not a batch record field: {name!r}")
            if isinstance(value, bool):
                encoded: str | int = "1" if value else "0"
            elif isinstance(value, float):
                encoded = repr(value)
            else:
                encoded = value
            flat.extend((_BATCH_FIELD_NAMES.get(name, name), encoded))
        return flat

    @classmethod
    def decode(cls, raw: Mapping[bytes, bytes]) -> BatchRecord:
        return cls(
            id=_text(raw, "id"),
            tag=_text(raw, "tag"),
            group=_text(raw, "group"),
            state=_text(raw, "state", "building"),  # type: ignore[arg-type]
            created_at=_number(raw, "created_at") or 0.0,
            jobs=int(_text(raw, "jobs", "0") or 0),
            size=int(_text(raw, "bytes", "0") or 0),
            file_id=_text(raw, "file_id") or None,
            provider_batch_id=_text(raw, "provider_batch_id") or None,
            provider_state=_text(raw, "provider_state") or None,
            submitted_at=_number(raw, "submitted_at"),
            jobs_marked=_text(raw, "jobs_marked") == "1",
            poll_interval=_number(raw, "poll_interval") or 0.0,
            total=int(_text(raw, "total", "0") or 0),
            done=int(_text(raw, "done", "0") or 0),
            lines=int(_text(raw, "lines", "0") or 0),
            cancel_requested=_text(raw, "cancel_requested") == "1",
            ended_at=_number(raw, "ended_at"),
            tokens=int(_text(raw, "tokens", "0") or 0),
        )
