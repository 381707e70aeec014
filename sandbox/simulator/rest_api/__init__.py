"""The sandbox's PlaceOS rest-api: the HTTP and WebSocket surface of internals §5, on real backends.

``python -m sandbox.simulator.rest_api --port P --era A|B|C|D --etcd URL --redis URL --db URL --es URL
[--platform-version V --retries N --retry-interval S --backend-timeout S --core-timeout S --etcd-ttl S
--data-dir DIR --triggers-url URL --search-ingest-url URL]`` (``--etcd`` is needed in eras A/B, ``--es``
in eras A-C; ``--data-dir`` keeps the token signing key). Each
URL may come from ``$SANDBOX_ETCD_URL``, ``$SANDBOX_REDIS_URL``, ``$SANDBOX_DB_URL``, ``$SANDBOX_ES_URL``
instead, so credentials in URLs stay out of the process list.

What it reproduces, and from where (cited as "internals §N"):

* ``GET /api/engine/v2/`` health (§5.1): era A Redis ``PING`` + etcd ``POST /v3/maintenance/status`` +
  RethinkDB ``server_status``; era B Redis + etcd + PostgreSQL; eras C/D exactly Redis + PostgreSQL
  (root.cr ``healthcheck?`` @ee8db8e; its log line carries the subscriber's ``redis_reconnects``). 200 with an
  empty body, else the production error handler's 500: ``{}`` when ``Accept`` has
  ``application/json``, an empty text/plain body otherwise (§5.1, action-controller error_handler).
* Authentication (§5.2, rest-api ``utilities/current-user.cr``): ``X-API-Key: <id>.<secret>`` (or
  ``?api-key=`` / cookie ``api-key``); the Authority is found by the request's Host (host only,
  lower-case, no port), the key loaded by id from ``api_key`` and compared as
  ``HMAC-SHA512(key=secret, data=id)`` hex, its user loaded. Every exception in that block, a database
  outage included, becomes ``401 {"error":"unknown X-API-Key"}``. Bearer JWTs (``Authorization:
  Bearer``, ``?bearer_token=``, cookie) are HS256 tokens issued by this process's OAuth token route;
  era C also loads the user and the Authority from the database (an outage there is a 500), eras A/B
  only verify the token. No credential at all is ``401 {}``.
* ``POST /auth/oauth/token`` (§5.2): the auth service's Doorkeeper token endpoint, folded into this
  process (in PlaceOS it is the Rails ``auth`` service behind the same nginx Host). ``password`` grant
  (Authority by Host, application by ``client_id`` = ``doorkeeper_app.uid``, user by email in that
  Authority, bcrypt ``password_digest``) and ``client_credentials``. Tokens carry ``iss: "POS"``,
  ``aud`` = the Authority domain, ``sub``, ``scope`` and ``u: {n, e, p, r}`` and expire in 2 h. A
  database outage is Rails' production 500.
* ``GET /api/engine/v2/version``, ``/api_keys/inspect`` (§5.1); ``/cluster/versions``, ``/reindex``,
  ``/backfill`` and era D's ``/build/monitor``, ``/drivers/:id/recompile``, ``/drivers/:id/reload``
  (platform.py). A path with no route is the router's ``404 Not Found`` text, before authentication.
* ``GET /api/engine/v2/systems`` (and ``/modules``, ``/drivers``) from Elasticsearch (eras A-C, §4, §5.3)
  with ``X-Total-Count``, ``Content-Range: sys <start>-<end>/<total>`` and ``Link`` exactly as rest-api's
  ``paginate_results`` builds them (including its ``offset = end + 1``); ES down or failing is a 500.
  Era D (rest-api #445 ``51faa1a``): from PostgreSQL full-text search (sandbox.simulator.fts) with
  ``paginate_sql``'s headers, whose ``Link`` offset is the range end (not + 1); PostgreSQL down is a 500.
* ``GET /systems/:id`` from the database; ``/systems/:sys/functions/:slug`` from Redis ``system/<sys>``
  and ``interface/<mod>`` (§3.3); ``/systems/:sys/:slug[/:key]`` from Redis ``status/<mod>`` (§5.3).
* Execute (``POST /systems/:sys/:slug/:method``, ``POST /modules/:id/exec/:method``) along the
  RemoteDriver + core-client path of §5.3: interface lookup, function check, clearance, rendezvous over
  the discovered cores (§1.3), ``POST <core>/api/core/v1/command/<mod>/execute?user_id=<id>``, retries on
  IO errors and non-2xx, and the §5.3 error table for the reply. Retries: ``--retries`` (default 2)
  re-tries after the first attempt, ``--retry-interval`` seconds apart (default 0.5). The real client
  retries 10 times (eras A/B) or 4 (era C) with exponential back-off up to 40 s per interval, which
  pins a caller for minutes; the sandbox keeps the same shape but short so demos and tests stay fast.
* Execute replies (§5.3 table, rest-api ``handle_execute_error``): the driver's raw JSON with its
  ``Response-Code``; ``{"error","sys_id","module_name","index","message","backtrace"}`` otherwise:
  404 ``module not found``/``could not find module``, 400 ``bad request``/``could not find function
  <fn>``, 401 ``access denied``, core 203 -> ``request failed``/``module raised: <err>`` with the
  driver's code, 500 ``unexpected failure`` with ``No registered core instances``, the IO text
  (``Error connecting to '127.0.0.1:P': Connection refused``, ``Read timed out``) or ``request to
  <host>:<port>/api/core/v1/command/<id>/execute?user_id=<id> failed with <body>`` (core-client
  ``src/error.cr``: the path it reports is the one it requested, query included). Redis failing
  during execute is ``render_error``'s 500 ``{"message": ...}``.
* When the API cannot reach etcd to list cores (eras A/B) it routes with the cores it last saw for one
  TTL (``--etcd-ttl``, hound-dog's 15 s; the real API keeps a watched list), then execute answers
  500 ``unexpected failure`` with ``message: "Could not connect to etcd endpoint: <url>"``. That is
  crystal-etcd's later ``Etcd::ConnectionError`` text (§1.4): the 1.2.5 release PlaceOS pinned had
  no such class and let the raw socket error through, and the docs' "unable to connect to etcd"
  appears in no code. The sandbox uses the crystal-etcd wording so the message names etcd, as the
  docs' triage expects. An etcd that answers with no core registered gives "No registered core
  instances".
* WebSocket ``GET /api/engine/v2/systems/control`` (§5.4, rest-api ``session.cr``): strict request
  parsing (unknown keys, a string ``id`` or a missing field get no reply at all), ``bind`` (success
  with ``meta`` only, then a ``notify`` with the current value read by HGET and one per change on Redis
  channel ``status/<mod>/<name>``, received by the process's one subscriber: subscriptions.py),
  ``unbind``, ``exec`` (same core path; a null ``args`` is rest-api's ``Cast from Nil`` error 3),
  ``debug``/``ignore`` accepted, text ``ping`` -> ``pong`` and a server ``pong`` every 80 s.
  Authentication happens once at upgrade, so an open socket keeps working when the database dies (the
  documented symptom, §9).
* Cluster and driver routes (§11.1, §11.3): ``/cluster`` (cores that fail are silently dropped),
  ``/cluster/:core_id`` (404 ``core not registered: <id>``), ``/drivers/:id`` with ``compilation_output``
  and ``compilation_status``, ``/drivers/:id/compiled`` (200 / 404 ``Driver not compiled yet`` / 503
  ``{"compilation_output": ...}``; core errors count as not compiled).

Sandbox-only controls (README contract point 5), not part of PlaceOS:

* ``POST /_sandbox/etcd-unreachable {"on": true|false}``: the API loses its route to etcd while etcd
  stays up (its etcd client is pointed at a closed loopback port), for discovery and health alike.
* ``POST /_sandbox/unreachable {"on": true|false}``: every PlaceOS route answers nginx's 502 page, as
  when the load balancer cannot reach rest-api (design §3 component ``api``).
* ``POST /_sandbox/pubsub-drop {"on": true|false}``: arms the status subscriber's reconnect bug (driver
  #170/#171; the orchestrator then drops Redis's pub/sub clients) or clears it and reconnects whole.
* ``GET /_sandbox/ready``: 200 once the app is serving, with the subscriber's state (``connected``,
  ``reconnects``, ``dropped``, ``channels``, ``lost``).

Left out: scopes and permission groups are not enforced (the seeded key has ``public``/Full), edge
modules, ``_TRIGGER_`` binds, the debug stream (``debug`` is acknowledged, no log lines follow),
binds to modules not yet mapped in ``system/<sys>`` waiting for ``lookup-change``, era C's extra
re-discovery retry, and every other controller. Secrets (API keys, passwords, tokens, credentials in
URLs) are never logged: the access log prints the path without its query string.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.simulator.rest_api.api import RestApi, RestApiConfig, load_jwt_secret, redis_client
from sandbox.simulator.rest_api.app import make_app
from sandbox.simulator.rest_api.common import DEFAULT_PLATFORM_VERSION, ERAS, json_response, production_error
from sandbox.simulator.rest_api.websocket import parse_ws_request
from sandbox.simulator.service import AccessLogger, add_store_urls, require_urls, serve_main, service_parser

__all__ = [
    "DEFAULT_PLATFORM_VERSION",
    "ERAS",
    "AccessLogger",
    "RestApi",
    "RestApiConfig",
    "json_response",
    "main",
    "make_app",
    "parse_args",
    "parse_ws_request",
    "production_error",
    "redis_client",
]


def parse_args(argv: list[str] | None = None) -> RestApiConfig:
    p = service_parser("python -m sandbox.simulator.rest_api", __doc__.split("\n")[0], ERAS)
    p.add_argument(
        "--etcd",
        default=os.environ.get("SANDBOX_ETCD_URL"),
        help="etcd gRPC-gateway URL (eras A/B), e.g. http://127.0.0.1:2379 (or $SANDBOX_ETCD_URL)",
    )
    add_store_urls(p)
    p.add_argument(
        "--es",
        default=os.environ.get("SANDBOX_ES_URL"),
        help="Elasticsearch URL, e.g. http://127.0.0.1:9200 (or $SANDBOX_ES_URL)",
    )
    p.add_argument("--platform-version", help="reported by /version (default per era)")
    p.add_argument("--triggers-url", help="triggers (TRIGGERS_URI), e.g. http://127.0.0.1:3000, for /cluster/versions")
    p.add_argument("--search-ingest-url", help="search-ingest (eras A-C), for /cluster/versions, /reindex, /backfill")
    p.add_argument("--retries", type=int, default=2, help="core execute re-tries (real: 10 in A/B, 4 in C)")
    p.add_argument("--retry-interval", type=float, default=0.5, help="seconds between core retries")
    p.add_argument("--backend-timeout", type=float, default=2.0, help="per-call timeout to Redis/DB/ES/etcd")
    p.add_argument("--core-timeout", type=float, default=10.0, help="per-attempt timeout to core")
    p.add_argument("--etcd-ttl", type=int, default=15, help="seconds the API routes with cores last seen in etcd")
    p.add_argument("--data-dir", type=Path, help="keeps the token signing key across restarts")
    a = p.parse_args(argv)
    require_urls(p, a, "redis", "db", *(("es",) if a.era.upper() != "D" else ()))
    return RestApiConfig(
        port=a.port,
        host=a.host,
        era=a.era,
        etcd_url=a.etcd,
        redis_url=a.redis,
        db_url=a.db,
        es_url=a.es,
        triggers_url=a.triggers_url,
        search_ingest_url=a.search_ingest_url,
        platform_version=a.platform_version,
        retries=max(0, a.retries),
        retry_interval=max(0.0, a.retry_interval),
        backend_timeout=a.backend_timeout,
        core_timeout=a.core_timeout,
        etcd_ttl=a.etcd_ttl,
        jwt_secret=load_jwt_secret(a.data_dir),
    )


def main(argv: list[str] | None = None) -> None:
    serve_main(argv, parse_args, make_app, "sandbox.rest_api.access")
