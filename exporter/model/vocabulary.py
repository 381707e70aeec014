"""The closed set of failure reasons (design §4): the only values the ``reason`` label ever takes.

One module owns it so that metrics, the diagnosis, alerts and docs all agree, and so an error string
can never leak into a label (anchors §8.3 item 8).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a probe's last run ended the way it did."""

    OK = "ok"
    PENDING = "pending"  # enabled, not run yet
    TIMEOUT = "timeout"  # the deadline passed (hung or slow backend)
    CONNECTION_REFUSED = "connection_refused"  # nothing listens / connection reset
    DNS = "dns"  # the host name does not resolve
    TLS = "tls"  # handshake or certificate problem
    AUTH_FAILED = "auth_failed"  # credentials rejected
    UNHEALTHY = "unhealthy"  # the backend answered and said it is not healthy
    PROTOCOL_ERROR = "protocol_error"  # the backend answered something that is not its protocol
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    NOT_FOUND = "not_found"  # the configured system/module/key does not exist
    NO_CORE_INSTANCES = "no_core_instances"  # "No registered core instances" (internals §1.4)
    CORE_UNREACHABLE = "core_unreachable"  # a registered core does not answer
    ETCD_UNREACHABLE = "etcd_unreachable"  # the API cannot reach etcd
    DRIVER_ERROR = "driver_error"  # the execute reached the driver and it failed
    ACCESS_DENIED = "access_denied"  # authenticated, but not allowed


FAILURE_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r not in (Reason.OK, Reason.PENDING))
