"""The HTTP clients litellm caches for itself, closed with the event loop that made them.

litellm keeps one client per event loop in its own cache (`litellm.in_memory_llm_clients_cache`, keys ending in
the loop's id) and never closes it: when that loop ends (the API or a worker stopping; every app a test starts),
the client's connections stay open until the garbage collector finds them, unclosed. The providers close this
loop's clients when they close.
"""

from __future__ import annotations

import asyncio
import logging
import sys

log = logging.getLogger("batchgate.providers.litellm")


async def close_cached_clients() -> None:
    """Close and forget the clients litellm cached for the running loop; nothing to do if litellm is not loaded."""
    litellm = sys.modules.get("litellm")
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if not isinstance(entries, dict):
        return
    suffix = f"-{id(asyncio.get_running_loop())}"
    for key in [key for key in entries if isinstance(key, str) and key.endswith(suffix)]:
        client = entries.pop(key, None)
        getattr(cache, "ttl_dict", {}).pop(key, None)
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:  # already closed, or half built: it is dropped from the cache either way
            log.debug("closing a cached litellm client failed", exc_info=True)
