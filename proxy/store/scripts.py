"""The Lua scripts behind every multi-key write of the job store, registered once per Redis client.

Each script touches the keys of one queue group only (one hash tag, one Cluster slot). Job and batch keys that
a script derives from an id are built from a prefix passed in ARGV, which always carries the same hash tag.

A job's `owner` says who may answer it: "" while it waits in the group's pending queue, a batch id while it
is in that batch, "sync" while the synchronous lane has it. Final writes check the owner, so a late batch line
for a job that was rescued, cancelled or re-queued is ignored, and a job is answered exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
from redis.commands.core import AsyncScript

FINAL = "local function final(s) return s == 'completed' or s == 'failed' or s == 'cancelled' end\n"

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

# KEYS: pending, pending bytes, batch hash, batch jobs set
# ARGV: batch id, max count, byte budget, job key prefix
CLAIM_FOR_BATCH = """
if redis.call('HGET', KEYS[3], 'state') ~= 'building' then return {} end
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local budget = tonumber(ARGV[3])
local taken, bytes = {}, 0
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local size = redis.call('HGET', key, 'size')
  if not size then
    redis.call('ZREM', KEYS[1], id)
  else
    size = tonumber(size)
    if #taken > 0 and bytes + size > budget then break end
    bytes = bytes + size
    redis.call('HSET', key, 'owner', ARGV[1], 'batch', ARGV[1])
    redis.call('ZREM', KEYS[1], id)
    redis.call('SADD', KEYS[4], id)
    taken[#taken + 1] = id
  end
end
if #taken > 0 then
  redis.call('DECRBY', KEYS[2], bytes)
  redis.call('HINCRBY', KEYS[3], 'jobs', #taken)
  redis.call('HINCRBY', KEYS[3], 'bytes', bytes)
end
return taken
"""

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

# ARGV: batch id, job key prefix, job ids…  (marks the batch's jobs `submitted`, in chunks)
MARK_SUBMITTED = (
    FINAL
    + """
local n = 0
for i = 3, #ARGV do
  local key = ARGV[2] .. ARGV[i]
  local cur = redis.call('HMGET', key, 'owner', 'status')
  if cur[1] == ARGV[1] and not final(cur[2]) then
    redis.call('HSET', key, 'status', 'submitted')
    n = n + 1
  end
end
return n
"""
)

# The request bodies of the listed jobs that the batch still owns, as a flat list: id, body, id, body, …
# KEYS: batch hash (names the slot)   ARGV: batch id, job key prefix, job ids…
BODIES = """
local out = {}
for i = 3, #ARGV do
  local row = redis.call('HMGET', ARGV[2] .. ARGV[i], 'owner', 'body')
  if row[1] == ARGV[1] and row[2] then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = row[2]
  end
end
return out
"""

# KEYS: job, deadlines, owner's batch jobs set (or any key of the slot), sync inflight
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
  local base = string.match(KEYS[1], '^(.*):job:')
  local delivery = base .. ':webhook:' .. ARGV[9]
  if redis.call('EXISTS', delivery) == 0 then
    redis.call('HSET', delivery, 'job_id', ARGV[9], 'url', hook[2], 'caller', hook[3] or '', 'state', 'pending',
      'attempts', 0, 'first_at', ARGV[6])
    redis.call('ZADD', base .. ':webhooks:due', ARGV[6], ARGV[9])
  end
end
local info = redis.call('HMGET', KEYS[1], 'caller', 'team', 'model', 'created_at', 'deadline', 'rescued',
  'attempts')
for i = 1, #info do if not info[i] then info[i] = '' end end
return info
"""
)

# Back to the pending queue (a transient batch line, a failed batch).
# KEYS: job, pending, pending bytes, owner's batch jobs set
# ARGV: owner, score, job id, count a batch failure (0|1)
REQUEUE = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] or final(cur[1]) or cur[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'owner', '', 'batch', '')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'batch_failures', 1) end
redis.call('SREM', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('INCRBY', KEYS[3], tonumber(cur[3] or '0'))
return 1
"""
)

# Hand a job to the synchronous lane (a rescue, a transient line with no time for another batch).
# KEYS: job, sync queue, pending, pending bytes
# ARGV: expected owner ('*' any), ready at, job id, lane, rescued (0|1), reason, batch key prefix
TO_SYNC = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] or final(cur[1]) or cur[2] == 'sync' then return 0 end
if ARGV[1] ~= '*' and cur[2] ~= ARGV[1] then return 0 end
if cur[2] == '' then
  if redis.call('ZREM', KEYS[3], ARGV[3]) == 1 then
    redis.call('DECRBY', KEYS[4], tonumber(cur[3] or '0'))
  end
else
  redis.call('SREM', ARGV[7] .. cur[2] .. ':jobs', ARGV[3])
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

# KEYS: job, pending, pending bytes, sync queue, sync inflight, deadlines
# ARGV: job id, finished at, ttl, channel, batch key prefix
# Returns {'missing'} | {'final', status} | {'cancelled', former owner, jobs the batch still owes}
CANCEL = (
    FINAL
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'size')
if not cur[1] then return {'missing'} end
if final(cur[1]) then return {'final', cur[1]} end
local owner = cur[2] or ''
local remaining = 0
if owner == '' then
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    redis.call('DECRBY', KEYS[3], tonumber(cur[3] or '0'))
  end
elseif owner == 'sync' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
else
  local set = ARGV[5] .. owner .. ':jobs'
  redis.call('SREM', set, ARGV[1])
  remaining = redis.call('SCARD', set)
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


@dataclass(frozen=True, slots=True)
class Scripts:
    """Every script, registered on one client (EVALSHA, loaded on first use)."""

    enqueue: AsyncScript
    claim_for_batch: AsyncScript
    create_batch: AsyncScript
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

    @classmethod
    def register(cls, client: redis.asyncio.Redis) -> Scripts:
        def script(text: str) -> AsyncScript:
            registered: AsyncScript = client.register_script(text)
            return registered

        return cls(
            enqueue=script(ENQUEUE),
            claim_for_batch=script(CLAIM_FOR_BATCH),
            create_batch=script(CREATE_BATCH),
            advance_batch=script(ADVANCE_BATCH),
            close_batch=script(CLOSE_BATCH),
            mark_submitted=script(MARK_SUBMITTED),
            bodies=script(BODIES),
            finish=script(FINISH),
            requeue=script(REQUEUE),
            to_sync=script(TO_SYNC),
            claim_sync=script(CLAIM_SYNC),
            reclaim_sync=script(RECLAIM_SYNC),
            release_sync=script(RELEASE_SYNC),
            retry_sync=script(RETRY_SYNC),
            cancel=script(CANCEL),
            renew_lease=script(RENEW_LEASE),
            release_lease=script(RELEASE_LEASE),
        )
