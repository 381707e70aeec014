"""The sandbox orchestrator: one small PlaceOS of a given era on loopback, and its faults.

Why this exists (design §6): the exporter's diagnosis is only worth something if the symptoms it reads
are the ones a real failure produces. So the sandbox does not fake symptoms: it starts real backends
(etcd, Redis, PostgreSQL) and wire-faithful stand-ins (RethinkDB, Elasticsearch), seeds the config
database, then starts the PlaceOS simulators (core, search-ingest, rest-api, triggers) that really
depend on them. Breaking a part is done to that part only, by PID or over its own protocol, and the
symptoms follow by themselves (the troubleshooting page, internals §9).

Eras (design §2, internals §0): A = etcd + RethinkDB + Redis + ES; B = etcd + PostgreSQL + Redis + ES;
C = PostgreSQL + Redis (also core discovery) + ES; D = PostgreSQL + Redis, search served by PostgreSQL
(placeos-2026.md §1, rest-api 51faa1a). Every era runs one or more cores, rest-api and triggers
(internals §8, the partner environment's set); A-C also search-ingest, D also the build service.

Faults (``break_part``; each undone by ``heal``):

* every process part: ``kill`` (SIGKILL of the whole process tree; a core is not deregistered, so era
  A/B keep its etcd key until the lease runs out and era C keeps a stale lookup entry), ``stop``
  (SIGSTOP, a hung process) and ``garbage`` (the part goes away and ``sandbox.garbage`` answers
  nonsense on its port). Heal restarts the part on the same port with the same data dir.
* backends and stand-ins: ``wrong-credentials``: the password clients were given stops working,
  changed over the part's own protocol (sandbox.backends; RethinkDB ``users`` table update;
  Elasticsearch ``POST /_security/user/elastic/_password``). Heal restores it.
* part-specific (README contract 5): elasticsearch ``red``, search-ingest ``pause``, driver ``crash`` /
  ``crash-loop`` / ``compile-fail``, module ``disconnect`` and core ``modules-not-loaded`` (core's
  ``/_sandbox/...`` routes), rest-api ``unreachable`` (its listener gone), ``bad-gateway`` (nginx's 502
  in front of it) and ``etcd-unreachable`` (eras A/B: the API loses its route to etcd), redis
  ``pubsub-drop`` (Redis drops its pub/sub clients, rest-api's subscriber comes back without its
  channels: driver #170's bug). A part an era does not have is refused with one line.

Secrets (the API key secret, the support user's password, the database and Elasticsearch passwords)
are generated per run with ``secrets.token_urlsafe`` and never logged. The simulators that take a
database or Elasticsearch URL only on their command line are started through a tiny launcher that
reads ``@env:NAME`` arguments from their environment, so no password shows in the process list.
``exporter_env()`` / ``exporter_yaml()`` hand the settings (secrets included) to the exporter.
"""

from sandbox.cluster.common import ERAS, MODES, PARTS, SandboxError, SandboxInputError, http_json
from sandbox.cluster.faults import Sandbox

__all__ = [
    "ERAS",
    "MODES",
    "PARTS",
    "Sandbox",
    "SandboxError",
    "SandboxInputError",
    "http_json",
]
