"""The store owns the schema: only proxy/store/ names a Redis key or talks to Redis, and every Lua script is given
every key it touches in KEYS (Redis Cluster routes a script by its keys; a key built inside a script may live
on another node)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from proxy.store import keys
from proxy.store.records import FINAL_STATUSES
from proxy.store.scripts import FINAL, SCRIPTS, lua_final

PROXY = Path(__file__).resolve().parents[2] / "proxy"
STORE = PROXY / "store"

# What code outside the store may take from store/keys.py: ids and names it hands back to the store or to pub/sub.
KEYS_ALLOWED_OUTSIDE = {
    "tag_of_job",
    "group_tag",
    "new_job_id",
    "tag_of_batch",
    "JOB_ID_PREFIX",
    "WEBHOOK_ID_PREFIX",
    "lease",
    "job_events",
}
# Redis commands (redis-py method names) that only the store may send; `get`/`set`/`delete` are left out because
# dicts, events and HTTP clients have them too: a call on a Redis client is caught by the receiver check below.
REDIS_COMMANDS = {
    "hget", "hmget", "hgetall", "hset", "hsetnx", "hdel", "hincrby", "zadd", "zrem", "zcard", "zscore", "zrange",
    "zrevrange", "zrangebyscore", "zrevrank", "sadd", "srem", "smembers", "scard", "incr", "incrby", "decrby",
    "getdel", "expire", "pexpire", "eval", "evalsha", "register_script", "pipeline", "scan_iter", "keys",
}  # fmt: skip
REDIS_ONLY = {"register_script", "evalsha", "hgetall", "zrangebyscore", "getdel"}  # whatever the receiver
REDIS_RECEIVER = re.compile(r"(^|\.)(redis|redis_client|client)$")
OWN_KEY_PREFIX = f"{keys.PREFIX}:"


TRANSPORT = PROXY / "redis_client.py"  # connects and pipelines; names no key


def _outside_store() -> list[Path]:
    return [path for path in PROXY.rglob("*.py") if STORE not in path.parents and path != TRANSPORT]


def _leaks(path: Path) -> list[str]:
    return _leaks_in(path.read_text(), str(path.relative_to(PROXY.parent)))


def _leaks_in(source: str, name: str) -> list[str]:
    tree = ast.parse(source, filename=name)
    keys_aliases = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "proxy.store"
        for alias in node.names
        if alias.name == "keys"
    }
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module == "proxy.store.keys":
            found += [f"{where} imports keys.{a.name}" for a in node.names if a.name not in KEYS_ALLOWED_OUTSIDE]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in keys_aliases
            and node.attr not in KEYS_ALLOWED_OUTSIDE
        ):
            found.append(f"{where} uses keys.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and OWN_KEY_PREFIX in node.value:
            found.append(f"{where} spells a key: {node.value!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            command = node.func.attr
            on_redis = REDIS_RECEIVER.search(receiver) and command in REDIS_COMMANDS | {"get", "set", "delete"}
            if on_redis or command in REDIS_ONLY:
                found.append(f"{where} sends {command} to Redis ({receiver})")
    return found


def test_only_the_store_names_a_key_or_talks_to_redis() -> None:
    leaks = [leak for path in _outside_store() for leak in _leaks(path)]
    assert leaks == []


def test_the_contract_check_finds_a_leak() -> None:
    sample = (
        "from proxy.store import keys\n"
        "async def peek(client, job_id):\n"
        "    await client.hget(keys.job(job_id), 'owner')\n"
        "    return 'bg:{x}:pending'\n"
    )
    leaks = _leaks_in(sample, "proxy/worker/sample.py")
    assert any("keys.job" in leak for leak in leaks)
    assert any("hget" in leak for leak in leaks)
    assert any("spells a key" in leak for leak in leaks)
    assert _leaks_in("from proxy.store import keys\nlease = keys.lease('t', 'flush')\n", "proxy/x.py") == []


# --- Lua: every key in KEYS -------------------------------------------------------------------------------------

CALL = re.compile(r"redis\.call\(\s*'(?P<command>\w+)'\s*(?:,\s*(?P<first>[^,)]+))?")
KEY_ARGUMENT = re.compile(r"^KEYS\[[^\[\]]+\]$")
NOT_A_KEY = {"PUBLISH"}  # a channel, not a key


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_touches_only_keys_it_was_given(name: str) -> None:
    script = SCRIPTS[name]
    calls = list(CALL.finditer(script))
    assert calls, "no redis.call found: the pattern no longer reads this script"
    for call in calls:
        if call["command"] in NOT_A_KEY:
            continue
        first = (call["first"] or "").strip()
        assert KEY_ARGUMENT.match(first), f"{name}: {call['command']} on {first!r}, not a KEYS entry"
    assert not re.search(r"KEYS\[[^\]]+\]\s*\.\.|\.\.\s*KEYS\[", script), f"{name} builds a key from KEYS"
    assert OWN_KEY_PREFIX not in script
    assert "string.match" not in script


def test_a_script_that_builds_a_key_is_caught() -> None:
    built = "local key = ARGV[2] .. ARGV[3]\nredis.call('HSET', key, 'status', 'submitted')\n"
    call = next(CALL.finditer(built))
    assert not KEY_ARGUMENT.match(call["first"].strip())


def test_the_final_check_is_generated_from_the_one_status_list() -> None:
    assert lua_final(FINAL_STATUSES) == FINAL
    for status in FINAL_STATUSES:
        assert f"'{status}'" in FINAL
    using = [name for name, text in SCRIPTS.items() if "final(" in text]
    assert using  # the scripts that check a final status all start with the generated function
    for name in using:
        assert SCRIPTS[name].startswith(FINAL), name
        assert SCRIPTS[name].count("'completed'") == 1, f"{name} spells a final status by hand"
