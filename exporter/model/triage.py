"""The diagnosis: one interpreter of the failure model's symptom rows. Pure: no I/O, no clock.

It walks the symptoms in triage order: backend probes establish causes first, then each user-path
symptom is either explained by a cause already found ("execute fails because Redis is down" is Redis,
not a second problem), follows from another failing probe, or names its own cause, or ``unknown``. The
same results always give the same answer, which is what makes it table-testable.

A failing probe always ends up as the evidence of a cause or explained by one, so a failing probe can
never read as healthy (a property test walks every probe and every failing reason).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.model.failure_model import (
    CAUSES,
    COMPONENTS,
    IMPACTS,
    SYMPTOMS,
    AfterProbe,
    AllOf,
    Blame,
    Condition,
    ExplainedBy,
    Failing,
    InEras,
    Rule,
    Symptom,
    Unprobed,
    impacts_of,
)
from exporter.model.vocabulary import Era, Reason

NOTHING_CONFIGURED = (
    "configure the PlaceOS API (PLACE_URI and an API key of a support user) and the backends the exporter "
    "may reach (REDIS_URL, PG_DATABASE_URL or PG_HOST, ETCD_HOST, ...); docs/configuration.md lists them"
)


@dataclass(frozen=True)
class Evidence:
    """A probe result that led to, or is explained by, a cause."""

    probe: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Observation:
    """What the diagnosis needs of a probe: its reason and a short detail."""

    reason: Reason
    detail: str = ""

    @property
    def failing(self) -> bool:
        return self.reason not in (Reason.OK, Reason.PENDING)


@dataclass
class Diagnosis:
    """Root causes (with evidence), failed components and the user impacts they imply."""

    causes: dict[str, list[Evidence]] = field(default_factory=dict)
    explained: dict[str, list[Evidence]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    observed: int = 0  # probes with a result (not pending)
    still_working: list[str] = field(default_factory=list)  # user paths whose probes pass
    off: dict[str, str] = field(default_factory=dict)  # probes that do not run -> why (from the plan)
    settling: list[str] = field(default_factory=list)  # probes re-checking after a change: this is the last
    # settled diagnosis, held until they report

    @property
    def failed_components(self) -> set[str]:
        return {c for cause in self.causes for c in CAUSES[cause].components}

    @property
    def impacts(self) -> set[str]:
        return impacts_of(frozenset(self.causes))

    @property
    def healthy(self) -> bool:
        return not self.causes or set(self.causes) == {"none"}

    @property
    def configured(self) -> bool:
        """Something is probed at all (a cluster with nothing configured is neither healthy nor down)."""
        return bool(self.observed or self.pending)

    def verdict(self) -> str:
        """One line a person reads first."""
        if self.settling:
            return f"Settling: re-checking {', '.join(self.settling)} after a change. Until then: {self._verdict()}"
        return self._verdict()

    def _verdict(self) -> str:
        if not self.configured:
            return f"Nothing to probe: {NOTHING_CONFIGURED}"
        if self.healthy:
            if self.pending and not self.observed:
                return "Waiting for the first probe results"
            if self.pending:
                return "Healthy so far: some probes still pending"
            total = self.observed + len(self.off)
            off = f"; {len(self.off)} of {total} off (see /diagnose for why)" if self.off else ""
            return f"Healthy: every enabled probe passes{off}"
        parts = [CAUSES[c].title for c in self.causes if c != "none"]
        broken = sorted(self.impacts)
        text = "; ".join(parts)
        if broken:
            text += ". Broken for users: " + ", ".join(IMPACTS[i].text.lower() for i in broken)
        keeps = [COMPONENTS[c].unaffected for c in sorted(self.failed_components) if COMPONENTS[c].unaffected]
        if keeps and len(self.failed_components) == 1:
            text += f". {keeps[0]}"
        if self.still_working and self.impacts:  # something is broken for users: say what still works
            text += f". Still working: {', '.join(self.still_working)}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict(),
            "healthy": self.healthy,
            "root_causes": [
                _cause_json(cause)
                | {
                    "cause": cause,
                    "title": CAUSES[cause].title,
                    "advice": CAUSES[cause].advice,
                    "components": list(CAUSES[cause].components),
                    "evidence": [e.__dict__ for e in evidence],
                    "explains": [e.__dict__ for e in self.explained.get(cause, [])],
                }
                for cause, evidence in self.causes.items()
            ],
            "impacts": [
                {"impact": i, "text": IMPACTS[i].text, "troubleshooting_page": IMPACTS[i].page}
                for i in sorted(self.impacts)
            ],
            "failed_components": sorted(self.failed_components),
            "pending_probes": self.pending,
            "probes_off": dict(self.off),
            "settling": list(self.settling),
        }


def _cause_json(cause_id: str) -> dict[str, object]:
    """What the cause's row says beyond its title: its alert, PlaceOS's playbook, how to confirm and recover."""
    cause = CAUSES[cause_id]
    return {
        "alert": cause.alert.name if cause.alert else None,
        "playbook": cause.playbook or None,
        "confirm": list(cause.runbook.confirm) if cause.runbook else [],
        "recover": list(cause.runbook.recover) if cause.runbook else [],
    }


def diagnose(
    results: Mapping[str, Observation], symptoms: Sequence[Symptom] = SYMPTOMS, era: Era | None = None
) -> Diagnosis:
    """Root causes for the given results of the enabled probes (absent = not enabled) in an era."""
    d = Diagnosis()
    d.pending = sorted(str(p) for p, o in results.items() if o.reason is Reason.PENDING)
    d.observed = len(results) - len(d.pending)
    follows: list[tuple[str, Evidence]] = []  # (probe it follows from, evidence)
    failing = [(s, results[s.probe]) for s in symptoms if s.probe in results and results[s.probe].failing]
    # A symptom nothing explains yet is decided again once every other symptom has been: a cause found
    # later in the walk may explain it, and only what nothing explains is ``unknown``.
    deferred: list[tuple[Symptom, Observation]] = []
    for final in (False, True):
        for symptom, obs in deferred if final else failing:
            verdict = _decide(symptom.rules, obs.reason, d, results, era)
            if verdict == UNKNOWN and not final:
                deferred.append((symptom, obs))
                continue
            evidence = Evidence(str(symptom.probe), obs.reason.value, obs.detail)
            if isinstance(verdict, ExplainedBy):
                d.explained.setdefault(verdict.cause, []).append(evidence)
            elif isinstance(verdict, AfterProbe):
                follows.append((verdict.probe, evidence))
            else:
                d.causes.setdefault(verdict.cause, []).append(evidence)
    # A symptom that follows from another probe is filed under that probe's cause, found once the walk
    # is done (the login comes after the requests that need it); none found is ``unknown``, never lost.
    for _ in range(len(follows) + 1):
        unresolved = []
        for probe, evidence in follows:
            owner = _owner(d, probe)
            if owner is None:
                unresolved.append((probe, evidence))
            else:
                d.explained.setdefault(owner, []).append(evidence)
        if len(unresolved) == len(follows):
            break
        follows = unresolved
    for _, evidence in follows:
        d.causes.setdefault("unknown", []).append(evidence)
    if not d.causes and not d.pending and d.observed:  # "none": checked and healthy, not "not checked yet"
        d.causes["none"] = []
    d.still_working = [
        s.works for s in symptoms if s.works and s.probe in results and results[s.probe].reason is Reason.OK
    ]
    return d


def _owner(d: Diagnosis, probe: str) -> str | None:
    """The cause a probe's failure was filed under (as evidence, or as explained)."""
    for table in (d.causes, d.explained):
        for cause, evidence in table.items():
            if cause in d.causes and any(e.probe == probe for e in evidence):
                return cause
    return None


