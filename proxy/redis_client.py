"""The Redis client for a URL: one server (`redis://`, `rediss://`) or a Redis Cluster (`redis+cluster://`,
`rediss+cluster://`), and a pipeline that carries Lua script calls safely on either.

A cluster URL names one or more seed nodes, comma-separated: `redis+cluster://[user:password@]host:port[,host:port]`.
The client discovers the other nodes, routes each command to the master of its key's slot and follows MOVED/ASK
redirections when slots move. batchgate's keys keep every multi-key operation inside one slot (see store/keys.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.redis_pool import IdleClosingPool

POOL_SIZE = 512  # connections per cluster node
# Single server: a plain pool with a high cap. A blocking pool (wait for a free connection) cost ~10% of the
# API's CPU on the accept path (measured: 1,250 vs 2,000 accepted/s); past this cap a request gets a 503.
SINGLE_SERVER_POOL_SIZE = 4096
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
DEFAULT_PORT = 6379
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds a single-server pool keeps a free connection open (limits.redis_idle_timeout)

EncodableArg = str | bytes | int | float


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def connect_redis(url: str, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> redis.asyncio.Redis:
    """A client for `url`: a cluster client for the `+cluster` schemes, else a single-server client.

    A RedisCluster serves the same commands, pipelines, scripts and pub/sub that batchgate uses, so it is
    returned under the `Redis` type the rest of the code is written against. The single-server pool closes a
    connection left unused for `idle_timeout` seconds (redis_pool.py), so it shrinks back after a burst. The
    cluster client keeps its connections: redis-py's ClusterNode hands its free connections out in turn (a
    queue, not a stack), so under any steady traffic none of them is idle, and it has no hook to tell when one
    was last used; its size is bounded by POOL_SIZE per node.
    """
    if is_cluster_url(url):
        return cast(redis.asyncio.Redis, connect_cluster(url))
    # A dropped connection is retried (the first command after a Redis restart meets a dead pooled connection).
    pool = IdleClosingPool.from_url(
        url,
        idle_timeout=idle_timeout,
        max_connections=SINGLE_SERVER_POOL_SIZE,
        health_check_interval=30,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return redis.asyncio.Redis.from_pool(pool)


def connect_cluster(url: str) -> redis.asyncio.RedisCluster:
    parts = urlsplit(url)
    tls = CLUSTER_SCHEMES[parts.scheme.lower()]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0: drop the path from the cluster URL")
    seeds = [_node(entry) for entry in hosts.split(",") if entry]
    if not seeds:
        raise ValueError("the cluster URL names no node: redis+cluster://host:port[,host:port]")
    return redis.asyncio.RedisCluster(
        startup_nodes=seeds,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=tls,
        max_connections=POOL_SIZE,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_keepalive=True,
    )


def _node(entry: str) -> ClusterNode:
    entry = entry.strip()
    if entry.startswith("["):  # an IPv6 address: [::1]:7000
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = entry.partition(":")
    return ClusterNode(host, int(port or DEFAULT_PORT))


async def open_pubsub(client: redis.asyncio.Redis) -> PubSub:
    """A pub/sub connection. A cluster client routes SUBSCRIBE to the master of the channel's slot, so it must
    know the slots first (PUBLISH, even from a script, reaches subscribers on every node)."""
    if isinstance(client, redis.asyncio.RedisCluster):
        await client.initialize()
    return client.pubsub()


class ScriptPipeline:
    """Plain commands and Lua script calls sent together, one round trip per server (per cluster node).

    Scripts go as EVALSHA. A server that does not know a script (a fresh node, a restart, a failover; a cluster
    pipeline does not load scripts the way a single-server pipeline does) answers NOSCRIPT for that call only; the
    call was not run, so it is run again on its own, which loads the script on every master first.
    Queue plain commands on `.commands`.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.commands = client.pipeline(transaction=False)
        self._scripts: list[tuple[int, AsyncScript, Sequence[str], Sequence[EncodableArg]]] = []

    def script(self, script: AsyncScript, *, keys: Sequence[str], args: Sequence[EncodableArg]) -> None:
        self._scripts.append((len(self.commands), script, keys, args))
        # execute_command, not .evalsha(): redis-py's cluster pipeline blocks the method (it cannot know that the
        # script's keys share a slot); the command itself is routed by its first key like any other.
        self.commands.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        results: list[Any] = await self.commands.execute(raise_on_error=False)
        for position, script, keys, args in self._scripts:
            if isinstance(results[position], NoScriptError):
                results[position] = await script(keys=keys, args=args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results
