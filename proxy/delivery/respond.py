"""How a deferred call is answered at the door: held until its answer, long-polled, or 202 (poll / webhook).

Which delivery applies (first match wins):
1. `X-Batch-Callback-Url: <url>` on the call: webhook to that URL;
2. the policy rule's `delivery` (and `callback_url`), when the rule that matched sets one;
3. the config: `delivery.default` for a caller that sent X-Batch-Deadline, else `delivery.unrequested` (default
   `hold`: an unmodified client whose call a rule deferred gets an ordinary ChatCompletion); webhooks then go to
   `delivery.webhook.default_url`.
How the call itself is answered then depends on `Prefer` (RFC 7240): `respond-async` forces 202 at once;
`wait=N` waits up to N seconds (capped at delivery.max_wait) and answers the ChatCompletion if it is ready, else
202. Without either, `hold` holds the connection (hold.py) and `async`/`webhook` answer 202 at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.auth import Caller
from proxy.delivery.answers import accepted_response, final_response, timeout_response
from proxy.delivery.hold import HeldResponse
from proxy.delivery.preferences import Preferences, applied, parse_prefer
from proxy.delivery.services import DeliveryServices
from proxy.delivery.ssrf import UnsafeCallback, vet_callback
from proxy.delivery.webhooks.signing import secret_for
from proxy.errors import InvalidRequest
from proxy.headers import header_text
from proxy.jobs.service import accept
from proxy.policy.decision import Decision, DeliveryMode
from proxy.policy.facts import DEADLINE_HEADER
from proxy.requests import ChatRequest
from proxy.settings import Config, DeliveryConfig
from proxy.store.holds import HoldMarker
from proxy.store.records import JobView

IDEMPOTENCY_HEADER = "idempotency-key"
RETRY_COUNT_HEADER = "x-stainless-retry-count"  # the official OpenAI SDKs number their automatic retries
CALLBACK_HEADER = "x-batch-callback-url"
CALLBACK_PARAM = "X-Batch-Callback-Url"
HOLD_OUTCOME_TTL = 120  # seconds a failed or timed-out held call waits for the client's automatic retry


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    mode: DeliveryMode
    callback_url: str | None
    source: str  # header | rule | config


async def respond_deferred(
    request: Request,
    runtime: DeliveryServices,
    caller: Caller,
    chat: ChatRequest,
    decision: Decision,
    *,
    snapshot: Config,
    job_id: str | None = None,
) -> Response:
    """`snapshot` is the config the request read at its start (runtime.live.config), used throughout. `job_id`:
    the id a new job gets (default: a fresh one); the accepted job's id is left in `request.state.accepted_job`."""
    config = snapshot.delivery
    preferences = parse_prefer(request.headers.getlist("prefer"))
    deadline_sent = DEADLINE_HEADER in request.headers
    callback_url = header_text(request.headers.get(CALLBACK_HEADER), param=CALLBACK_PARAM)
    plan = await plan_delivery(snapshot, caller, callback_url, decision, deadline_sent)
    identity = attach_identity(
        request.headers.get(IDEMPOTENCY_HEADER), chat, config, retry_count=request.headers.get(RETRY_COUNT_HEADER)
    )
    holding = plan.mode == "hold" and not preferences.stated
    marker = HoldMarker(caller.name, _digest(identity.key or _body_identity(chat)))
    if holding:
        earlier = await _take_hold_outcome(runtime, marker, caller, max_wait=config.max_wait)
        if earlier is not None:
            return earlier
    view = await accept(
        runtime.store,
        snapshot,
        caller,
        chat.body,
        dataclasses.replace(decision, delivery=plan.mode, callback_url=plan.callback_url),
        idempotency_key=identity.key,
        idempotency_ttl=identity.ttl,
        fingerprint=identity.fingerprint,
        attach=identity.attach,
        events=runtime.events,
        turnarounds=runtime.turnarounds,
        group=chat.group,
        job_id=job_id,
    )
    request.state.accepted_job = view.id
    if preferences.respond_async:
        return accepted_response(view, applied(respond_async=True))
    if preferences.wait is not None:
        return await _long_poll(runtime, view, min(preferences.wait, config.max_wait))
    if holding:
        return await hold(runtime, config, view, marker)
    return accepted_response(view)