def _decide(
    rules: Sequence[Rule], reason: Reason, d: Diagnosis, results: Mapping[str, Observation], era: Era | None
) -> Verdict:
    for rule in rules:
        if rule.reasons is not None and reason not in rule.reasons:
            continue
        for verdict in rule.then:
            if isinstance(verdict, ExplainedBy):
                if verdict.cause in d.causes:
                    return verdict
            elif isinstance(verdict, AfterProbe):
                if _holds(Failing((verdict.probe,)), results, era):
                    return verdict
            elif _holds(verdict.when, results, era):
                return verdict
    return UNKNOWN


Verdict = Blame | ExplainedBy | AfterProbe
UNKNOWN = Blame("unknown")


def _holds(condition: Condition, results: Mapping[str, Observation], era: Era | None) -> bool:
    if condition is None:
        return True
    if isinstance(condition, AllOf):
        return all(_holds(c, results, era) for c in condition.conditions)
    if isinstance(condition, InEras):
        return era in condition.eras
    observed = [results[p] for p in condition.probes if p in results]
    if isinstance(condition, Unprobed):
        return not observed
    if isinstance(condition, Failing):
        return any(o.failing for o in observed)
    return any(o.reason is Reason.OK for o in observed)


# --- what explains what: read by the alert generator (inhibit rules, runbook) ----------------------


def explaining_causes(probe: str, symptoms: Sequence[Symptom] = SYMPTOMS) -> set[str]:
    """Causes that can explain a failing probe per its rules: directly, or through the probe it follows."""
    out: set[str] = set()
    for verdict in _verdicts(probe, symptoms):
        if isinstance(verdict, ExplainedBy):
            out.add(verdict.cause)
        elif isinstance(verdict, AfterProbe):
            out |= explaining_causes(verdict.probe, symptoms)
        elif verdict.cause != "unknown":
            out.add(verdict.cause)
    return out


def _verdicts(probe: str, symptoms: Sequence[Symptom]) -> Iterator[Verdict]:
    for symptom in symptoms:
        if symptom.probe == probe:
            for rule in symptom.rules:
                yield from rule.then
