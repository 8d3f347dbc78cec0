"""Every Redis key batchgate uses, in one place. Only proxy/store/ calls these (tests/unit/test_store_contract.py):
the rest of the code asks the store, and may use only the id helpers, `lease` and `job_events` from here.

Redis Cluster: all state of one queue group (its jobs, pending queue, batches, leases, deadline index) shares
the hash tag `{<group tag>}`, so every multi-key script stays in one slot. A job id embeds its group's tag,
so a key can be derived from an id alone. Keys that span groups (caller indexes, idempotency claims, the
registry of groups, webhook deliveries) carry their own tags and are only written with single-key commands.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "bg"
JOB_ID_PREFIX = "dfr_"
TAG_LENGTH = 10


def group_tag(group: str) -> str:
    """A short stable tag for a queue group (a configured model name)."""
    return hashlib.sha1(group.encode(), usedforsecurity=False).hexdigest()[:TAG_LENGTH]


def new_job_id(group: str) -> str:
    return f"{JOB_ID_PREFIX}{group_tag(group)}_{secrets.token_hex(10)}"


def tag_of_job(job_id: str) -> str:
    """The group tag embedded in a job id; ValueError when the id is not one of ours."""
    if not job_id.startswith(JOB_ID_PREFIX):
        raise ValueError("not a batchgate job id")
    tag, _, rest = job_id.removeprefix(JOB_ID_PREFIX).partition("_")
    if len(tag) != TAG_LENGTH or not rest or not all(c in "0123456789abcdef" for c in tag + rest):
        raise ValueError("not a batchgate job id")
    return tag


def job(job_id: str) -> str:
    return f"{PREFIX}:{{{tag_of_job(job_id)}}}:job:{job_id}"


def pending(tag: str) -> str:
    """ZSET of job ids waiting for a batch, scored by enqueue time."""
    return f"{PREFIX}:{{{tag}}}:pending"


def deadlines(tag: str) -> str:
    """ZSET of unfinished job ids, scored by deadline (epoch seconds)."""
    return f"{PREFIX}:{{{tag}}}:deadlines"


def batch(tag: str, batch_id: str) -> str:
    return f"{PREFIX}:{{{tag}}}:batch:{batch_id}"


def batch_jobs(tag: str, batch_id: str) -> str:
    """SET of the job ids a batch still owes an answer for."""
    return f"{PREFIX}:{{{tag}}}:batch:{batch_id}:jobs"


def open_batches(tag: str) -> str:
    """ZSET of a group's batches not yet ingested, scored by next poll time."""
    return f"{PREFIX}:{{{tag}}}:batches:open"


def token_limit(tag: str) -> str:
    """String: the enqueued-token limit the provider last reported for the group's model (with a TTL)."""
    return f"{PREFIX}:{{{tag}}}:token_limit"


def lease(tag: str, name: str) -> str:
    return f"{PREFIX}:{{{tag}}}:lease:{name}"


def groups() -> str:
    """HASH tag -> group name of every queue group ever used."""
    return f"{PREFIX}:{{registry}}:groups"


def caller_jobs(caller: str) -> str:
    """ZSET of a caller's job ids, scored by creation time."""
    return f"{PREFIX}:{{caller:{caller}}}:jobs"


def all_jobs() -> str:
    """ZSET of every job id, scored by creation time: the master key's listing."""
    return f"{PREFIX}:{{registry}}:jobs"


