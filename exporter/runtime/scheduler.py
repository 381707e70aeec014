"""Background probing: one asyncio task per (cluster, probe), each on its own interval (design §1).

The number of Prometheus servers scraping never multiplies the load on PlaceOS, and a hung backend
can never slow a scrape: /metrics only renders the snapshot this module writes. Each run has a hard
deadline below its interval; an overrunning probe is cancelled and recorded as ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from exporter import log
from exporter.model.vocabulary import Era, Reason
from exporter.probes import REGISTRY, probe_plan
from exporter.probes.base import Outcome, ProbeContext, ProbeFailure, ProbeSpec, classify
from exporter.probes.clients.rest_api import PlatformSigns
from exporter.runtime.era import era_of
from exporter.runtime.schedule import schedule
from exporter.runtime.snapshot import ClusterSnapshot, ProbeResult, Snapshot
from exporter.settings import ClusterConfig, Settings

# How often an ``era: auto`` cluster whose API could not be asked is asked again.
ERA_RETRY_SECONDS = 60.0
# Shutdown waits at most this long for probe tasks to finish cancelling.
STOP_TIMEOUT = 5.0
STOP_RECANCEL = 0.1  # seconds between cancellations of a task that is still running
# First runs are spread over this window so a start-up does not hit every backend at once.
MAX_START_SPREAD = 1.0

# What tells the era, or None: probes/clients/rest_api.platform_version.
EraDetector = Callable[[ClusterConfig, aiohttp.ClientSession, float], Awaitable[PlatformSigns | None]]


def new_http_session() -> aiohttp.ClientSession:
    """One HTTP session for all probes: no pooled connections (a probe measures a fresh connect and
    never trips over a connection a restarted backend dropped), no cookies carried between clusters."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0, ttl_dns_cache=10),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": "placeos-exporter"},
        auto_decompress=True,
    )


