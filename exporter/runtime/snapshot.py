"""The snapshot: latest result per probe, a short history, counters and the diagnosis. The only shared
state (design §1).

Only the scheduler writes it; /metrics, /diagnose, the status page and ``check`` read it. The diagnosis
is computed here, once, when a result changes it (not by each reader), and every write bumps
``version`` so readers can cache what they render from it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.model.failure_model import SYMPTOMS, Symptom
from exporter.model.triage import Diagnosis, Observation, diagnose
from exporter.model.vocabulary import Era, Reason

# placeos_probe_latency_seconds buckets: from a local Redis PING to an execute waiting on core retries.
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class ProbeResult:
    """One completed probe run."""

    probe: str
    reason: Reason
    detail: str
    duration: float
    finished: float  # wall-clock seconds
    facts: Any = None  # the probe's facts dataclass (its spec's ``facts``), or None

    @property
    def success(self) -> bool:
        return self.reason is Reason.OK


@dataclass
class ProbeState:
    """Everything known about one probe of one cluster."""

    probe: str
    history_size: int
    enabled: bool = True
    last: ProbeResult | None = None
    last_ok: ProbeResult | None = None  # keeps label sets (e.g. lag indices) alive through failures
    last_change: float | None = None  # when the reason last changed (wall clock)
    runs: int = 0
    failures: Counter[Reason] = field(default_factory=Counter)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    duration_sum: float = 0.0
    history: deque[ProbeResult] = field(init=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_size)

    @property
    def reason(self) -> Reason:
        return self.last.reason if self.last else Reason.PENDING

    @property
    def success(self) -> bool:
        return bool(self.last and self.last.success)

    def record(self, result: ProbeResult) -> bool:
        """Add a run; True if the reason changed (the scheduler logs only then)."""
        changed = self.reason is not result.reason
        if changed:
            self.last_change = result.finished
        self.last = result
        if result.success:
            self.last_ok = result
        self.runs += 1
        if not result.success:
            self.failures[result.reason] += 1
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if result.duration <= bound), len(LATENCY_BUCKETS))
        self.bucket_counts[index] += 1
        self.duration_sum += result.duration
        self.history.append(result)
        return changed

    def observation(self) -> Observation:
        """What the diagnosis reads: the reason, and the detail of a failure (its evidence)."""
        failed = self.last is not None and not self.last.success
        return Observation(self.reason, self.last.detail if failed and self.last else "")


@dataclass
class ClusterSnapshot:
    """One cluster's probe states and what is known of its release."""

    name: str
    history_size: int
    era: Era | None = None
    era_source: str = "pending"  # "configured", "detected", "fallback"
    platform_version: str = ""
    probes: dict[str, ProbeState] = field(default_factory=dict)
    version: int = 0
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    off: dict[str, str] = field(default_factory=dict)  # probes that do not run -> why
    awaiting: set[str] = field(default_factory=set)  # probes re-checking after a change (settling)
    settle_since: float = 0.0  # wall clock of the change being settled
    settled: Diagnosis = field(default_factory=Diagnosis)  # the last diagnosis no re-check was pending for
    symptoms: Sequence[Symptom] = field(default=SYMPTOMS, repr=False)  # the failure model it is read with

    def set_enabled(self, enabled: list[str], off: dict[str, str] | None = None) -> None:
        """Enable exactly these probes (``off``: the others, with why); counters of disabled ones are
        kept for when they return."""
        self.off = dict(off or {})
        self.awaiting &= set(enabled)
        for name in enabled:
            if name not in self.probes:
                self.probes[name] = ProbeState(name, self.history_size)
        for name, state in self.probes.items():
            state.enabled = name in enabled
        self.rediagnose()
        self.version += 1

    def enabled(self) -> list[ProbeState]:
        return [s for s in self.probes.values() if s.enabled]

    def record(self, result: ProbeResult, recheck: Iterable[str] = ()) -> bool:
        """Add a run; True if its reason changed. The diagnosis follows any change of what it reads.

        ``recheck``: on a change, the probes that must run again before the diagnosis is trusted (the
        scheduler runs them at once). Until they have reported, the last settled diagnosis stands and
        says it is settling: a half-updated picture would name a wrong cause for seconds.
        """
        state = self.probes[result.probe]
        before, waited = state.observation(), result.probe in self.awaiting
        changed = state.record(result)
        if result.finished - result.duration >= self.settle_since:  # a run that began after the change
            self.awaiting.discard(result.probe)
        if changed and recheck:
            self.awaiting |= {p for p in recheck if p != result.probe and p in self.probes}
            self.settle_since = result.finished
        if state.observation() != before or waited or self.awaiting:
            self.rediagnose()
        self.version += 1
        return changed

    def rediagnose(self) -> None:
        fresh = diagnose({s.probe: s.observation() for s in self.enabled()}, self.symptoms, self.era)
        fresh.off = dict(self.off)
        if self.awaiting:
            self.diagnosis = replace(self.settled, settling=sorted(self.awaiting))
        else:
            self.settled = self.diagnosis = fresh

    def set_era(self, era: Era, source: str, platform_version: str = "") -> None:
        self.era, self.era_source, self.platform_version = era, source, platform_version
        self.rediagnose()
        self.version += 1


@dataclass
class Snapshot:
    """All clusters, in configuration order; the first is the default one served on /metrics."""

    clusters: dict[str, ClusterSnapshot] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def cluster(self, name: str) -> ClusterSnapshot | None:
        return self.clusters.get(name)

    @property
    def default(self) -> ClusterSnapshot:
        return next(iter(self.clusters.values()))
