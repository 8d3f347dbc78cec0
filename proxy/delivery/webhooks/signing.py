"""Standard Webhooks signatures (https://www.standardwebhooks.com/) and the secret that applies to a caller.

`webhook-signature` = `v1,` + base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}")), where the key
is the secret without its `whsec_` prefix, base64-decoded (what the `standardwebhooks` libraries expect).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from proxy.settings import Config

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError when it is not valid base64."""
    try:
        encoded = secret.removeprefix(SECRET_PREFIX)
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)  # padding optional
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def secret_for(config: Config, caller: str) -> str | None:
    """The caller key's own `webhook_secret`, else `delivery.webhook.secret`; None when neither is set or valid."""
    for declared in config.auth.keys:
        if declared.name == caller and declared.webhook_secret is not None:
            return _usable(declared.webhook_secret.get_secret_value())
    fallback = config.delivery.webhook.secret
    return _usable(fallback.get_secret_value()) if fallback is not None else None


def _usable(secret: str) -> str | None:
    try:
        secret_key(secret)
    except ValueError:
        return None
    return secret
