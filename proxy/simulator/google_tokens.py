"""The access tokens the simulator's Google token endpoint granted (proxy/simulator/google_oauth.py), and whether
each is still live (the Vertex AI face refuses an expired one)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class IssuedTokens:
    """The access tokens the endpoint granted: token -> when it expires (monotonic seconds)."""

    expiry: dict[str, float] = field(default_factory=dict)

    def grant(self, lifetime: float) -> str:
        token = f"ya29.sim-{secrets.token_hex(16)}"
        self.expiry[token] = time.monotonic() + lifetime
        return token

    def state_of(self, token: str) -> bool | None:
        """True: granted and live; False: granted and expired; None: never granted here."""
        expires = self.expiry.get(token)
        return None if expires is None else time.monotonic() < expires
