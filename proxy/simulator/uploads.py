"""A multipart/form-data upload streamed straight to disk (a 200 MB file never sits in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from proxy.errors import InvalidRequest, PayloadTooLarge

MAX_FIELD_BYTES = 4096


@dataclass(slots=True)
class Upload:
    """The form's plain fields and, when a file part was sent, its name and size (written to `path`)."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0


@dataclass(slots=True)
class _PartState:
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    value: bytearray = field(default_factory=bytearray)
    sink: IO[bytes] | None = None


class _Receiver:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.part = _PartState()

    def on_part_begin(self) -> None:
        self.part = _PartState()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.part.header_field.decode("latin-1").lower()] = bytes(self.part.header_value)
        self.part.header_field.clear()
        self.part.header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.part.headers.get("content-disposition", b""))
        self.part.name = params.get(b"name", b"").decode()
        filename = params.get(b"filename")
        if filename is not None and self.part.name == "file":
            if self.upload.filename is not None:
                raise InvalidRequest("Only one file may be uploaded.", param="file")
            self.upload.filename = filename.decode(errors="replace")
            self.part.sink = self.path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.sink is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise PayloadTooLarge(f"File is too large: the limit is {self.max_bytes} bytes.", param="file")
            self.part.sink.write(data[start:end])
        else:
            self.part.value += data[start:end]
            if len(self.part.value) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"Form field {self.part.name!r} is too long.", param=self.part.name)

    def on_part_end(self) -> None:
        if self.part.sink is not None:
            self.part.sink.close()
            self.part.sink = None
        elif self.part.name:
            self.upload.fields[self.part.name] = self.part.value.decode(errors="replace")

    def close(self) -> None:
        if self.part.sink is not None:
            self.part.sink.close()


async def receive_upload(content_type: str | None, body: AsyncIterator[bytes], path: Path, *, max_bytes: int) -> Upload:
    """Parse a multipart body, writing the `file` part to `path`; raises InvalidRequest on a bad form."""
    media_type, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Expected a multipart/form-data body with a boundary.")
    receiver = _Receiver(path, max_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors
        raise InvalidRequest(f"Malformed multipart body: {exc}") from exc
    finally:
        receiver.close()
    return receiver.upload