class Scheduler:
    """Runs the probes of every cluster and records their results in the snapshot."""

    def __init__(
        self,
        settings: Settings,
        snapshot: Snapshot,
        detect_era: EraDetector | None = None,
        registry: Sequence[ProbeSpec] = REGISTRY,
    ) -> None:
        self.settings = settings
        self.registry = {spec.name: spec for spec in registry}
        self.snapshot = snapshot
        self.detect_era = detect_era
        self.log = log.get()
        self.http: aiohttp.ClientSession | None = None
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.state: dict[tuple[str, str], dict[str, object]] = {}
        self.shared: dict[str, dict[str, object]] = {}
        self.first_round = asyncio.Event()
        self.kicks: dict[tuple[str, str], asyncio.Event] = {}  # (cluster, probe) -> run now
        for cluster in settings.clusters:
            self.snapshot.clusters.setdefault(cluster.name, ClusterSnapshot(cluster.name, settings.history))

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.http = new_http_session()
        for cluster in self.settings.clusters:
            # Series exist from the first scrape on: enable the probes of the configured (or, for
            # ``era: auto``, the inferred) era now; detection may switch the era moments later.
            cs = self.snapshot.clusters[cluster.name]
            if cs.era is None:
                era = Era(cluster.era) if cluster.era != "auto" else cluster.inferred_era()
                cs.set_era(era, "configured" if cluster.era != "auto" else "fallback")
                self._plan(cluster, cs, era)
        for cluster in self.settings.clusters:
            self.tasks[cluster.name] = [asyncio.create_task(self._cluster_main(cluster), name=f"era:{cluster.name}")]

    async def stop(self) -> None:
        pending = {t for ts in self.tasks.values() for t in ts}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        # Cancelled again until done: Python 3.11's wait_for (inside redis-py, for one) can swallow a
        # cancellation that coincides with its inner read finishing, and the loop would run on. Bounded:
        # a probe stuck in a driver that ignores cancellation cannot hold shutdown.
        while pending and loop.time() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=min(STOP_RECANCEL, deadline - loop.time()))
        self.tasks.clear()
        if self.http is not None:
            await self.http.close()
            self.http = None

    # -- one round, for `check` --------------------------------------------------------------------
    async def run_once(self) -> None:
        """Resolve each cluster's era and run every enabled probe once, concurrently."""
        own_session = self.http is None
        if own_session:
            self.http = new_http_session()
        try:
            jobs = []
            for cluster in self.settings.clusters:
                cs = self.snapshot.clusters[cluster.name]
                await self._resolve_era(cluster, cs)
                for state in cs.enabled():
                    jobs.append(self._run_and_record(cluster, cs, state.probe))
            await asyncio.gather(*jobs)
        finally:
            if own_session and self.http is not None:
                await self.http.close()
                self.http = None

    def _plan(self, cluster: ClusterConfig, cs: ClusterSnapshot, era: Era) -> None:
        plan = probe_plan(cluster, era, tuple(self.registry.values()))
        cs.set_enabled([name for name, why in plan.items() if not why], {n: why for n, why in plan.items() if why})

    # -- per cluster -------------------------------------------------------------------------------
    async def _cluster_main(self, cluster: ClusterConfig) -> None:
        """Resolve the era, start the probe loops, and re-detect an undetected era from time to time."""
        cs = self.snapshot.clusters[cluster.name]
        await self._resolve_era(cluster, cs)
        loops = self._start_loops(cluster, cs)
        try:
            while cluster.era == "auto" and cs.era_source != "detected":
                await asyncio.sleep(ERA_RETRY_SECONDS)
                before = cs.era
                await self._resolve_era(cluster, cs)
                if cs.era != before:
                    for task in loops:
                        task.cancel()
                    await asyncio.gather(*loops, return_exceptions=True)
                    loops = self._start_loops(cluster, cs)
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def _start_loops(self, cluster: ClusterConfig, cs: ClusterSnapshot) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._probe_loop(cluster, cs, state.probe), name=f"probe:{cluster.name}:{state.probe}")
            for state in cs.enabled()
        ]

    async def _resolve_era(self, cluster: ClusterConfig, cs: ClusterSnapshot) -> None:
        if cluster.era != "auto":
            era, source, version = Era(cluster.era), "configured", cs.platform_version
        else:
            found = await self._detect_version(cluster)
            version, services, offset = found if found else ("", None, None)
            detected = era_of(version, services, offset) if version else None
            era, source = (detected, "detected") if detected else (cluster.inferred_era(), "fallback")
        if (era, source, version) != (cs.era, cs.era_source, cs.platform_version):
            cs.set_era(era, source, version)
            self.log.info(
                "cluster %s: era %s (%s%s)", cluster.name, era, source, f", platform {version}" if version else ""
            )
        self._plan(cluster, cs, era)

    async def _detect_version(self, cluster: ClusterConfig) -> PlatformSigns | None:
        if self.detect_era is None or not cluster.api.url or self.http is None:
            return None
        try:
            return await asyncio.wait_for(
                self.detect_era(cluster, self.http, self.settings.timeout), self.settings.timeout
            )
        except Exception as exc:  # detection failing is expected while the API is down
            reason, _ = classify(exc)
            self.log.debug("cluster %s: platform version unknown (%s)", cluster.name, reason)
            return None

    # -- per probe ---------------------------------------------------------------------------------
    async def _probe_loop(self, cluster: ClusterConfig, cs: ClusterSnapshot, probe: str) -> None:
        interval, _ = schedule(self.settings, cluster, self.registry[probe])
        loop = asyncio.get_running_loop()
        # A first result quickly (readiness), then a steady period on a random phase of the interval, so
        # the probes of many clusters spread over the whole interval instead of bunching (bench "scale").
        await asyncio.sleep(random.uniform(0, min(MAX_START_SPREAD, interval * 0.1)))
        await self._run_and_record(cluster, cs, probe)
        next_run = loop.time() + random.uniform(0, interval)
        kick = self.kicks.setdefault((cluster.name, probe), asyncio.Event())
        while True:
            # A re-check after another probe's change runs at once, off the steady schedule.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), max(0.0, next_run - loop.time()))
            if kick.is_set():
                kick.clear()
                await self._run_and_record(cluster, cs, probe, recheck=True)
                continue
            await self._run_and_record(cluster, cs, probe)
            next_run += interval
            if next_run < loop.time():  # overran (cannot happen with timeout < interval): stay steady
                next_run = loop.time() + interval

    async def _run_and_record(
        self, cluster: ClusterConfig, cs: ClusterSnapshot, probe: str, recheck: bool = False
    ) -> None:
        """Run, record and, when a scheduled run changes state, re-check the cluster's other probes at once
        so the diagnosis never rests on results from before the change (the snapshot holds the last
        settled diagnosis until they report). A re-check's own change starts no further round."""
        result = await self.run_probe(cluster, cs, probe)
        previous = cs.probes[probe].reason
        others: list[str] = []
        if not recheck and result.reason is not previous and all(s.last for s in cs.enabled()):
            others = [s.probe for s in cs.enabled() if s.probe != probe]
        # Probes on a long interval of their own (the index lag) run again too, but the diagnosis does not
        # wait for them: their failure from before the change must not outlive it by minutes.
        awaited = [p for p in others if self.registry[p].interval is None]
        if cs.record(result, recheck=awaited):  # the snapshot re-diagnoses the cluster when it changes
            self._log_change(cluster.name, result, previous)
            for other in others:
                if (event := self.kicks.get((cluster.name, other))) is not None:
                    event.set()
        if not self.first_round.is_set() and all(s.last for c in self.snapshot.clusters.values() for s in c.enabled()):
            self.first_round.set()

    async def run_probe(self, cluster: ClusterConfig, cs: ClusterSnapshot, probe: str) -> ProbeResult:
        """One run under a hard deadline; never raises (except cancellation of the caller)."""
        assert self.http is not None
        spec = self.registry[probe]
        _, timeout = schedule(self.settings, cluster, spec)
        loop = asyncio.get_running_loop()
        ctx = ProbeContext(
            cluster=cluster,
            era=cs.era or cluster.inferred_era(),
            timeout=timeout,
            deadline=loop.time() + timeout,
            http=self.http,
            state=self.state.setdefault((cluster.name, probe), {}),
            shared=self.shared.setdefault(cluster.name, {}),
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                outcome = await spec.run(ctx)
        except TimeoutError:
            outcome = Outcome(Reason.TIMEOUT, f"no answer within {timeout:g}s")
        except ProbeFailure as exc:
            outcome = Outcome(exc.reason, exc.detail, exc.facts)
        except Exception as exc:
            reason, detail = classify(exc, spec.errors)
            outcome = Outcome(reason, detail)
        duration = time.perf_counter() - started
        return ProbeResult(probe, outcome.reason, log.REDACT(outcome.detail), duration, time.time(), outcome.facts)

    def _log_change(self, cluster: str, result: ProbeResult, previous: Reason) -> None:
        extra = {
            "cluster": cluster,
            "probe": str(result.probe),
            "reason": str(result.reason),
            "previous": str(previous),
        }
        if result.success:
            self.log.info("probe %s of cluster %s is ok (was %s)", result.probe, cluster, previous, extra=extra)
        else:
            self.log.warning(
                "probe %s of cluster %s failed: %s (%s; was %s)",
                result.probe,
                cluster,
                result.reason,
                result.detail,
                previous,
                extra=extra,
            )
