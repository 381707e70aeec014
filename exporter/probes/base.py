"""The probe contract: one signature, one spec row per probe, and exceptions mapped to reasons.

Like blackbox_exporter's probers (style.md), every probe is ``async def run(ctx) -> Outcome`` in a file
named after it, and that file ends with its ``SPEC``: the eras it applies to, the settings that switch
it on, its default timeout, the typed facts it publishes, the metric rows it owns and the exception
names of its client library that mean a definite reason. ``exporter.probes.REGISTRY`` is the tuple of
these rows; enabled probes, the metric contract and the docs are derived from it. The deadline
belongs to the caller (the scheduler cancels an overrunning probe and records ``timeout``), and a
probe may simply raise: ``classify`` turns any exception into a bounded reason plus a short,
secret-free detail for logs and /diagnose.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from exporter.model.metric import MetricSpec
from exporter.model.vocabulary import ALL_ERAS, Era, Reason
from exporter.settings import ClusterConfig


@dataclass(frozen=True)
class Outcome:
    """What a probe found. ``facts`` is the probe's own facts dataclass (or None)."""

    reason: Reason
    detail: str = ""
    facts: Any = None

    @property
    def success(self) -> bool:
        return self.reason is Reason.OK


class ProbeFailure(Exception):
    """Raised by a probe that knows exactly why it failed (with what it learnt before failing)."""

    def __init__(self, reason: Reason, detail: str, facts: Any = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.facts = facts


@dataclass
class ProbeContext:
    """Everything a probe run may use, built afresh for each run.

    ``state`` survives between runs of the same probe of a cluster (e.g. last launch counts);
    ``shared`` is shared by all probes of a cluster (e.g. an OAuth token). ``deadline`` is in
    event-loop time; the scheduler enforces it, and probes use ``remaining()`` to bound sub-steps
    that must not be cut off mid-way (closing a connection).
    """

    cluster: ClusterConfig
    era: Era
    timeout: float
    deadline: float
    http: aiohttp.ClientSession
    state: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left before the deadline (never below a small floor)."""
        return max(0.05, self.deadline - asyncio.get_running_loop().time())


Probe = Callable[[ProbeContext], Awaitable[Outcome]]
Samples = Iterable[tuple[tuple[str, ...], float]]


@dataclass(frozen=True)
class MetricRow:
    """A metric family a probe owns, and how its samples come from the probe's facts.

    ``samples(facts, last_ok_facts)`` gets the facts of the last run (None when it learnt none) and of
    the last successful run (label sets that must outlive a failure, like the lag's indices).
    """

    spec: MetricSpec
    samples: Callable[[Any, Any], Samples]


def always(cluster: ClusterConfig, era: Era) -> bool:
    return True


@dataclass(frozen=True)
class ProbeSpec:
    """Everything the exporter knows about one probe; nothing about it is typed anywhere else."""

    name: str
    run: Probe
    checks: str  # what a passing run proves, one line (docs)
    eras: frozenset[Era] = ALL_ERAS
    section: str | None = None  # the backend settings section it probes: on only where configured
    enabled_by: Callable[[ClusterConfig, Era], bool] = always  # what else it needs configured
    needs: str = ""  # that configuration, in words (docs)
    needs_probes: tuple[str, ...] = ()  # probes that must run too
    timeout: float | None = None  # default deadline (else the exporter-wide timeout)
    interval: Callable[[ClusterConfig], float] | None = None  # its own interval (else the exporter's)
    facts: type | None = None  # the dataclass its Outcome.facts holds
    metrics: tuple[MetricRow, ...] = ()
    errors: Mapping[str, Reason] = field(default_factory=dict)  # client exception class name -> reason
    capability: str | None = None  # an optional route: facts.available says if the cluster has it


def classify(exc: BaseException, errors: Mapping[str, Reason] | None = None) -> tuple[Reason, str]:
    """Map any exception to a reason and a short detail (type + message, one line). ``errors`` is the
    probe's own map of client-library exception class names to reasons (its spec's ``errors``)."""
    if isinstance(exc, ProbeFailure):
        return exc.reason, exc.detail
    if isinstance(exc, RecursionError):
        return Reason.PROTOCOL_ERROR, "the answer is nested too deeply to be what PlaceOS sends"
    if isinstance(exc, AttributeError | TypeError | KeyError | IndexError | ValueError) and not isinstance(
        exc, UnicodeError | OSError
    ):
        # A probe read a field of the wrong type or a missing one: say what was wrong on the wire, not
        # which Python operation tripped over it.
        return (
            Reason.PROTOCOL_ERROR,
            "the answer is not in the shape PlaceOS sends (a field missing or of another type)",
        )
    reason = _reason_for(exc, errors or {})
    text = " ".join(str(exc).split())[:300]
    return reason, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason_for(exc: BaseException, errors: Mapping[str, Reason]) -> Reason:
    # Most specific first. Library exception classes are matched by name so this module stays free of
    # optional imports; a probe's own names (its spec's ``errors``) come right after timeouts.
    mro = [cls.__name__ for cls in type(exc).__mro__]
    names = set(mro)
    if isinstance(exc, TimeoutError) or names & {"ServerTimeoutError", "ReqlTimeoutError", "TimeoutError"}:
        return Reason.TIMEOUT
    for name in mro:
        if name in errors:
            return errors[name]
    # Client libraries wrap the handshake's ssl.SSLError in their own connection errors (redis
    # ConnectionError, rethinkdb ReqlDriverError, elastic_transport TlsError): look down the chain.
    if _caused_by(exc, ssl.SSLError) or names & {
        "ClientSSLError",
        "ClientConnectorCertificateError",
        "ClientConnectorSSLError",
        "SSLError",
        "TlsError",
    }:
        return Reason.TLS
    if isinstance(exc, socket.gaierror) or _caused_by(exc, socket.gaierror):
        return Reason.DNS
    if isinstance(exc, ConnectionRefusedError) or _caused_by(exc, ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED
    text = str(exc).lower()
    if names & {"ReqlDriverError", "ConnectionError", "TransportError"} and "timed out" in text:
        return Reason.TIMEOUT  # a driver's own timeout (RethinkDB handshake, ES transport)
    if names & {"ClientConnectorError", "ReqlDriverError", "ConnectionError"} and any(
        marker in text for marker in ("refused", "connect call failed", "errno 111")
    ):
        return Reason.CONNECTION_REFUSED
    # A reset (also one wrapped in a connect error) means something listened and hung up on us: the
    # port is open, so it is not "refused" (e.g. a plaintext server resetting a TLS handshake).
    if _caused_by(exc, ConnectionResetError) or _caused_by(exc, BrokenPipeError) or names & {"ServerDisconnectedError"}:
        return Reason.PROTOCOL_ERROR
    if names & {
        "InvalidResponse",
        "ResponseError",
        "ClientPayloadError",
        "ClientResponseError",
        "ContentTypeError",
        "ProtocolError",
        "ReqlDriverError",
        "JSONDecodeError",
        "UnicodeDecodeError",
        "InterfaceError",
        "ProtocolViolationError",
    }:
        return Reason.PROTOCOL_ERROR
    if isinstance(exc, ConnectionError | OSError) or names & {"ClientConnectorError", "ClientOSError"}:
        return Reason.CONNECTION_REFUSED
    return Reason.PROTOCOL_ERROR


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, kind):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
