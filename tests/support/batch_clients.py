"""Helpers for tests that drive a batch adapter (proxy/providers/base.py's BatchClient) directly: its input as an
async iterable, a batch waited on until it ends, its result lines gathered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from proxy.providers.base import BatchClient, BatchInfo, ResultLine
from tests.support.waiting import wait_until


async def pairs(items: list[tuple[str, dict[str, Any]]]) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
    """`(custom_id, body)` pairs as the async iterable `prepare` takes."""
    for item in items:
        yield item


async def until_ended(client: BatchClient, batch_id: str, within: float = 20) -> BatchInfo:
    """The batch once its state is terminal (AssertionError after `within` seconds)."""

    async def ended() -> BatchInfo | None:
        info = await client.retrieve(batch_id)
        return info if info.state.is_terminal else None

    return await wait_until(ended, timeout=within, what=f"batch {batch_id} ending")


async def lines_of(client: BatchClient, info: BatchInfo) -> list[ResultLine]:
    """Every result line of an ended batch."""
    return [line async for line in client.results(info)]
