"""Every Lua script of batchgate (jobs, batches, leases, webhook deliveries, the savings ledger), registered once
per Redis client.

Each script touches the keys of one slot only and receives every key it touches in KEYS, built by store/keys.py
(Redis Cluster routes a script by its keys and refuses keys of different slots); no script builds a key.
tests/unit/test_store_contract.py checks it.

A job's `owner` says who may answer it: "" while it waits in the group's pending queue, a batch id while it
is in that batch, "sync" while the synchronous lane has it. Final writes check the owner, so a late batch line
for a job that was rescued, cancelled or re-queued is ignored, and a job is answered exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
from redis.commands.core import AsyncScript

from proxy.store.records import FINAL_STATUSES


def lua_final(statuses: tuple[str, ...]) -> str:
    """A Lua `final(s)` that is true for exactly these statuses."""
    checks = " or ".join(f"s == '{status}'" for status in statuses)
    return f"local function final(s) return {checks} end\n"


FINAL = lua_final(FINAL_STATUSES)
# The job fields a final write returns (decoded by outcomes.py with JobView.decode_fields).
FINISHED_FIELDS = ("caller", "team", "model", "created_at", "deadline", "rescued", "attempts", "rescue_reason")

# KEYS: job, queue (pending or sync), deadlines, pending bytes
# ARGV: queue score, deadline ('' none), size (added to the pending bytes; 0 for sync), id, field/values…
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[4], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4]) end
local size = tonumber(ARGV[3])
if size > 0 then redis.call('INCRBY', KEYS[4], size) end
return 1
"""

# The candidates were read from the pending queue just before (most urgent first); one taken meanwhile is skipped.
# KEYS: pending, pending bytes, batch hash, batch jobs set, the candidates' job keys…
# ARGV: batch id, byte budget, the candidates' job ids… (in the order of their keys)
CLAIM_FOR_BATCH = """
if redis.call('HGET', KEYS[3], 'state') ~= 'building' then return {} end
local budget = tonumber(ARGV[2])
local taken, bytes = {}, 0
for i = 5, #KEYS do
  local id = ARGV[i - 2]
  if redis.call('ZSCORE', KEYS[1], id) then
    local size = redis.call('HGET', KEYS[i], 'size')
    if not size then
      redis.call('ZREM', KEYS[1], id)
    else
      size = tonumber(size)
      if #taken > 0 and bytes + size > budget then break end
      bytes = bytes + size
      redis.call('HSET', KEYS[i], 'owner', ARGV[1], 'batch', ARGV[1])
      redis.call('ZREM', KEYS[1], id)
      redis.call('SADD', KEYS[4], id)
      taken[#taken + 1] = id
    end
  end
end
if #taken > 0 then
  redis.call('DECRBY', KEYS[2], bytes)
  redis.call('HINCRBY', KEYS[3], 'jobs', #taken)
  redis.call('HINCRBY', KEYS[3], 'bytes', bytes)
end
return taken
"""

# Move jobs a batch still owns into another (building) batch: how a failed batch's innocent jobs are sent again.
# KEYS: from batch jobs set, to batch hash, to batch jobs set, job keys…   ARGV: from id, to id, job ids…
MOVE_JOBS = (
    FINAL
    + """
if redis.call('HGET', KEYS[2], 'state') ~= 'building' then return 0 end
local n, bytes = 0, 0
for i = 4, #KEYS do
  local id = ARGV[i - 1]
  local cur = redis.call('HMGET', KEYS[i], 'owner', 'status', 'size')
  if cur[1] == ARGV[1] and not final(cur[2]) then
    redis.call('HSET', KEYS[i], 'owner', ARGV[2], 'batch', ARGV[2], 'status', 'queued')
    redis.call('SREM', KEYS[1], id)
    redis.call('SADD', KEYS[3], id)
    n = n + 1
    bytes = bytes + tonumber(cur[3] or '0')
  end
end
redis.call('HINCRBY', KEYS[2], 'jobs', n)
redis.call('HINCRBY', KEYS[2], 'bytes', bytes)
return n
"""
)

