"""The OAuth token route: the auth service's Doorkeeper endpoint, folded into the rest-api process."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any

import bcrypt
from aiohttp import web

from sandbox.simulator.rest_api.api import RestApi
from sandbox.simulator.rest_api.common import (
    OAUTH_APP_TABLE,
    RAILS_500_HTML,
    TOKEN_TTL,
    AuthUser,
    json_response,
    jwt_encode,
    user_from_docs,
)

log = logging.getLogger("sandbox.rest_api")


# ---------------------------------------------------------------------------------------------------
# OAuth token route (auth service, Doorkeeper)


def oauth_error(error: str, description: str, status: int) -> web.Response:
    return json_response({"error": error, "error_description": description}, status)


INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI "
    "used in the authorization request, or was issued to another client."
)
INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, or "
    "unsupported authentication method."
)


def rails_500(request: web.Request) -> web.Response:
    """Rails' production 500: JSON for JSON clients, the static page otherwise."""
    if "application/json" in request.headers.get("Accept", ""):
        return json_response({"status": 500, "error": "Internal Server Error"}, 500)
    return web.Response(text=RAILS_500_HTML, status=500, content_type="text/html")


async def token_route(api: RestApi, request: web.Request) -> web.StreamResponse:
    """``POST /auth/oauth/token``: password and client_credentials grants (internals §5.2)."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        params: dict[str, str] = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    else:
        params = {k: str(v) for k, v in (await request.post()).items()}
    grant = params.get("grant_type", "")
    if grant not in ("password", "client_credentials"):
        return oauth_error(
            "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.", 400
        )
    try:
        authority = await api.authority_for(request)
        apps = await api.db.find_by(OAUTH_APP_TABLE, "uid", params.get("client_id", ""))
        app = apps[0] if apps else None
        if app is None or (authority is not None and app.get("owner_id") not in (None, authority.get("id"))):
            return oauth_error("invalid_client", INVALID_CLIENT, 401)
        if grant == "client_credentials":
            stored = app.get("secret")
            if stored is not None and not hmac.compare_digest(str(stored), params.get("client_secret", "")):
                return oauth_error("invalid_client", INVALID_CLIENT, 401)
            user = AuthUser(
                id=str(app["id"]),
                name=str(app.get("name") or ""),
                email="",
                domain=str((authority or {}).get("domain", "")),
                admin=False,
                support=False,
                scope=tuple(str(app.get("scopes") or "public").split()),
                via="bearer",
            )
        else:
            if authority is None:
                return oauth_error("invalid_grant", INVALID_GRANT, 400)
            candidates = await api.db.find_by("user", "email", params.get("username", "").lower())
            user_doc = next((u for u in candidates if u.get("authority_id") == authority.get("id")), None)
            digest = str((user_doc or {}).get("password_digest") or "")
            password = params.get("password", "")
            if user_doc is None or not digest or not bcrypt.checkpw(password.encode(), digest.encode()):
                return oauth_error("invalid_grant", INVALID_GRANT, 400)
            scope = tuple(params.get("scope", "public").split()) or ("public",)
            user = user_from_docs(user_doc, str(authority.get("domain", "")), scope, "bearer")
    except Exception as e:
        log.warning("oauth token: database failure (%s)", type(e).__name__)
        return rails_500(request)
    now = int(time.time())
    token = jwt_encode(user.jwt_claims(now), api.config.jwt_secret)
    reply: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL,
        "scope": " ".join(user.scope),
        "created_at": now,
    }
    if grant == "password":
        reply["refresh_token"] = secrets.token_urlsafe(32)
    return json_response(reply)
