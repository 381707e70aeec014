"""The one report of a cluster: /diagnose serves it as JSON, the status page as HTML, ``check`` as text.

Its steps are the troubleshooting page's questions in the page's order, each answered by the probes
whose symptom rows ask it (``model.failure_model.SYMPTOMS``), so every enabled probe is in exactly
one step and ``check`` cannot pass while any probe fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from exporter.model.failure_model import QUESTIONS
from exporter.model.triage import Diagnosis
from exporter.runtime.snapshot import ClusterSnapshot, ProbeState, Snapshot


@dataclass(frozen=True)
class ProbeRow:
    """One probe's state as the report shows it."""

    probe: str
    success: bool
    reason: str
    detail: str
    duration_seconds: float | None
    last_run: float | None
    last_change: float | None
    history: tuple[tuple[float, str, float], ...]  # (at, reason, duration)

    @classmethod
    def of(cls, s: ProbeState) -> ProbeRow:
        last = s.last
        return cls(
            probe=str(s.probe),
            success=s.success,
            reason=s.reason.value,
            detail=last.detail if last else "",
            duration_seconds=round(last.duration, 4) if last else None,
            last_run=last.finished if last else None,
            last_change=s.last_change,
            history=tuple((r.finished, r.reason.value, round(r.duration, 4)) for r in s.history),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "success": self.success,
            "reason": self.reason,
            "detail": self.detail,
            "duration_seconds": self.duration_seconds,
            "last_run": self.last_run,
            "last_change": self.last_change,
            "history": [{"at": at, "reason": r, "duration_seconds": d} for at, r, d in self.history],
        }


@dataclass(frozen=True)
class Step:
    """One of the page's questions and the probes that answer it."""

    question: str
    probes: tuple[ProbeRow, ...]

    @property
    def passed(self) -> bool:
        return all(p.success for p in self.probes)


@dataclass(frozen=True)
class ClusterReport:
    cluster: str
    era: str | None
    era_source: str
    platform_version: str | None
    diagnosis: Diagnosis
    steps: tuple[Step, ...]
    generated_at: float = field(default_factory=time.time)

    @property
    def probes(self) -> list[ProbeRow]:
        return [p for step in self.steps for p in step.probes]

    @property
    def ok(self) -> bool:
        """Every enabled probe passes and the diagnosis names no cause."""
        return all(s.passed for s in self.steps) and self.diagnosis.healthy and self.diagnosis.configured

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "era": self.era,
            "era_source": self.era_source,
            "platform_version": self.platform_version,
            "generated_at": self.generated_at,
            "ok": self.ok,
            **self.diagnosis.to_json(),
            "steps": [
                {"question": s.question, "passed": s.passed, "probes": [p.probe for p in s.probes]} for s in self.steps
            ],
            "probes": [p.to_json() for p in self.probes],
        }


def steps(cluster: ClusterSnapshot) -> tuple[Step, ...]:
    """The page's questions in its order, each with the enabled probes whose symptom asks it."""
    symptoms = cluster.symptoms
    states = {s.probe: s for s in cluster.enabled()}
    asked = {sym.probe: sym.question for sym in symptoms}
    out = []
    for question in QUESTIONS:
        rows = tuple(ProbeRow.of(states[s.probe]) for s in symptoms if s.question == question and s.probe in states)
        if rows:
            out.append(Step(question, rows))
    # A probe without a symptom row still shows (and fails the report) rather than vanish.
    orphans = tuple(ProbeRow.of(s) for p, s in states.items() if p not in asked)
    if orphans:
        out.append(Step("Other probes", orphans))
    return tuple(out)


def cluster_report(cluster: ClusterSnapshot) -> ClusterReport:
    return ClusterReport(
        cluster=cluster.name,
        era=cluster.era.value if cluster.era else None,
        era_source=cluster.era_source,
        platform_version=cluster.platform_version or None,
        diagnosis=cluster.diagnosis,
        steps=steps(cluster),
    )


def check_report(snapshot: Snapshot) -> dict[str, Any]:
    """``check --json``: every cluster's report; ``ok`` only when all are."""
    reports = [cluster_report(cs).to_json() for cs in snapshot.clusters.values()]
    return {"ok": all(r["ok"] for r in reports), "clusters": reports}


def render_check(report: dict[str, Any]) -> str:
    """``check``'s text: the page's steps, PASS or FAIL, each probe, then the conclusion."""
    lines: list[str] = []
    for c in report["clusters"]:
        version = f", platform {c['platform_version']}" if c["platform_version"] else ""
        lines.append(f"PlaceOS cluster {c['cluster']} (era {c['era']}, {c['era_source']}{version})")
        probes = {p["probe"]: p for p in c["probes"]}
        for step in c["steps"]:
            lines.append(f"  [{'PASS' if step['passed'] else 'FAIL'}] {step['question']}")
            for name in step["probes"]:
                p = probes[name]
                ms = f"{p['duration_seconds'] * 1000:.0f} ms" if p["duration_seconds"] is not None else ""
                mark = "ok" if p["success"] else p["reason"]
                detail = f"  {p['detail']}" if p["detail"] and not p["success"] else ""
                lines.append(f"         {p['probe']:<17} {mark:<18} {ms:>8}{detail}")
        titles = [cause["title"] for cause in c["root_causes"]]
        lines.append(f"  Conclusion: {'; '.join(titles) if not c['healthy'] else c['verdict']}")
        for cause in c["root_causes"]:
            if cause["advice"]:
                lines.append(f"    {cause['title']}: {cause['advice']}")
        if c["impacts"]:
            lines.append("  What users feel:")
            lines.extend(f"    - {i['text']}" for i in c["impacts"])
        lines.append("")
    return "\n".join(lines)