# Take a queued job out of the pending queue to answer it there and then (its provider cannot take it).
# KEYS: job, pending, pending bytes   ARGV: job id, new owner
HOLD_QUEUED = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] or final(cur[1]) or (cur[2] or '') ~= '' then return 0 end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then redis.call('DECRBY', KEYS[3], tonumber(cur[3] or '0')) end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
"""
)

# KEYS: batch hash, open batches
# ARGV: batch id, next action time, field/values…
CREATE_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: batch hash   ARGV: expected state, field/values…
ADVANCE_BATCH = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# KEYS: batch hash, batch jobs set, open batches   ARGV: batch id, retention seconds, ended at
CLOSE_BATCH = """
redis.call('HSET', KEYS[1], 'state', 'ended', 'ended_at', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: job keys…   ARGV: batch id[, eta, eta_p90]  (marks the batch's jobs `submitted`, in chunks, with its ETA)
MARK_SUBMITTED = (
    FINAL
    + """
local n = 0
for i = 1, #KEYS do
  local cur = redis.call('HMGET', KEYS[i], 'owner', 'status')
  if cur[1] == ARGV[1] and not final(cur[2]) then
    redis.call('HSET', KEYS[i], 'status', 'submitted')
    if ARGV[2] then
      redis.call('HSET', KEYS[i], 'eta', ARGV[2], 'eta_p90', ARGV[3])
    end
    n = n + 1
  end
end
return n
"""
)

# The request bodies of the listed jobs that the batch still owns, as a flat list: id, body, id, body, …
# KEYS: job keys…   ARGV: batch id, the job ids… (in the order of their keys)
BODIES = """
local out = {}
for i = 1, #KEYS do
  local row = redis.call('HMGET', KEYS[i], 'owner', 'body')
  if row[1] == ARGV[1] and row[2] then
    out[#out + 1] = ARGV[i + 1]
    out[#out + 1] = row[2]
  end
end
return out
"""

# KEYS: job, deadlines, owner's batch jobs set (or any key of the slot), sync inflight, the job's webhook delivery,
#       the group's due webhooks
# ARGV: owner, status, response json or '', error json or '', lane, finished at, ttl, channel, job id,
#       upstream request id or ''
# Returns {} when nothing was written, else the fields observers need.
FINISH = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not cur[1] or final(cur[1]) or cur[2] ~= ARGV[1] then return {} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'lane', ARGV[5], 'finished_at', ARGV[6], 'owner', '')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'response', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
if ARGV[10] and ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'upstream_request_id', ARGV[10]) end
redis.call('HDEL', KEYS[1], 'body')
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('ZREM', KEYS[2], ARGV[9])
redis.call('SREM', KEYS[3], ARGV[9])
redis.call('ZREM', KEYS[4], ARGV[9])
redis.call('PUBLISH', ARGV[8], ARGV[2])
local hook = redis.call('HMGET', KEYS[1], 'delivery', 'callback_url', 'caller')
if hook[1] == 'webhook' and hook[2] and hook[2] ~= '' then
  -- the webhook delivery is queued in the same script (same slot): no final write without its delivery
  if redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('HSET', KEYS[5], 'job_id', ARGV[9], 'url', hook[2], 'caller', hook[3] or '', 'state', 'pending',
      'attempts', 0, 'first_at', ARGV[6])
    redis.call('ZADD', KEYS[6], ARGV[6], ARGV[9])
  end
end
local info = redis.call('HMGET', KEYS[1], FINISHED_FIELDS)
for i = 1, #info do if not info[i] then info[i] = '' end end
return info
""".replace("FINISHED_FIELDS", ", ".join(f"'{name}'" for name in FINISHED_FIELDS))
)

# Back to the pending queue (a transient batch line, a failed batch).
# KEYS: job, pending, pending bytes, owner's batch jobs set
# ARGV: owner, score, job id, count a batch failure (0|1), count an attempt (0|1; absent: 1)
REQUEUE = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] or final(cur[1]) or cur[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'owner', '', 'batch', '')
if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'batch_failures', 1) end
redis.call('SREM', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('INCRBY', KEYS[3], tonumber(cur[3] or '0'))
return 1
"""
)

# Hand a job to the synchronous lane (a rescue, a transient line with no time for another batch).
# KEYS: job, sync queue, pending, pending bytes, the expected owner's batch jobs set (any key of the slot for '')
# ARGV: expected owner, ready at, job id, lane, rescued (0|1), reason
# Returns 1 when moved, 0 when the job is missing, final or already in the sync lane, -1 when another owner has it.
TO_SYNC = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] or final(cur[1]) or cur[2] == 'sync' then return 0 end
if cur[2] ~= ARGV[1] then return -1 end
if cur[2] == '' then
  if redis.call('ZREM', KEYS[3], ARGV[3]) == 1 then
    redis.call('DECRBY', KEYS[4], tonumber(cur[3] or '0'))
  end
else
  redis.call('SREM', KEYS[5], ARGV[3])
end
redis.call('HSET', KEYS[1], 'owner', 'sync', 'lane', ARGV[4], 'status', 'queued', 'batch', '')
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'rescued', '1', 'rescue_reason', ARGV[6]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS: sync queue, sync inflight   ARGV: now, claim expires at, max count
CLAIM_SYNC = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return ids
"""

# Claims of dead workers go back to the sync queue.  KEYS: sync queue, sync inflight   ARGV: now
RECLAIM_SYNC = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
return #ids
"""

