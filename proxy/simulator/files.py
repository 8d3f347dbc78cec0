"""Stored files (batch inputs, outputs and error files) on disk in a private temporary directory."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FILE_TTL_S = 30 * 24 * 3600
EXPIRY_RANGE_S = (3600, 30 * 24 * 3600)  # what OpenAI takes as expires_after.seconds


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path
    expires_after: int | None = None  # seconds after created_at, as the upload or its batch asked; None: not set

    def as_openai(self) -> dict[str, Any]:
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.created_at + (self.expires_after or FILE_TTL_S),
            "status": "processed",
            "status_details": None,
        }


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


class FileStore:
    """Files by id; the directory is created on first use and removed by `close`."""

    def __init__(self) -> None:
        self._directory: Path | None = None
        self._files: dict[str, FileRecord] = {}

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="batchgate-sim-"))
        return self._directory

    def new_path(self, file_id: str) -> Path:
        return self.directory / file_id

    def register(self, file_id: str, *, filename: str, purpose: str, expires_after: int | None = None) -> FileRecord:
        path = self.new_path(file_id)
        record = FileRecord(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=path.stat().st_size,
            created_at=int(time.time()),
            path=path,
            expires_after=expires_after,
        )
        self._files[file_id] = record
        return record

    def writer(self, *, filename: str, purpose: str, expires_after: int | None = None) -> JsonlWriter:
        return JsonlWriter(self, filename=filename, purpose=purpose, expires_after=expires_after)

    def get(self, file_id: str) -> FileRecord | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        record = self._files.pop(file_id, None)
        if record is None:
            return False
        record.path.unlink(missing_ok=True)
        return True

    def all(self) -> list[FileRecord]:
        return list(self._files.values())

    def close(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self._files.clear()


class JsonlWriter:
    """Writes lines to a new stored file, created on the first line (no line, no file)."""

    def __init__(self, store: FileStore, *, filename: str, purpose: str, expires_after: int | None = None) -> None:
        self._store = store
        self._expires_after = expires_after
        self._filename = filename
        self._purpose = purpose
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
            self._file_id, filename=self._filename, purpose=self._purpose, expires_after=self._expires_after
        ).id


def expiry_seconds(anchor: Any, seconds: Any, *, param: str) -> int | None:
    """An `expires_after` as OpenAI takes it (anchor `created_at`, 3600..2592000 seconds), or None when neither
    part was sent; ValueError naming `param` otherwise."""
    if anchor is None and seconds is None:
        return None
    low, high = EXPIRY_RANGE_S
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        value = -1
    if anchor != "created_at" or isinstance(seconds, bool) or not low <= value <= high:
        raise ValueError(f"'{param}' must be {{anchor: 'created_at', seconds: {low}..{high}}}.")
    return value
