"""Stored files (batch inputs, outputs and error files) on disk in a private temporary directory."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FILE_TTL_S = 30 * 24 * 3600  # OpenAI: batch files expire after 30 days unless expires_after says otherwise
MIN_EXPIRES_AFTER_S = 3600
MAX_EXPIRES_AFTER_S = 2_592_000


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path
    expires_after_s: int | None = None  # set by the uploader (expires_after) or the batch (output_expires_after)

    def expires_at(self, default_ttl_s: int | None) -> int | None:
        ttl = self.expires_after_s if self.expires_after_s is not None else default_ttl_s
        return None if ttl is None else self.created_at + ttl

    def as_openai(self, default_ttl_s: int | None = FILE_TTL_S) -> dict[str, Any]:
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at(default_ttl_s),
            "status": "processed",
            "status_details": None,
        }


def expires_after_seconds(anchor: Any, seconds: Any, *, param: str) -> int:
    """Validate an `expires_after` pair (anchor "created_at", 3600..2592000 s); ValueError names the fault."""
    if anchor != "created_at":
        raise ValueError(f"Invalid value for '{param}.anchor': only 'created_at' is supported.")
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid type for '{param}.seconds': expected an integer.") from None
    if isinstance(seconds, bool) or not MIN_EXPIRES_AFTER_S <= value <= MAX_EXPIRES_AFTER_S:
        raise ValueError(
            f"Invalid '{param}.seconds': expected an integer from {MIN_EXPIRES_AFTER_S} to {MAX_EXPIRES_AFTER_S}."
        )
    return value


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


class FileStore:
    """Files by id; the directory is created on first use and removed by `close`. A file with an explicit
    expiry (`expires_after_s`) is gone once the clock passes it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._directory: Path | None = None
        self._files: dict[str, FileRecord] = {}

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="batchgate-sim-"))
        return self._directory

    def new_path(self, file_id: str) -> Path:
        return self.directory / file_id

    def register(self, file_id: str, *, filename: str, purpose: str, expires_after_s: int | None = None) -> FileRecord:
        path = self.new_path(file_id)
        record = FileRecord(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=path.stat().st_size,
            created_at=int(self._clock()),
            path=path,
            expires_after_s=expires_after_s,
        )
        self._files[file_id] = record
        return record

    def writer(self, *, filename: str, purpose: str, expires_after_s: int | None = None) -> JsonlWriter:
        return JsonlWriter(self, filename=filename, purpose=purpose, expires_after_s=expires_after_s)

    def get(self, file_id: str) -> FileRecord | None:
        record = self._files.get(file_id)
        if record is None or record.expires_after_s is None:
            return record
        if self._clock() >= record.created_at + record.expires_after_s:
            self.delete(file_id)
            return None
        return record

    def count_without_expiry(self, purpose: str) -> int:
        return sum(1 for record in self._files.values() if record.purpose == purpose and record.expires_after_s is None)

    def delete(self, file_id: str) -> bool:
        record = self._files.pop(file_id, None)
        if record is None:
            return False
        record.path.unlink(missing_ok=True)
        return True

    def all(self) -> list[FileRecord]:
        return [record for file_id in list(self._files) if (record := self.get(file_id)) is not None]

    def close(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self._files.clear()


class JsonlWriter:
    """Writes lines to a new stored file, created on the first line (no line, no file)."""

    def __init__(self, store: FileStore, *, filename: str, purpose: str, expires_after_s: int | None) -> None:
        self._store = store
        self._filename = filename
        self._purpose = purpose
        self._expires_after_s = expires_after_s
        self._file_id: str | None = None
        self._handle: IO[bytes] | None = None

    def write(self, line: bytes) -> None:
        if self._handle is None:
            self._file_id = new_file_id()
            self._handle = self._store.new_path(self._file_id).open("wb")
        self._handle.write(line)
        self._handle.write(b"\n")

    def finish(self) -> str | None:
        """Close and register the file; its id, or None when nothing was written."""
        if self._handle is None or self._file_id is None:
            return None
        self._handle.close()
        return self._store.register(
            self._file_id, filename=self._filename, purpose=self._purpose, expires_after_s=self._expires_after_s
        ).id
