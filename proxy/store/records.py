"""What the job store keeps about a job and a batch, decoded from their Redis hashes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

JobStatus = Literal["queued", "submitted", "completed", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "submitted", "completed", "failed", "cancelled")
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
BatchStage = Literal["building", "uploaded", "submitted", "ended"]
SYNC_OWNER = "sync"


def decoded(value: object) -> str:
    """A Redis reply as text (the client returns bytes; typing allows str too)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def raw_hash(value: object) -> dict[bytes, bytes]:
    """An HGETALL reply with bytes keys and values."""
    if not isinstance(value, dict):
        return {}
    return {
        k if isinstance(k, bytes) else str(k).encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in value.items()
    }


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
    max_wait: float | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def decode(cls, raw: Mapping[bytes, bytes]) -> JobView:
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
            max_wait=_number(raw, "max_wait"),
        )


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
    submitted_at: float | None
    jobs_marked: bool
    poll_interval: float
    total: int
    done: int
    cancel_requested: bool

    @property
    def progress(self) -> float:
        """Share of the batch's lines the provider reports finished (0 when unknown)."""
        return self.done / self.total if self.total else 0.0

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
            submitted_at=_number(raw, "submitted_at"),
            jobs_marked=_text(raw, "jobs_marked") == "1",
            poll_interval=_number(raw, "poll_interval") or 0.0,
            total=int(_text(raw, "total", "0") or 0),
            done=int(_text(raw, "done", "0") or 0),
            cancel_requested=_text(raw, "cancel_requested") == "1",
        )
