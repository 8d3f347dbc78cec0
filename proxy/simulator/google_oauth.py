"""Google's Security Token Service endpoint (`POST /v1/token`, what `https://sts.googleapis.com/v1/token`
answers), so a real Application Default Credentials file (an `external_account` JSON, workload identity
federation, whose `token_url` is the simulator's) is exchanged and refreshed by google-auth as in production.

Wire format (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token): a form-encoded
`grant_type=urn:ietf:params:oauth:grant-type:token-exchange&audience=&scope=&requested_token_type=&subject_token=
&subject_token_type=` answers `{"access_token", "issued_token_type", "token_type": "Bearer", "expires_in"}`; a
missing field answers 400 `{"error": "invalid_request"}`, another grant type `{"error": "unsupported_grant_type"}`.
Each exchange issues a new token living `google_token_lifetime_s`; the Vertex AI face accepts it until then (401
after). `GET /_sim/google-tokens` counts the exchanges (how often clients refreshed).
"""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request, Response

from proxy.simulator.state import simulator_state

JSON = "application/json"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant type
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a token type's name
REQUIRED = ("audience", "subject_token", "subject_token_type", "requested_token_type")

router = APIRouter()


def _oauth_error(code: str, description: str) -> Response:
    body = {"error": code, "error_description": description}
    return Response(orjson.dumps(body), status_code=400, media_type=JSON)


@router.post("/v1/token")
async def token(request: Request) -> Response:
    state = simulator_state(request)
    form = {name: values[0] for name, values in parse_qs((await request.body()).decode()).items() if values}
    if form.get("grant_type") != TOKEN_EXCHANGE:
        return _oauth_error("unsupported_grant_type", f"Invalid grant_type: expected {TOKEN_EXCHANGE}.")
    missing = [name for name in REQUIRED if not form.get(name)]
    if missing:
        return _oauth_error("invalid_request", f"Missing required parameter: {missing[0]}")
    lifetime = state.engine.options.google_token_lifetime_s
    body = {"access_token": state.google_tokens.grant(lifetime), "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer", "expires_in": int(lifetime)}  # fmt: skip
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/_sim/google-tokens")
async def grants(request: Request) -> Response:
    """`{"grants": N}`: the tokens exchanged so far."""
    return Response(orjson.dumps({"grants": len(simulator_state(request).google_tokens.expiry)}), media_type=JSON)