async def plan_delivery(
    config: Config, caller: Caller, header_url: str | None, decision: Decision, deadline_sent: bool = True
) -> DeliveryPlan:
    """The delivery of one call (precedence in the module docstring); refuses (400) a webhook that cannot be sent."""
    webhook = config.delivery.webhook
    if header_url is not None and header_url.strip():
        plan = DeliveryPlan("webhook", header_url.strip(), "header")
    elif decision.delivery is not None:
        url = (decision.callback_url or webhook.default_url) if decision.delivery == "webhook" else None
        plan = DeliveryPlan(decision.delivery, url, "rule")
    else:
        mode = config.delivery.mode_for(deadline_sent=deadline_sent)
        plan = DeliveryPlan(mode, webhook.default_url if mode == "webhook" else None, "config")
    if plan.mode != "webhook":
        return plan
    if not plan.callback_url:
        raise InvalidRequest(
            "Webhook delivery needs a callback URL: send X-Batch-Callback-Url or set delivery.webhook.default_url.",
            param=CALLBACK_PARAM, code="missing_callback_url",
        )  # fmt: skip
    if secret_for(config, caller.name) is None:
        raise InvalidRequest(
            "No webhook signing secret applies to this API key (auth.keys[].webhook_secret or "
            "delivery.webhook.secret), so batchgate cannot send signed webhooks for it.",
            param=CALLBACK_PARAM, code="webhook_secret_missing",
        )  # fmt: skip
    try:
        await vet_callback(plan.callback_url, webhook.allow_hosts)
    except UnsafeCallback as refused:
        raise InvalidRequest(
            f"The callback URL is refused: {refused}.", param=CALLBACK_PARAM, code="callback_url_refused"
        ) from None
    return plan


@dataclass(frozen=True, slots=True)
class AttachIdentity:
    """How a call finds an earlier job to attach to: `key` (None: it never attaches), kept `ttl` seconds (None:
    the job's retention); `attach` False writes a new job that a later retry may attach to."""

    key: str | None
    ttl: float | None
    fingerprint: str
    attach: bool = True


def attach_identity(
    header: str | None, chat: ChatRequest, config: DeliveryConfig, *, retry_count: str | None = None
) -> AttachIdentity:
    """What makes a retry attach to the first call's job: its Idempotency-Key (with another body: 422); else an
    identical body from the same caller within `delivery.dedupe_identical_bodies` seconds; else, when the
    official SDK marks the call as its retry (`x-stainless-retry-count` > 0, `delivery.attach_client_retries`),
    the latest identical body from the same caller within `delivery.max_wait` (how long a call may be held)."""
    fingerprint = _body_identity(chat)
    if header:
        return AttachIdentity(header, None, fingerprint)
    body_key = "body:" + fingerprint
    if config.dedupe_identical_bodies > 0:
        return AttachIdentity(body_key, max(config.dedupe_identical_bodies, 1.0), fingerprint)
    if config.attach_client_retries:
        return AttachIdentity(body_key, config.max_wait, fingerprint, attach=_is_client_retry(retry_count))
    return AttachIdentity(None, None, fingerprint)


def _is_client_retry(retry_count: str | None) -> bool:
    """The header is a hint: anything but a positive integer means a first attempt."""
    value = (retry_count or "").strip()
    return value.isascii() and value.isdigit() and int(value) > 0


def _body_identity(chat: ChatRequest) -> str:
    return hashlib.sha256(orjson.dumps(chat.body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def _long_poll(runtime: DeliveryServices, view: JobView, wait: float) -> Response:
    header = applied(wait=wait)
    current = view if view.is_final else await runtime.waiters.wait(view.id, wait) or view
    if current.is_final:
        return final_response(current, header)
    return accepted_response(current, header)


async def hold(runtime: DeliveryServices, config: DeliveryConfig, view: JobView, marker: HoldMarker) -> Response:
    """Wait one heartbeat silently; answer then if possible, else hand over to a HeldResponse."""
    waiters = runtime.waiters
    started = time.monotonic()
    first = min(config.hold_heartbeat, config.max_wait)
    current = view if view.is_final else await waiters.wait(view.id, first) or view
    if current.is_final:
        return final_response(current)
    waited = time.monotonic() - started
    if waited >= config.max_wait:
        return timeout_response(current, config.max_wait)

    async def remember(unfinished: JobView) -> None:
        await runtime.store.holds.remember(marker, unfinished.id, ttl=HOLD_OUTCOME_TTL)

    return HeldResponse(
        waiters,
        current,
        heartbeat=config.hold_heartbeat,
        remaining=config.max_wait - waited,
        waited_before=waited,
        on_unfinished=remember,
    )


async def _take_hold_outcome(
    runtime: DeliveryServices, marker: HoldMarker, caller: Caller, *, max_wait: float
) -> Response | None:
    """The retry of a held call that failed or timed out after its 200: the error, now with its real status."""
    job_id = await runtime.store.holds.take(marker)
    if job_id is None:
        return None
    view = await runtime.store.jobs.get(job_id)
    if view is None or view.caller != caller.name:
        return None
    if view.is_final:
        return final_response(view)
    return timeout_response(view, max_wait)


__all__ = ["CALLBACK_HEADER", "IDEMPOTENCY_HEADER", "Preferences", "plan_delivery", "respond_deferred"]