# A stopping worker hands a call back: ready again now, unless it was answered or rescheduled meanwhile.
# KEYS: sync queue, sync inflight   ARGV: now, job id
RELEASE_SYNC = """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# A synchronous attempt to try again later.
# KEYS: job, sync queue, sync inflight   ARGV: ready at, job id, lane
RETRY_SYNC = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not cur[1] or final(cur[1]) or cur[2] ~= 'sync' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  return 0
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'lane', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)

# KEYS: job, pending, pending bytes, sync queue, sync inflight, deadlines, the expected owner's batch jobs set
# ARGV: job id, finished at, ttl, channel, expected owner
# Returns {'missing'} | {'final', status} | {'moved'} (another owner has it: read it and call again)
#       | {'cancelled', former owner, jobs the batch still owes}
CANCEL = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] then return {'missing'} end
if final(cur[1]) then return {'final', cur[1]} end
local owner = cur[2] or ''
if owner ~= ARGV[5] then return {'moved'} end
local remaining = 0
if owner == '' then
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    redis.call('DECRBY', KEYS[3], tonumber(cur[3] or '0'))
  end
elseif owner == 'sync' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
else
  redis.call('SREM', KEYS[7], ARGV[1])
  remaining = redis.call('SCARD', KEYS[7])
end
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2], 'owner', '')
redis.call('HDEL', KEYS[1], 'body')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'cancelled')
return {'cancelled', owner, remaining}
"""
)

# Leases (single key).  KEYS: lease   ARGV: owner, ttl ms
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# --- webhook deliveries (store/deliveries.py) ---

# KEYS: due   ARGV: now, claimed until, limit
CLAIM_DELIVERIES = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

# KEYS: delivery, due   ARGV: job id, now, status, retention
DELIVERY_SUCCEEDED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'delivered', 'delivered_at', ARGV[2], 'last_status', ARGV[3], 'last_error', '')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: delivery, due   ARGV: job id, next attempt at, status, error
DELIVERY_RETRY = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'next_at', ARGV[2], 'last_status', ARGV[3], 'last_error', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: delivery, due   ARGV: job id, now, status, error, retention
DELIVERY_DEAD = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'dead', 'dead_at', ARGV[2], 'last_status', ARGV[3], 'last_error', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: delivery, due   ARGV: job id, now
DELIVERY_REPLAY = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'first_at', ARGV[2], 'next_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# --- the savings ledger (store/ledger.py) ---

# KEYS: bucket, hours index[, job marker]. ARGV: hour, bucket ttl ms, marker ttl ms, oldest hour kept,
# then field/increment pairs. Returns 0 when the job was already recorded.
LEDGER_RECORD = """
if #KEYS == 3 and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
return 1
"""

# Every script by its name on `Scripts` (the contract test reads them all).
SCRIPTS: dict[str, str] = {
    "enqueue": ENQUEUE,
    "claim_for_batch": CLAIM_FOR_BATCH,
    "create_batch": CREATE_BATCH,
    "move_jobs": MOVE_JOBS,
    "hold_queued": HOLD_QUEUED,
    "advance_batch": ADVANCE_BATCH,
    "close_batch": CLOSE_BATCH,
    "mark_submitted": MARK_SUBMITTED,
    "bodies": BODIES,
    "finish": FINISH,
    "requeue": REQUEUE,
    "to_sync": TO_SYNC,
    "claim_sync": CLAIM_SYNC,
    "reclaim_sync": RECLAIM_SYNC,
    "release_sync": RELEASE_SYNC,
    "retry_sync": RETRY_SYNC,
    "cancel": CANCEL,
    "renew_lease": RENEW_LEASE,
    "release_lease": RELEASE_LEASE,
    "claim_deliveries": CLAIM_DELIVERIES,
    "delivery_succeeded": DELIVERY_SUCCEEDED,
    "delivery_retry": DELIVERY_RETRY,
    "delivery_dead": DELIVERY_DEAD,
    "delivery_replay": DELIVERY_REPLAY,
    "ledger_record": LEDGER_RECORD,
}


@dataclass(frozen=True, slots=True)
class Scripts:
    """Every script, registered on one client (EVALSHA, loaded on first use)."""

    enqueue: AsyncScript
    claim_for_batch: AsyncScript
    create_batch: AsyncScript
    move_jobs: AsyncScript
    hold_queued: AsyncScript
    advance_batch: AsyncScript
    close_batch: AsyncScript
    mark_submitted: AsyncScript
    bodies: AsyncScript
    finish: AsyncScript
    requeue: AsyncScript
    to_sync: AsyncScript
    claim_sync: AsyncScript
    reclaim_sync: AsyncScript
    release_sync: AsyncScript
    retry_sync: AsyncScript
    cancel: AsyncScript
    renew_lease: AsyncScript
    release_lease: AsyncScript
    claim_deliveries: AsyncScript
    delivery_succeeded: AsyncScript
    delivery_retry: AsyncScript
    delivery_dead: AsyncScript
    delivery_replay: AsyncScript
    ledger_record: AsyncScript

    @classmethod
    def register(cls, client: redis.asyncio.Redis) -> Scripts:
        def script(text: str) -> AsyncScript:
            registered: AsyncScript = client.register_script(text)
            return registered

        return cls(**{name: script(text) for name, text in SCRIPTS.items()})
