"""A test double of PlaceOS as its HTTP API shows it, built from the reference documents only.

Sources: ``/work/shared/reference/placeos-internals.md`` ("internals"), ``troubleshooting-backend-failures.md``
("the page") and ``placeos-2026.md`` ("2026"). Where those left a gap, PlaceOS's public source was read
(``PlaceOS/rest-api``, ``PlaceOS/driver``, ``PlaceOS/core``, ``PlaceOS/core-client``, ``place-labs/hound-dog``,
``place-labs/redis_service_manager``, ``stefanwille/crystal-redis``, ``spider-gazelle/action-controller``); each
such place cites repo, path and commit. Nothing here comes from this project's ``exporter/`` or ``sandbox/``.

Its seed data and wire constants are in ``placeos_api_wire.py``, its cluster and WebSocket routes in
``placeos_api_cluster.py`` and ``placeos_api_socket.py`` (mixins).

What it serves (one aiohttp server on 127.0.0.1, port 0, ``url`` attribute):

* rest-api at ``/api/engine/v2`` (internals §5): the health route (§5.1), ``/version``, ``/cluster/versions``,
  ``/api_keys/inspect`` (§5.2), ``/systems`` list with ``X-Total-Count``/``Content-Range``/``Link`` (§4, §5.3),
  ``/systems/:sys/functions/:slug``, ``/systems/:sys/:slug`` (state), ``POST /systems/:sys/:slug/:fn`` (execute,
  §5.3 including the RemoteDriver error bodies), ``/cluster`` and ``/cluster/:core_id`` (§11.1),
  ``/build/monitor`` (2026 §2, era D) and ``/edges/health`` (2026 §2, era D);
* the control WebSocket ``/api/engine/v2/systems/control`` (§5.4): strict requests, unparsable ones get no
  reply, ``ping``→``pong``, bind → success + notify, exec → success with ``value``/``code``, errors with
  ``error_code`` 0-7 / ``msg`` / ``code``;
* the auth service token route ``POST /auth/oauth/token`` (§5.2, Doorkeeper, 2 h JWT) and the triggers health
  route ``GET /api/triggers/v2/`` (§6: always 200 before triggers d8479d3, Redis + PostgreSQL in era D).

Seed: one system ``sys-1`` with one module ``Display_1`` (``mod-1``, status ``connected`` = ``true``, idempotent
getter ``power_state``), one admin+support API key (``API_KEY``), one core (``CORE_ID`` at ``http://core:3000``),
two drivers on that core (Display for ``mod-1``, Lighting for ``mod-2`` which is in no system).

Eras (internals §0, 2026 §1): "A" etcd + RethinkDB + Redis + ES, "B" etcd + PostgreSQL + Redis + ES, "C" Redis
discovery + PostgreSQL + ES, "D" PostgreSQL search, no ES, no search-ingest. ``platform_version`` per era: A
``1.2303.4`` (internals §11 table), B ``2.2310.0``, C ``2.2410.0``; D also ``2.2410.0`` by default because 2026 §1
says no era-D release exists and era D "must be recognised from what the cluster shows, not from a version number
alone" (it shows: ``/cluster/versions`` without ``search_ingest``, rest-api 51faa1a root.cr ``SERVICES``).

Switch at runtime with ``api.set(era="B", failures={"etcd_down": True})`` (see ``FAILURES`` for every switch, its
eras and its parameters; several switches combine; ``reset_knobs=True`` restores default delays; ``clear()``).
``publish_status(name, value)`` plays a driver writing a status (notifies bound sockets unless pub/sub is broken).

Failures reproduced, as PlaceOS's API shows them:

* ``database_down``: every credential fails as ``401 {"error":"unknown X-API-Key"}`` (§5.2: every exception in
  the key lookup becomes that 401), bearer tokens get 500 (§5.2), health 500 (§5.1), triggers health 500 in D.
* ``redis_down``: health 500; functions/state 500 with the production error-handler body ``{}`` (§5.1);
  execute 500 ``{"backtrace":[...],"message":"Socket::ConnectError: Error connecting to 'redis:6379': Connection
  refused"}`` (rest-api systems.cr ``execute`` ``rescue e`` → ``render_error``; message from crystal-redis v2.9.0
  src/redis/socket_wrapper.cr ``"#{ex.class}: #{ex.message}"`` over Crystal's ``Error connecting to 'host:port'``);
  WebSocket bind → ``error_code`` 6 ``could not find module: sys=… mod=…`` (rest-api 76bed72
  websocket/session.cr ``bind`` rescue), exec → 7 ``failed to execute request``; ``/cluster`` 500 in C/D (the
  discovery hash is read from Redis, redis_service_manager node_hash.cr).
* ``redis_pubsub_broken`` (2026 §2): PING fine; era D: bind success only after the 2 s SUBSCRIBE-ack timeout and
  no notify ever (driver 673a7c08 subscriptions.cr ``wait_for_subscribe_ack``/``notify_awaiting``: the first value
  waits for the ack); eras A-C: the first value still arrives (driver v6.7.4 subscriptions.cr ``perform_subscribe``
  reads it with HGET) but later changes do not.
* ``etcd_down`` / ``api_etcd_unreachable`` (A/B; identical API answers, the API cannot tell them apart): health
  500 (§5.1). With ``discovery="fresh"`` (the API process started during the outage, so its hound-dog discovery
  cannot be built): execute 500 ``{"backtrace":[...],"message":"Error connecting to 'etcd:2379': Connection
  refused"}`` (§1.4: crystal-etcd 1.2.5 has no error class, Crystal's connect error propagates; ``style=
  "crystal-etcd-head"`` gives ``Could not connect to etcd endpoint: http://etcd:2379``), ``/cluster`` 500, and the
  WebSocket is dropped right after the 101 (action-controller v5.6.2 base.cr runs ``control`` inside
  ``response.upgrade``; ``Systems.session_manager`` needs the discovery). With ``discovery="cached"`` (the API
  started before the outage) only the health route fails: hound-dog v2.9.0 discovery.cr keeps its node list until
  a watch event arrives.
* ``elasticsearch_down`` (A-C): the systems list 500 ``{}`` (neuroplastic's connect error is unhandled, §5.1);
  health stays 200 (§4: rest-api never checked ES).
* ``core_down``: ``No registered core instances`` (§1.4, §5.3), 500 / ``error_code`` 7; ``/cluster`` ``[]``.
* ``core_stale``: a registered core that does not answer: after the core-client retries (``core_retry_delay``)
  execute 500 ``unexpected failure`` with the IO error naming ``core:3000`` (§5.3); ``/cluster?include_status=
  true`` drops it silently (§11.1), ``include_status=false`` still lists it in A-C and drops it in D (rest-api
  37179a6 also fetches ``load``); ``/cluster/:id`` 500.
* ``driver_raises``: core 203 → ``request failed`` ``module raised: <err>`` with the driver's code (§5.3).
* ``driver_crashloop``: ``/cluster/:id`` shows ``running: false``, ``module_instances: 1``, ``last_exit_code``
  1 and a ``launch_count`` that rises on every look (§11.1, §11.2); execute 500 ``request to core:3000/... failed
  with ERROR: Could not locate module mod-1, ...`` (§11.2 item 3-4; core 9474954 local.cr ``no_module_error``
  text, rendered by Crystal's HTTP::ErrorHandler, inferred).
* ``driver_compile_failed``: the Lighting driver (no module in ``sys-1``) is in ``unavailable_drivers`` (§11.1,
  §11.3) and not loaded; user paths are unaffected.
* ``driver_never_compiled``: the Display driver never compiled: no ``interface/mod-1`` (functions 404 ``metadata
  not found``, execute 404 ``module not found``/``could not find module``), empty status hash (bind success, no
  notify), listed in ``unavailable_drivers``.
* ``module_not_loaded``: core answers 404 ``{"error":"module mod-1 not loaded",...}`` (A-C, core command.cr) or
  ``Could not locate module mod-1, it is running but not loaded. Check driver is compiled.`` (D, §11.2), so
  execute 500 ``request to core:3000/api/core/v1/command/mod-1/execute?user_id=user-1 failed with <body>``
  (core-client v1.0.6 error.cr ``from_response``; the path carries ``?user_id=``); ``/cluster/:id`` lists no
  Display driver (2026 §2 "modules not loaded after a core restart").
* ``api_down``: the load balancer answers every ``/api/engine/v2`` request (WebSocket upgrade included) with an
  nginx 502/503/504 HTML page; ``/auth`` and ``/api/triggers/v2`` are other upstreams and keep working.
* ``key_unknown`` (401 ``unknown X-API-Key`` with health 200), ``key_forbidden`` (scope ``guest``, plain user:
  403 with an empty body, rest-api application.cr ``resource_access_forbidden : Nil``; ``/api_keys/inspect`` has no
  scope check and stays 200), ``system_not_found``/``module_not_found`` (404 bodies of §5.3; a bind to a module
  that does not resolve is answered ``success`` and never notified, driver indirect_subscription.cr).
* ``build_service_unreachable`` (D, rest-api #413): ``/build/monitor`` 500 text ``Call to Build service endpoint
  failed with error  Error connecting to 'build.placeos.run:443': Connection refused`` (core 3351920
  driver_store.cr ``monitor_jobs``; rest-api build_monitor.cr renders core's text for codes >= 500).

Slow answers are delays you set: ``core_retry_delay`` (core-client retries, up to minutes in PlaceOS, §5.3),
``proxy_delay`` (the load balancer), ``health_delay`` (the health route's backend timeouts), and
``subscribe_ack_timeout`` (era D pub/sub). Not modelled: edges other than ``/edges/health``, ``_TRIGGER_`` binds,
debug sessions, module-id routes (``/modules/...``), Host-header checks on API keys (§5.2 lists conflicting
readings).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from placeos_api_cluster import ClusterRoutes
from placeos_api_socket import ControlSocket
from placeos_api_wire import (
    _AB,
    _ABC,
    _CRYSTAL_BACKTRACE,
    _INTERFACE,
    _KNOBS,
    _NGINX_REASONS,
    _SECURITY,
    _STATUS_FOR_CODE,
    API_BASE,
    API_KEY,
    CORE_HOST,
    CORE_PORT,
    DRIVER_COMMIT,
    ERAS,
    ETCD_HOSTPORT,
    FAILURES,
    MODULE_ID,
    MODULE_INDEX,
    MODULE_NAME,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    OTHER_MODULE_ID,
    PLATFORM_VERSIONS,
    REDIS_HOSTPORT,
    REST_API_COMMITS,
    SYSTEM_ID,
    SYSTEM_NAME,
    USER_EMAIL,
    USER_ID,
    USER_NAME,
    USER_PASSWORD,
    ZONE_ID,
    _b64url,
    _dumps,
    _json,
    _Outcome,
    _Principal,
    _Reply,
    _Session,
    _Unhandled,
    get_parts,
)


class PlaceOSApi(ClusterRoutes, ControlSocket):
    """The PlaceOS HTTP API double. ``async with PlaceOSApi(era="C") as api: api.url``; ``api.set(...)``."""

    def __init__(self, era: str = "C", failures: Mapping[str, Any] | None = None, **knobs: Any) -> None:
        self.era = "C"
        self.failures: dict[str, dict[str, Any]] = {}
        self.knobs: dict[str, Any] = dict(_KNOBS)
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._sessions: set[_Session] = set()
        self._background: set[asyncio.Future[None]] = set()
        self._tokens: dict[str, tuple[_Principal, float]] = {}
        self._launch_count = 1
        self._launch_time = int(time.time())
        self._status: dict[str, dict[str, str]] = {}
        self.set(era=era, failures=failures or {}, **knobs)
        self._reset_status()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> PlaceOSApi:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        b = API_BASE
        r.add_get(f"{b}/", self._health)
        r.add_get(b, self._health)
        r.add_get(f"{b}/version", self._version)
        r.add_get(f"{b}/cluster/versions", self._cluster_versions)
        r.add_get(f"{b}/api_keys/inspect", self._inspect)
        r.add_get(f"{b}/systems", self._systems)
        r.add_get(f"{b}/systems/", self._systems)
        r.add_get(f"{b}/systems/control", self._websocket)
        r.add_get(f"{b}/systems/{{sys_id}}", self._system)
        r.add_get(f"{b}/systems/{{sys_id}}/functions/{{slug}}", self._functions)
        r.add_get(f"{b}/systems/{{sys_id}}/{{slug}}", self._state)
        r.add_post(f"{b}/systems/{{sys_id}}/{{slug}}/{{method}}", self._execute)
        r.add_get(f"{b}/cluster", self._cluster)
        r.add_get(f"{b}/cluster/", self._cluster)
        r.add_get(f"{b}/cluster/{{core_id}}", self._cluster_core)
        r.add_get(f"{b}/build/monitor", self._build_monitor)
        r.add_get(f"{b}/edges/health", self._edges_health)
        r.add_post("/auth/oauth/token", self._oauth_token)
        r.add_get("/api/triggers/v2/", self._triggers_health)
        r.add_get("/api/triggers/v2", self._triggers_health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        for session in list(self._sessions):
            await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PlaceOSApi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + f"{API_BASE}/systems/control"

    # ------------------------------------------------------------------ switches

    def set(
        self,
        era: str | None = None,
        failures: Mapping[str, Any] | None = None,
        *,
        reset_knobs: bool = False,
        **knobs: Any,
    ) -> None:
        """Switch era, replace the failure set (``None`` keeps it), and set knobs (they persist across calls
        unless ``reset_knobs``). Raises on a switch that the era does not have (e.g. ``etcd_down`` in era C,
        ``elasticsearch_down`` in era D). A scenario row: ``set(era, row.switches, reset_knobs=True, **row.knobs)``.
        """
        new_era = era if era is not None else self.era
        if new_era not in ERAS:
            raise ValueError(f"unknown era {new_era!r}")
        new_failures = self.failures if failures is None else self._normalise(failures)
        for name in new_failures:
            eras, _ = FAILURES[name]
            if new_era not in eras:
                raise ValueError(f"failure {name!r} does not exist in era {new_era} (eras {eras})")
        for key in knobs:
            if key not in _KNOBS:
                raise ValueError(f"unknown knob {key!r}")
        self.era = new_era
        self.failures = dict(new_failures)
        if reset_knobs:
            self.knobs = dict(_KNOBS)
        self.knobs.update(knobs)
        self._launch_count = 1

    def clear(self) -> None:
        """No failures, default knobs, the seeded status values (same era)."""
        self.set(failures={}, reset_knobs=True)
        self._reset_status()

    @staticmethod
    def _normalise(failures: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, value in failures.items():
            if name not in FAILURES:
                raise ValueError(f"unknown failure {name!r}")
            if value is False or value is None:
                continue
            params = dict(FAILURES[name][1])
            if isinstance(value, Mapping):
                for key in value:
                    if key not in params:
                        raise ValueError(f"unknown parameter {key!r} for {name!r}")
                params.update(value)
            elif value is not True:
                raise ValueError(f"{name!r} takes True or a mapping of parameters")
            out[name] = params
        return out

    def _on(self, name: str) -> bool:
        return name in self.failures

    def platform_version(self) -> str:
        return self.knobs["platform_version"] or PLATFORM_VERSIONS[self.era]

    def _etcd_failure(self) -> dict[str, Any] | None:
        if self.era not in _AB:
            return None
        return self.failures.get("etcd_down") or self.failures.get("api_etcd_unreachable")

    def _etcd_fresh_failure(self) -> str | None:
        failure = self._etcd_failure()
        if failure is None or failure["discovery"] != "fresh":
            return None
        if failure["style"] == "crystal-etcd-head":  # crystal-etcd HEAD src/etcd/error.cr (internals §1.4)
            return f"Could not connect to etcd endpoint: http://{ETCD_HOSTPORT}"
        return f"Error connecting to '{ETCD_HOSTPORT}': Connection refused"

    @staticmethod
    def redis_error() -> str:
        return f"Socket::ConnectError: Error connecting to '{REDIS_HOSTPORT}': Connection refused"

    # ------------------------------------------------------------------ seeded data

    def _reset_status(self) -> None:
        self._status = {MODULE_ID: {"connected": "true", "power": "false"}, OTHER_MODULE_ID: {"connected": "true"}}

    def _system_exists(self, sys_id: str) -> bool:
        return sys_id == SYSTEM_ID and not self._on("system_not_found")

    def _module_id(self, sys_id: str, name: str, index: int) -> str | None:
        """Redis ``HGET system/<sys> <name>/<index>`` (internals §3.1)."""
        if not self._system_exists(sys_id) or self._on("module_not_found"):
            return None
        return MODULE_ID if (name, index) == (MODULE_NAME, MODULE_INDEX) else None

    def _interface(self, module_id: str) -> Mapping[str, Mapping[str, Any]] | None:
        """Redis ``GET interface/<mod>``: written by the driver on init, so absent if it never compiled."""
        if module_id == MODULE_ID and self._on("driver_never_compiled"):
            return None
        return _INTERFACE

    def _driver_key(self, slug: str, driver_id: str) -> str:
        # internals §11.1: A/B <file slug>_<commit>_<driver_id>; C/D <file slug>_<commit[0..6]>_<arch>
        tail = driver_id if self.era in _AB else "amd64"
        return f"drivers_place_{slug}_cr_{DRIVER_COMMIT}_{tail}"

    def publish_status(self, name: str, value: Any, module_id: str = MODULE_ID) -> None:
        """As a driver does: write ``status/<mod>`` and publish ``status/<mod>/<name>`` (internals §3.1-3.2)."""
        raw = _dumps(value)
        self._status.setdefault(module_id, {})[name] = raw
        if self._on("redis_down") or self._on("redis_pubsub_broken"):
            return
        for session in list(self._sessions):
            for bind_id, sys_id, mod, index, status in list(session.bindings.values()):
                if status == name and self._module_id(sys_id, mod, index) == module_id:
                    task = asyncio.ensure_future(session.send(self._notify(bind_id, sys_id, mod, index, status, raw)))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ responses

    def _unhandled_response(self, request: web.Request, message: str) -> web.Response:
        """action-controller v5.6.2 src/action-controller/error_handler.cr (internals §5.1)."""
        if self.knobs["sg_env"] != "production":
            page = f"<html><head><title>{message}</title></head><body><h1>{message}</h1></body></html>"
            return web.Response(status=500, text=page, content_type="text/html")
        accept = request.headers.get("Accept", "")
        formats = re.split(r",\s*", accept.split(";")[0]) if accept else []
        if "application/json" in formats:
            return web.Response(status=500, text="{}", content_type="application/json")
        return web.Response(status=500, text="", content_type="text/plain")

    def _proxy_page(self) -> web.Response:
        status = int(self.failures["api_down"]["status"])
        title = f"{status} {_NGINX_REASONS.get(status, 'Error')}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
        return web.Response(status=status, text=page, content_type="text/html")

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.startswith(API_BASE) and self._on("api_down"):
            await asyncio.sleep(float(self.knobs["proxy_delay"]))
            return self._proxy_page()
        request_id = request.headers.get("X-Request-ID") or str(uuid.uuid4())
        try:
            response = await handler(request)
        except _Reply as reply:
            response = reply.response
        except _Unhandled as exc:
            response = self._unhandled_response(request, str(exc))
        if request.path.startswith(API_BASE) and not response.prepared:
            response.headers["X-Request-ID"] = request_id
        return response

    # ------------------------------------------------------------------ auth (internals §5.2)

    def _principal_for_key(self) -> _Principal:
        if self._on("key_forbidden"):
            return _Principal(USER_ID, ["guest"], 0, "localhost")
        return _Principal(USER_ID, ["public"], 3, "localhost")

    def _authorize(self, request: web.Request) -> _Principal:
        """rest-api utilities/current-user.cr ``authorize!``."""
        key = request.headers.get("X-API-Key") or request.query.get("api-key") or request.cookies.get("api-key")
        if key is not None:
            # every exception in the key lookup (database down included) becomes this 401
            if self._on("database_down") or self._on("key_unknown") or key != API_KEY:
                raise _Reply(_json(401, {"error": "unknown X-API-Key"}))
            return self._principal_for_key()
        token = None
        header = request.headers.get("Authorization")
        if header is not None:
            token = header.removeprefix("Bearer ").removeprefix("Token ").rstrip() or None
        elif "bearer_token" in request.query:
            token = request.query["bearer_token"].strip()
        elif "bearer_token" in request.cookies:
            token = request.cookies["bearer_token"].strip()
        if not token:
            raise _Reply(_json(401, {"error": ""}))
        issued = self._tokens.get(token)
        if issued is None or issued[1] < time.time():
            raise _Reply(_json(401, {"error": "bearer malformed"}))
        if self._on("database_down"):  # the authority (and in C the user) is looked up in the database
            raise _Unhandled("database unavailable")
        domain = self.knobs["authority_domain"]
        if domain is not None and request.url.host != domain:
            raise _Reply(_json(401, {"error": "authority not found"}))
        return issued[0]

    @staticmethod
    def _forbidden() -> _Reply:
        # rest-api controllers/application.cr: Error::Forbidden handler returns Nil -> 403, empty body
        return _Reply(web.Response(status=403))

    def _require(self, principal: _Principal, resources: list[str], access: str) -> None:
        if not principal.can(resources, access):
            raise self._forbidden()

    # ------------------------------------------------------------------ routes

    async def _health(self, request: web.Request) -> web.Response:
        """GET /api/engine/v2/: A redis+etcd+rethinkdb, B redis+etcd+postgres, C/D redis+postgres (§5.1)."""
        failing = self._on("redis_down") or self._on("database_down") or self._etcd_failure() is not None
        if failing:
            await asyncio.sleep(float(self.knobs["health_delay"]))
            raise _Unhandled("not healthy")
        return web.Response(status=200)

    async def _triggers_health(self, request: web.Request) -> web.Response:
        """GET /api/triggers/v2/: always 200 before triggers d8479d3 (2025-10); era D checks Redis + PG (§6)."""
        if self.era == "D" and (self._on("redis_down") or self._on("database_down")):
            raise _Unhandled("not healthy")
        return web.Response(status=200)

    def _version_doc(self, service: str) -> dict[str, str]:
        return {
            "service": service,
            "commit": REST_API_COMMITS[self.era] if service == "rest-api" else "0000000",
            "version": "2.0.0",
            "build_time": "2024-08-30T00:00:00Z",
            "platform_version": self.platform_version(),
        }

    async def _version(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return _json(200, self._version_doc("rest-api"))

    async def _cluster_versions(self, request: web.Request) -> web.Response:
        """root.cr construct_versions: failing services are omitted; search_ingest gone in D (2026 §1)."""
        self._authorize(request)
        services = ["core", "dispatch", "frontend-loader", "rest-api", "search-ingest", "source", "triggers"]
        if self.era == "D":
            services.remove("search-ingest")
        if self._etcd_fresh_failure() or self._on("core_down") or (self.era in ("C", "D") and self._on("redis_down")):
            services.remove("core")  # core_for("version") needs discovery and a core
        elif self._on("core_stale"):
            await asyncio.sleep(float(self.knobs["core_retry_delay"]))
            services.remove("core")
        return _json(200, [self._version_doc(s) for s in services])

    async def _inspect(self, request: web.Request) -> web.Response:
        """api_keys.cr ``inspect_key``: no scope check, the UserJWT of the credential (§5.1)."""
        p = self._authorize(request)
        now = int(time.time())
        return _json(
            200,
            {
                "iss": "POS",
                "iat": now - 300,
                "exp": now + 3600,
                "aud": p.domain,
                "sub": p.user_id,
                "scope": p.scopes,
                "u": {"n": USER_NAME, "e": USER_EMAIL, "p": p.permissions, "r": []},
            },
        )

    def _system_doc(self) -> dict[str, Any]:
        return {
            "id": SYSTEM_ID,
            "name": SYSTEM_NAME,
            "description": "",
            "zones": [ZONE_ID],
            "modules": [MODULE_ID],
            "features": [],
            "bookable": False,
            "public": False,
            "capacity": 8,
            "version": 1,
            "created_at": 1700000000,
            "updated_at": 1700000000,
        }

    async def _systems(self, request: web.Request) -> web.Response:
        """GET /systems: ES in A-C (paginate_results), PostgreSQL in D (paginate_search) (§4, §5.3)."""
        p = self._authorize(request)
        self._require(p, ["systems"], "read")
        if self.era in _ABC and self._on("elasticsearch_down"):
            raise _Unhandled("Error connecting to 'elastic:9200': Connection refused")
        try:
            limit = min(int(request.query.get("limit", "100")), 10_000)
            offset = int(request.query.get("offset", "0"))
            if limit < 0 or offset < 0:
                raise ValueError
        except ValueError:  # AC ParameterError; its message text is not pinned by the reference
            return _json(400, {"error": "invalid parameter", "parameter": "limit/offset"})
        every = [self._system_doc()] if self._system_exists(SYSTEM_ID) else []
        page = every[offset : offset + limit]
        total = len(every)
        range_end = offset + len(page)
        headers = {"X-Total-Count": str(total), "Content-Range": f"sys {offset}-{range_end}/{total}"}
        if range_end < total:
            nxt = range_end + 1 if self.era in _ABC else range_end  # A-C skipped a row (application.cr NOTE)
            headers["Link"] = f'<{API_BASE}/systems?offset={nxt}&limit={limit}>; rel="next"'
        return _json(200, page, headers)

    async def _system(self, request: web.Request) -> web.Response:
        """GET /systems/:sys_id: the system from the database, its ``modules`` ids (internals §5.3)."""
        p = self._authorize(request)
        self._require(p, ["systems"], "read")
        if not self._system_exists(request.match_info["sys_id"]):
            return _json(404, {})  # the model's find! raising not found; the body is not pinned
        return _json(200, self._system_doc())

    def _control_read(self, p: _Principal) -> None:
        # systems.cr: can_read_control (systems or control) then check_support for functions/state
        self._require(p, ["systems", "control"], "read")
        if not p.support:
            raise self._forbidden()

    async def _functions(self, request: web.Request) -> web.Response:
        p = self._authorize(request)
        self._control_read(p)
        sys_id, slug = request.match_info["sys_id"], request.match_info["slug"]
        if self._on("redis_down"):
            raise _Unhandled(self.redis_error())
        name, index = get_parts(slug)
        module_id = self._module_id(sys_id, name, index)
        interface = self._interface(module_id) if module_id else None
        if interface is None:
            return _json(404, {"error": f"metadata not found for {slug} on {sys_id}"})
        hidden = self._hidden(p)
        return _json(
            200,
            {
                fn: {"arity": len(args), "params": dict(args), "order": list(args)}
                for fn, args in interface.items()
                if fn not in hidden
            },
        )

    @staticmethod
    def _hidden(p: _Principal) -> set[str]:
        if p.admin:
            return set()
        hidden = set(_SECURITY.get("administrator", []))
        if not p.support:
            hidden |= set(_SECURITY.get("support", []))
        return hidden

    async def _state(self, request: web.Request) -> web.Response:
        """GET /systems/:sys/:slug: the Redis status hash, ``{}`` if the module is not in the system (§5.3)."""
        p = self._authorize(request)
        self._control_read(p)
        if self._on("redis_down"):
            raise _Unhandled(self.redis_error())
        name, index = get_parts(request.match_info["slug"])
        module_id = self._module_id(request.match_info["sys_id"], name, index)
        state = dict(self._status.get(module_id, {})) if module_id else {}
        if module_id == MODULE_ID and self._on("driver_never_compiled"):
            state = {}
        return _json(200, state)

    async def _execute(self, request: web.Request) -> web.Response:
        """POST /systems/:sys/:slug/:method (systems.cr ``execute``; §5.3)."""
        p = self._authorize(request)
        self._require(p, ["systems", "control"], "write")
        if self.era == "D" and not p.support:  # rest-api 34435c5 permission groups
            raise self._forbidden()
        if request.content_type != "application/json":  # AC ContentError; message text not pinned
            return _json(415, {"error": "unsupported media type", "accepts": ["application/json"]})
        try:
            args = json.loads(await request.text())
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        if not isinstance(args, list):
            return _json(400, {"error": "Expected BeginArray but was BeginObject"})
        sys_id, slug, method = request.match_info["sys_id"], request.match_info["slug"], request.match_info["method"]
        name, index = get_parts(slug)
        out = await self._exec(p, sys_id, name, index, method, args)
        if out.kind == "ok":
            return web.Response(status=out.code, text=out.value, content_type="application/json")
        if out.kind == "generic":  # render_error(500, e.message, backtrace: e.backtrace)
            return _json(500, {"backtrace": _CRYSTAL_BACKTRACE, "message": out.message})
        status = _STATUS_FOR_CODE.get(out.error, out.code)
        body = {
            "error": out.error.replace("_", " "),
            "sys_id": sys_id,
            "module_name": name,
            "index": index,
            "message": out.message,
            "backtrace": out.backtrace,
        }
        return _json(status, body)

    def _core_request_path(self) -> str:
        # core-client v1.0.6 execute: post("/command/<id>/execute?user_id=...") under /api/core/v1
        return f"{CORE_HOST}:{CORE_PORT}/api/core/v1/command/{MODULE_ID}/execute?user_id={USER_ID}"

    def _not_loaded_text(self) -> str:
        if self.era == "D":  # core 3351920 process_manager/local.cr no_module_error
            return f"Could not locate module {MODULE_ID}, it is running but not loaded. Check driver is compiled."
        return f"Could not locate module {MODULE_ID}, it is running but not loaded on this host"  # core 9474954

    async def _exec(
        self, p: _Principal, sys_id: str, name: str, index: int, fn: str, args: list[Any] | None
    ) -> _Outcome:
        """driver proxy/remote_driver.cr ``exec`` as reached from rest-api (order of checks as there)."""
        etcd = self._etcd_fresh_failure()
        if etcd:  # RemoteDriver.new(discovery: core_discovery) cannot build the hound-dog discovery
            return _Outcome("generic", message=etcd)
        if self._on("redis_down"):  # metadata lookup (HGET system/..., GET interface/...)
            return _Outcome("generic", message=self.redis_error())
        module_id = self._module_id(sys_id, name, index)
        interface = self._interface(module_id) if module_id else None
        if interface is None:
            return _Outcome("rd_error", error="module_not_found", message="could not find module", code=500)
        if fn not in interface:
            return _Outcome("rd_error", error="bad_request", message=f"could not find function {fn}", code=500)
        if fn in self._hidden(p):
            msg = f"attempted to access privileged function {fn}"
            return _Outcome("rd_error", error="access_denied", message=msg, code=500)
        if self._on("core_down"):
            return _Outcome("rd_error", error="unexpected_failure", message="No registered core instances", code=500)
        delay = float(self.knobs["core_retry_delay"])
        if self._on("core_stale"):
            await asyncio.sleep(delay)
            if self.failures["core_stale"]["error"] == "dns":  # Crystal Socket::Addrinfo::Error (inferred)
                msg = f"Hostname lookup for {CORE_HOST} failed: Name or service not known"
            else:
                msg = f"Error connecting to '{CORE_HOST}:{CORE_PORT}': Connection refused"
            return _Outcome("rd_error", error="unexpected_failure", message=msg, code=500)
        if self._on("module_not_loaded"):
            await asyncio.sleep(delay)
            if self.era == "D":
                body = f"ERROR: {self._not_loaded_text()} (PlaceOS::Core::ModuleError)\n"
            else:  # core command.cr: raise Error::NotFound -> CommonError with backtrace
                body = _dumps(
                    {"error": f"module {MODULE_ID} not loaded", "backtrace": ["src/api/command.cr:32:9 in 'execute'"]}
                )
            msg = f"request to {self._core_request_path()} failed with {body}"
            return _Outcome("rd_error", error="unexpected_failure", message=msg, code=500)
        if self._on("driver_crashloop"):
            await asyncio.sleep(delay)
            body = f"ERROR: {self._not_loaded_text()} (PlaceOS::Core::ModuleError)\n"
            msg = f"request to {self._core_request_path()} failed with {body}"
            return _Outcome("rd_error", error="unexpected_failure", message=msg, code=500)
        if self._on("driver_raises"):
            params = self.failures["driver_raises"]
            return _Outcome(
                "rd_error",
                error="request_failed",
                message=f"module raised: {params['error']}",
                code=int(params["response_code"]),
                backtrace=["drivers/place/display.cr:42:7 in 'power_state'"],
            )
        if fn == "power" and args:
            self.publish_status("power", bool(args[0]))
            return _Outcome("ok", value=_dumps(bool(args[0])))
        if fn == "power_state":
            return _Outcome("ok", value=self._status[MODULE_ID].get("power", "null"))
        return _Outcome("ok", value="null")

    # ------------------------------------------------------------------ auth service (§5.2)

    async def _oauth_token(self, request: web.Request) -> web.Response:
        if self._on("database_down"):
            page = "<html><body><h1>We're sorry, but something went wrong.</h1></body></html>"
            return web.Response(status=500, text=page, content_type="text/html")
        if request.content_type == "application/json":
            form: Mapping[str, Any] = await request.json()
        else:
            form = await request.post()
        grant = form.get("grant_type")
        if form.get("client_id") != OAUTH_CLIENT_ID or (
            grant == "client_credentials" and form.get("client_secret") != OAUTH_CLIENT_SECRET
        ):
            return _json(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed due to unknown client, no client "
                    "authentication included, or unsupported authentication method.",
                },
            )
        if grant == "password" and (form.get("username") != USER_EMAIL or form.get("password") != USER_PASSWORD):
            return _json(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "The provided authorization grant is invalid, expired, revoked, does not "
                    "match the redirection URI used in the authorization request, or was issued to another client.",
                },
            )
        if grant not in ("password", "client_credentials"):
            return _json(400, {"error": "unsupported_grant_type"})
        now = int(time.time())
        principal = _Principal(USER_ID, ["public"], 3, request.url.host or "localhost")
        claims = {
            "iss": "POS",
            "iat": now,
            "exp": now + 7200,
            "aud": principal.domain,
            "sub": USER_ID,
            "scope": ["public"],
            "u": {"n": USER_NAME, "e": USER_EMAIL, "p": 3, "r": []},
        }
        header = _b64url(_dumps({"alg": "RS256", "typ": "JWT"}).encode())
        token = f"{header}.{_b64url(_dumps(claims).encode())}.{_b64url(secrets.token_bytes(32))}"
        self._tokens[token] = (principal, now + 7200)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 7200,
            "refresh_token": secrets.token_hex(16),
            "scope": "public",
            "created_at": now,
        }
        return _json(200, body)
