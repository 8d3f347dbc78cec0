"""The coalescing transport: writes of one event-loop step leave in one write, in order, before a close."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.write_coalescing import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """Stands for the socket's transport: records what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_in_one_step_leave_as_one_write_after_it() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert inner.writes == []  # held until the step ends
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_of_separate_steps_leave_separately_in_order() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    for chunk in (b"data: 1\n\n", b"data: 2\n\n"):
        transport.write(chunk)
        await asyncio.sleep(0)
    assert inner.writes == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_close_sends_what_is_held_first() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert inner.events == ["write", "close"]
    assert inner.writes == [b"last words"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing more to send
    assert inner.writes == [b"last words"]
