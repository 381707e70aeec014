"""Security: HTTP basic and API-key authentication of every request, and the `/_security/*` routes."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
from typing import Any

from aiohttp import web

from sandbox.standins.elasticsearch.base import ServerBase
from sandbox.standins.elasticsearch.context import Ctx
from sandbox.standins.elasticsearch.protocol import EsError, parse_time, parsing_error, unsupported, validation_failed
from sandbox.standins.elasticsearch.queries import JsonObj
from sandbox.standins.elasticsearch.storage import ApiKey, _auto_id, _now_ms, _sha256

log = logging.getLogger("sandbox.standins.elasticsearch")


class SecurityRoutes(ServerBase):
    """Authentication and the `/_security/*` routes."""

    # security

    def _challenges(self) -> list[str]:
        basic = 'Basic realm="security" charset="UTF-8"'
        if self.version.major >= 8:
            return [basic, 'Bearer realm="security"', "ApiKey"]
        return [basic, "ApiKey"]

    def _auth_error(self, reason: str, **fields: Any) -> EsError:
        challenges = self._challenges()
        return EsError(
            401,
            "security_exception",
            reason,
            fields={**fields, "header": {"WWW-Authenticate": challenges}},
            headers=[("WWW-Authenticate", c) for c in challenges],
        )

    def _authenticate(self, ctx: Ctx) -> None:
        if not self.security:
            return
        uri = ctx.request.raw_path
        header = ctx.request.headers.get("Authorization", "")
        scheme, _, credentials = header.strip().partition(" ")
        if not header:
            raise self._auth_error(f"missing authentication credentials for REST request [{uri}]")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = None
        if scheme.lower() == "basic":
            if decoded is None or ":" not in decoded:
                raise self._auth_error(f"missing authentication credentials for REST request [{uri}]")
            user, _, password = decoded.partition(":")
            if user == "elastic" and self.store.check_password(password):
                ctx.user = user
                return
            raise self._auth_error(f"unable to authenticate user [{user}] for REST request [{uri}]")
        if scheme.lower() == "apikey":
            key_id, _, secret = (decoded or "").partition(":")
            key = self.store.api_keys.get(key_id)
            problem = None
            if key is None:
                problem = f"unable to find apikey with id {key_id}"
            elif key.invalidated:
                problem = f"api key [{key_id}] has been invalidated"
            elif key.expiration_ms is not None and key.expiration_ms < _now_ms():
                problem = "api key is expired"
            elif not hmac.compare_digest(_sha256(key.id, secret), key.key_sha256):
                problem = f"invalid credentials for API key [{key_id}]"
            if problem is None and key is not None:
                ctx.user, ctx.api_key = "elastic", key
                return
            raise self._auth_error(
                "unable to authenticate with provided credentials and anonymous access is not allowed for this request",
                additional_unsuccessful_credentials=f"API key: {problem}",
            )
        raise self._auth_error(
            "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
        )

    def _require_security(self) -> None:
        if not self.security:
            raise EsError(
                500,
                "exception",
                "Security must be explicitly enabled when using a [basic] license. Enable security by setting "
                "[xpack.security.enabled] to [true] in the elasticsearch.yml file and restart the node.",
            )

    # security

    async def h_authenticate(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        body: JsonObj = {
            "username": ctx.user,
            "roles": ["superuser"],
            "full_name": None,
            "email": None,
            "metadata": {"_reserved": True},
            "enabled": True,
        }
        if ctx.api_key is not None:
            body["authentication_realm"] = {"name": "_es_api_key", "type": "_es_api_key"}
            body["lookup_realm"] = {"name": "_es_api_key", "type": "_es_api_key"}
            body["authentication_type"] = "api_key"
            body["api_key"] = {"id": ctx.api_key.id, "name": ctx.api_key.name}
        else:
            body["authentication_realm"] = {"name": "reserved", "type": "reserved"}
            body["lookup_realm"] = {"name": "reserved", "type": "reserved"}
            body["authentication_type"] = "realm"
        return self.ok(ctx, body)

    async def h_password(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        user = p.get("user", ctx.user)
        body = ctx.json_object(required=True)
        password = body.get("password")
        problems = []
        if user != "elastic":
            problems.append("user must exist in order to change password")
        if "password_hash" in body:
            raise unsupported("[password_hash]")
        if not isinstance(password, str):
            problems.append("password must be specified")
        elif len(password) < 6:
            problems.append("passwords must be at least [6] characters long")
        if problems:
            raise validation_failed(problems)
        assert isinstance(password, str)
        self.store.set_password(password)
        self.store.save()
        log.info("password of user [%s] changed", user)
        return self.ok(ctx, {})

    async def h_api_key_create(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        body = ctx.json_object(required=True)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise validation_failed(["api key name is required"])
        expiration_ms = None
        if body.get("expiration") is not None:
            seconds = parse_time(str(body["expiration"]), "expiration")
            expiration_ms = _now_ms() + int(seconds * 1000)
        key_id = _auto_id()
        secret = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        self.store.api_keys[key_id] = ApiKey(key_id, name, _sha256(key_id, secret), _now_ms(), expiration_ms)
        self.store.save()
        log.info("created API key [%s] (%s)", key_id, name)
        out: JsonObj = {"id": key_id, "name": name}
        if expiration_ms is not None:
            out["expiration"] = expiration_ms
        out["api_key"] = secret
        out["encoded"] = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        return self.ok(ctx, out)

    async def h_api_key_delete(self, ctx: Ctx, p: dict[str, str]) -> web.StreamResponse:
        self._require_security()
        body = ctx.json_object(required=True)
        ids = body.get("ids", [body["id"]] if "id" in body else [])
        name = body.get("name")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise parsing_error("[ids] must be an array of strings")
        targets = [k for k in self.store.api_keys.values() if k.id in ids or (name is not None and k.name == name)]
        if not targets and not ids and name is None:
            raise validation_failed(["One of [api key id, api key name, username, realm name] must be specified"])
        done: list[str] = []
        before: list[str] = []
        for key in targets:
            (before if key.invalidated else done).append(key.id)
            key.invalidated = True
        self.store.save()
        return self.ok(ctx, {"invalidated_api_keys": done, "previously_invalidated_api_keys": before, "error_count": 0})
