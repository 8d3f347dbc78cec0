"""litellm's own cached HTTP clients are closed with the event loop's providers, not left to the collector."""

from __future__ import annotations

import asyncio

from proxy.providers.litellm_clients import close_cached_clients
from proxy.providers.litellm_completion import import_litellm


async def test_the_clients_litellm_cached_for_this_loop_are_closed_and_forgotten() -> None:
    litellm = import_litellm()
    from litellm.llms.custom_httpx.http_handler import get_async_httpx_client

    here = get_async_httpx_client(llm_provider="anthropic")
    assert get_async_httpx_client(llm_provider="anthropic") is here  # cached, for this loop

    async def on_another_loop() -> object:
        return get_async_httpx_client(llm_provider="anthropic")

    elsewhere = await asyncio.to_thread(asyncio.run, on_another_loop())
    assert elsewhere is not here
    connections, others = here.client, elsewhere.client  # type: ignore[attr-defined]

    await close_cached_clients()

    assert connections.is_closed
    assert get_async_httpx_client(llm_provider="anthropic") is not here  # a new one, should this loop call again
    assert not others.is_closed  # another loop's client is not this loop's to close
    cached = litellm.in_memory_llm_clients_cache.cache_dict
    [other_key] = [key for key, client in cached.items() if client is elsewhere]
    del cached[other_key]  # its loop has ended: tidy up by hand (it never connected)
    await others.aclose()
    await close_cached_clients()


async def test_litellms_module_level_client_made_in_this_loop_is_closed_and_made_again_for_the_next() -> None:
    litellm = import_litellm()
    module_client = litellm.module_level_aclient  # what litellm's streaming paths fall back to
    connections = module_client.client  # read before the close: a closed handler's `.client` makes a new one

    await close_cached_clients()

    assert connections.is_closed
    assert "module_level_aclient" not in vars(litellm)  # not held by the module past its loop
    fresh = litellm.module_level_aclient
    assert fresh is not module_client
    fresh_connections = fresh.client
    assert not fresh_connections.is_closed
    await close_cached_clients()
    assert fresh_connections.is_closed
