"""The HTTP clients litellm caches for itself, closed with the event loop that made them.

litellm keeps one client per event loop in its own cache (`litellm.in_memory_llm_clients_cache`, keys ending in
the loop's id) and never closes it: when that loop ends (the API or a worker stopping; every app a test starts),
the client's connections stay open until the garbage collector finds them, unclosed. The providers close this
loop's clients when they close.

One of them is also kept outside that cache: `litellm.module_level_aclient`, the client litellm's streaming paths
(Anthropic's among them) fall back to, made on first use in whatever loop is running and then held by the module
for good. Closing this loop's clients forgets it too when it is one of them, so the next loop gets its own;
otherwise its aiohttp session outlived every loop and was collected unclosed, in another test or at exit.
"""

from __future__ import annotations

import asyncio
import logging
import sys

log = logging.getLogger("batchgate.providers.litellm")
MODULE_CLIENT = "module_level_aclient"  # litellm's lazily made module-level async client


async def close_cached_clients() -> None:
    """Close and forget the clients litellm cached for the running loop; nothing to do if litellm is not loaded."""
    litellm = sys.modules.get("litellm")
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if not isinstance(entries, dict):
        return
    suffix = f"-{id(asyncio.get_running_loop())}"
    module_globals = vars(litellm)
    for key in [key for key in entries if isinstance(key, str) and key.endswith(suffix)]:
        client = entries.pop(key, None)
        getattr(cache, "ttl_dict", {}).pop(key, None)
        if client is not None and module_globals.get(MODULE_CLIENT) is client:
            del module_globals[MODULE_CLIENT]  # made again, in the loop that next asks for it
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:  # already closed, or half built: it is dropped from the cache either way
            log.debug("closing a cached litellm client failed", exc_info=True)
