"""The ``check`` report: the troubleshooting page's steps, each passed or failed, then the conclusion.

Read top to bottom by a person (or as JSON by a machine). Steps are data: the page's questions
(internals §9) in its order, each answered by the probes that ask it.
"""

from __future__ import annotations

from typing import Any

from exporter.diagnosis import Observation, diagnose
from exporter.settings import ProbeName
from exporter.snapshot import ProbeState, Snapshot

# (question, probes that answer it) in the page's triage order; backends first.
STEPS: tuple[tuple[str, tuple[ProbeName, ...]], ...] = (
    ("Do the backends answer? (etcd, database, Redis, Elasticsearch)",
     (ProbeName.ETCD, ProbeName.RETHINKDB, ProbeName.POSTGRES, ProbeName.REDIS, ProbeName.ELASTICSEARCH)),
    ("Can you log in?", (ProbeName.API_HEALTH, ProbeName.LOGIN)),
    ("Does Backoffice list the systems?", (ProbeName.SYSTEMS_LIST, ProbeName.SEARCH_INDEX_LAG)),
    ("Do the modules and module functions load?", (ProbeName.MODULE_FUNCTIONS,)),
    ("Does executing a function work?", (ProbeName.EXECUTE, ProbeName.WEBSOCKET)),
    ("Are cores registered and drivers running?",
     (ProbeName.CORE_DISCOVERY, ProbeName.DRIVERS, ProbeName.TRIGGERS_HEALTH)),
)  # fmt: skip


def probe_row(state: ProbeState) -> dict[str, Any]:
    last = state.last
    return {
        "probe": state.probe.value,
        "success": state.success,
        "reason": state.reason.value,
        "detail": last.detail if last else "",
        "duration_seconds": round(last.duration, 4) if last else None,
    }


def check_report(snapshot: Snapshot) -> dict[str, Any]:
    clusters = []
    all_ok = True
    for cs in snapshot.clusters.values():
        states = {s.probe: s for s in cs.enabled()}
        d = diagnose({p: Observation(s.reason, s.last.detail if s.last else "") for p, s in states.items()})
        steps = []
        for question, probes in STEPS:
            rows = [probe_row(states[p]) for p in probes if p in states]
            if rows:
                steps.append({"question": question, "passed": all(r["success"] for r in rows), "probes": rows})
        ok = all(s["passed"] for s in steps)
        all_ok = all_ok and ok
        clusters.append(
            {
                "cluster": cs.name,
                "era": cs.era.value if cs.era else None,
                "era_source": cs.era_source,
                "platform_version": cs.platform_version or None,
                "ok": ok,
                "steps": steps,
                **d.to_json(),
            }
        )
    return {"ok": all_ok, "clusters": clusters}


def render_check(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for c in report["clusters"]:
        version = f", platform {c['platform_version']}" if c["platform_version"] else ""
        lines.append(f"PlaceOS cluster {c['cluster']} (era {c['era']}, {c['era_source']}{version})")
        for step in c["steps"]:
            lines.append(f"  [{'PASS' if step['passed'] else 'FAIL'}] {step['question']}")
            for p in step["probes"]:
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
