"""Caller keys: who is calling, and which team they belong to."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from proxy.errors import Unauthorized
from proxy.settings import MASTER_KEY_NAME, Config

MASTER = MASTER_KEY_NAME


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    team: str
    is_master: bool = False


class KeyRing:
    """Resolves a bearer token to a Caller in constant time per configured key."""

    def __init__(self, config: Config, *, fallback_master_key: str | None = None) -> None:
        entries: list[tuple[bytes, Caller]] = []
        master = config.auth.master_key.get_secret_value() if config.auth.master_key else fallback_master_key
        if master:
            entries.append((master.encode(), Caller(name=MASTER, team=MASTER, is_master=True)))
        for declared in config.auth.keys:
            if declared.key is not None:
                entries.append((declared.key.get_secret_value().encode(), Caller(declared.name, declared.team)))
        self._entries = tuple(entries)

    @property
    def empty(self) -> bool:
        return not self._entries

    def caller_for(self, authorization: str | None) -> Caller:
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        presented = token.encode()
        found: Caller | None = None
        for secret, caller in self._entries:
            if hmac.compare_digest(secret, presented) and found is None:
                found = caller
        if found is None:
            raise Unauthorized("Incorrect API key provided.")
        return found


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
