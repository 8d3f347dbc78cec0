"""How the API shows a webhook delivery (dead-letter list, replay). Deliveries themselves live in the store
(`proxy/store/deliveries.py`); the sending policy (backoff, give up) is in `deliverer.py`."""

from __future__ import annotations

from typing import Any

from proxy.store.deliveries import Delivery


def delivery_object(delivery: Delivery) -> dict[str, Any]:
    """The `webhook.delivery` object of the dead-letter API."""
    return {
        "id": delivery.job_id,
        "object": "webhook.delivery",
        "webhook_id": delivery.webhook_id,
        "job_id": delivery.job_id,
        "url": delivery.url,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "first_attempt_at": int(delivery.first_at),
        "dead_at": int(delivery.dead_at) if delivery.dead_at is not None else None,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "replays": delivery.replays,
    }
