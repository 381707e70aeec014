"""The diagnosis: a pure function from probe results to root causes and active impacts (design §3).

It walks the probes in the troubleshooting page's triage order and applies ``failure_model.RULES``:
backend probes establish causes first, then each user-path symptom is either explained by a cause
already found ("execute fails because Redis is down" is Redis, not a second problem) or names its
own cause, or ``unknown``. No I/O and no clock: the same results always give the same answer, which
is what makes it table-testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.failure_model import (
    CAUSES,
    COMPONENTS,
    DATABASE_PROBES,
    IMPACTS,
    RULES,
    TRIAGE_ORDER,
    impacts_of,
)
from exporter.reasons import Reason
from exporter.settings import ProbeName

# What users do most, said when it still works ("Redis is down ... logins still work", issue 7).
STILL_WORKING = {"login": "logins", "search": "listing and search", "execute": "executing functions"}


@dataclass(frozen=True)
class Evidence:
    """A probe result that led to, or is explained by, a cause."""

    probe: str
    reason: str
    detail: str = ""


@dataclass
class Diagnosis:
    """Root causes (with evidence), failed components and the user impacts they imply."""

    causes: dict[str, list[Evidence]] = field(default_factory=dict)
    explained: dict[str, list[Evidence]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    observed: int = 0  # probes with a result (not pending)

    @property
    def failed_components(self) -> set[str]:
        return {c for cause in self.causes for c in CAUSES[cause].components}

    @property
    def impacts(self) -> set[str]:
        return impacts_of(frozenset(self.causes))

    @property
    def healthy(self) -> bool:
        return not self.causes or set(self.causes) == {"none"}

    def verdict(self) -> str:
        """One line a person reads first."""
        if self.healthy:
            if self.pending and not self.observed:
                return "Waiting for the first probe results"
            return "Healthy: every probe passes" if not self.pending else "Healthy so far: some probes still pending"
        parts = [CAUSES[c].title for c in self.causes if c != "none"]
        broken = sorted(self.impacts)
        text = "; ".join(parts)
        if broken:
            text += ". Broken for users: " + ", ".join(IMPACTS[i].text.lower() for i in broken)
        keeps = [COMPONENTS[c].unaffected for c in sorted(self.failed_components) if COMPONENTS[c].unaffected]
        if keeps and len(self.failed_components) == 1:
            text += f". {keeps[0]}"
        still = [words for impact, words in STILL_WORKING.items() if impact not in self.impacts]
        if still and self.failed_components:
            text += f". Still working: {', '.join(still)}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict(),
            "healthy": self.healthy,
            "root_causes": [
                {
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
        }


@dataclass(frozen=True)
class Observation:
    """What the diagnosis needs of a probe: its reason and a short detail."""

    reason: Reason
    detail: str = ""


def diagnose(results: Mapping[ProbeName, Observation]) -> Diagnosis:
    """Root causes for the given results of the enabled probes (absent = not enabled)."""
    d = Diagnosis()
    d.pending = sorted(p.value for p, o in results.items() if o.reason is Reason.PENDING)
    d.observed = len(results) - len(d.pending)
    for step in TRIAGE_ORDER:
        probe, obs = _resolve(step, results)
        if obs is None or obs.reason in (Reason.OK, Reason.PENDING):
            continue
        evidence = Evidence(probe.value, obs.reason.value, obs.detail)
        target = _decide(RULES[step], obs.reason, d, results)
        if target.startswith("explained:"):
            d.explained.setdefault(target.split(":", 1)[1], []).append(evidence)
        else:
            d.causes.setdefault(target, []).append(evidence)
    # A symptom explained by "a failing <probe>" whose own attribution came later in the walk: file it
    # under the cause that probe ended up with.
    for key in [k for k in d.explained if k not in d.causes]:
        owner = next((c for c, ev in d.causes.items() if any(e.probe == key for e in ev)), None)
        owner = owner or next(
            (c for c, ev in d.explained.items() if c in d.causes and any(e.probe == key for e in ev)), None
        )
        moved = d.explained.pop(key)
        if owner:
            d.explained.setdefault(owner, []).extend(moved)
    if not d.causes and not d.pending:  # "none" means checked and healthy, not "not checked yet"
        d.causes["none"] = []
    return d


def _resolve(step: ProbeName | str, results: Mapping[ProbeName, Observation]) -> tuple[ProbeName, Observation | None]:
    """The probe behind a triage step ("database" is whichever database probe the era runs)."""
    if step == "database":
        for probe in DATABASE_PROBES:
            if probe in results:
                return probe, results[probe]
        return DATABASE_PROBES[0], None
    probe = ProbeName(step)
    return probe, results.get(probe)


def _decide(rules: tuple, reason: Reason, d: Diagnosis, results: Mapping[ProbeName, Observation]) -> str:  # type: ignore[type-arg]
    for reasons, candidates in rules:
        if reasons is not None and reason not in reasons:
            continue
        for target, condition in candidates:
            holds, by = _holds(condition, d, results)
            if holds:
                return f"explained:{by}" if target == "explained" else str(target)
    return "unknown"


def _holds(condition: str, d: Diagnosis, results: Mapping[ProbeName, Observation]) -> tuple[bool, str]:
    """(condition holds, the cause that explains when it is a cause:/failing: condition)."""
    if condition == "always":
        return True, ""
    kind, _, arg = condition.partition(":")
    if kind == "cause":
        return arg in d.causes, arg
    _, obs = _resolve(arg, results)
    if kind == "ok":
        return obs is not None and obs.reason is Reason.OK, ""
    if kind == "failing":
        failing = obs is not None and obs.reason not in (Reason.OK, Reason.PENDING)
        # A failing probe explains a symptom through whatever cause it was attributed to.
        by = next((c for c, ev in d.causes.items() if any(e.probe == arg for e in ev)), arg)
        by = next((c for c, ev in d.explained.items() if any(e.probe == arg for e in ev)), by)
        return failing, by
    raise ValueError(f"unknown condition {condition!r}")