def idempotency(caller: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{PREFIX}:{{caller:{caller}}}:idem:{digest}"


def job_events(job_id: str) -> str:
    """Pub/sub channel announcing that a job reached a final state."""
    return f"{PREFIX}:{{{tag_of_job(job_id)}}}:events:{job_id}"


# --- deferred-job engine (store/jobs.py, store/batches.py, worker/) ---

BATCH_ID_PREFIX = "bgb_"


def new_batch_id(tag: str) -> str:
    """Our own id for a provider batch of one group (sent as metadata, so a crash can find it again)."""
    return f"{BATCH_ID_PREFIX}{tag}_{secrets.token_hex(8)}"


def tag_of_batch(batch_id: str) -> str:
    """The group tag embedded in one of our batch ids."""
    tag = batch_id.removeprefix(BATCH_ID_PREFIX).partition("_")[0]
    if not batch_id.startswith(BATCH_ID_PREFIX) or len(tag) != TAG_LENGTH:
        raise ValueError("not a batchgate batch id")
    return tag


def pending_bytes(tag: str) -> str:
    """Counter: JSONL bytes of the jobs in `pending(tag)` (the max_bytes flush trigger)."""
    return f"{PREFIX}:{{{tag}}}:pending:bytes"


def sync_queue(tag: str) -> str:
    """ZSET of job ids to be answered by a synchronous call, scored by the time they may start."""
    return f"{PREFIX}:{{{tag}}}:sync"


def sync_inflight(tag: str) -> str:
    """ZSET of job ids a worker is calling synchronously, scored by when that claim expires."""
    return f"{PREFIX}:{{{tag}}}:sync:inflight"


# --- webhook deliveries (store/deliveries.py; the final-write script queues a job's delivery) ---

WEBHOOK_ID_PREFIX = "msg_"


def webhook(job_id: str) -> str:
    """HASH: the webhook delivery of a job (url, state, attempts, times, last outcome)."""
    return f"{PREFIX}:{{{tag_of_job(job_id)}}}:webhook:{job_id}"


def webhooks_due(tag: str) -> str:
    """ZSET of job ids whose webhook delivery is pending, scored by the next attempt time (a claim pushes it on)."""
    return f"{PREFIX}:{{{tag}}}:webhooks:due"


def dead_letters(caller: str) -> str:
    """ZSET of a caller's dead-lettered deliveries (job ids), scored by when they were given up."""
    return f"{PREFIX}:{{caller:{caller}}}:webhooks:dead"


def all_dead_letters() -> str:
    """ZSET of every dead-lettered delivery (job ids), for the master key."""
    return f"{PREFIX}:{{registry}}:webhooks:dead"


def hold_outcome(caller: str, digest: str) -> str:
    """A held call that ended without a ChatCompletion after its 200 status was sent: the job id, for the retry."""
    return f"{PREFIX}:{{caller:{caller}}}:holdend:{digest}"


# --- the savings ledger (store/ledger.py) ---


def ledger_tags() -> str:
    """SET of the group tags that have ledger data."""
    return f"{PREFIX}:{{acct}}:tags"


def ledger_bucket(tag: str, hour: int) -> str:
    """HASH of one group's counters for one hour (`hour` = epoch seconds // 3600)."""
    return f"{PREFIX}:{{{tag}}}:acct:{hour}"


def ledger_hours(tag: str) -> str:
    """ZSET of the hours with data in a group's ledger."""
    return f"{PREFIX}:{{{tag}}}:acct:hours"


def ledger_marker(job_id: str, *, shadow: bool = False, waste: str | None = None) -> str:
    """Set when a job's cost is recorded; in the job's slot, so the job store can set it atomically.
    `waste`: the source (a batch id, a sync call) of a billed line that answered no job, recorded once per source."""
    suffix = ":shadow" if shadow else ""
    if waste is not None:
        suffix += f":waste:{waste}"
    return f"{PREFIX}:{{{tag_of_job(job_id)}}}:acct:done:{job_id}{suffix}"


# --- provider account problems (store/accounts.py) ---


def account_problems() -> str:
    """HASH group name -> JSON of the account problem that stopped batch submission for that group."""
    return f"{PREFIX}:{{accounts}}:problems"


def batch_lines(tag: str, batch_id: str) -> str:
    """LIST of a batch's job ids in the order of its input lines (line n = index n-1): how a validation error
    naming a line finds its job."""
    return f"{PREFIX}:{{{tag}}}:batch:{batch_id}:lines"


def reconciliation() -> str:
    """HASH: the last per-batch reconciliation of recorded against billed usage (see worker/reconcile.py)."""
    return f"{PREFIX}:{{acct}}:reconciliation"


def turnaround(tag: str, band: str) -> str:
    """HASH of a group's learned batch turnaround for one batch-size band (proxy/store/turnarounds.py)."""
    return f"{PREFIX}:{{{tag}}}:turnaround:{band}"


# --- spending budgets (store/budgets.py): one slot, so a reservation across team and key is one script ---


def budget_spent(scope: str, name: str, period: str) -> str:
    """String: integer pico-dollars spent and reserved by a team or caller key (`scope`) in one UTC period
    (`period`: d2026-12-01 or m2026-12); expires after its period."""
    return f"{PREFIX}:{{budgets}}:spent:{scope}:{period}:{name}"


def shadow_calls() -> str:
    """ZSET of recent shadow-mode calls (model, tokens, deadline; no bodies) scored by when each was made, for
    quotes (proxy/store/shadow_calls.py)."""
    return f"{PREFIX}:{{shadow}}:calls"


def budget_hold(hold_id: str) -> str:
    """HASH of one call's reservation (`amount` in pico-dollars, `keys`: the spent keys it added to)."""
    return f"{PREFIX}:{{budgets}}:hold:{hold_id}"
