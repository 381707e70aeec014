"""Test support: the real exporter on a free port, scraping and parsing it, and waiting on conditions.

Waits are polls with a deadline; they return as soon as the condition holds and fail with what
was last seen, never sleep-and-hope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.runtime.process import Exporter
from exporter.settings import Settings, load_settings

T = TypeVar("T")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def wait_for(check: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def settings_for(cluster: Mapping[str, Any], **exporter: Any) -> Settings:
    """Settings with one cluster, fast schedules by default, listening on a free port."""
    data: dict[str, Any] = {"listen_address": "127.0.0.1:0", "interval": 1.0, "timeout": 0.6}
    data.update(exporter)
    clusters = exporter.pop("clusters", None) or [dict(cluster)]
    data["clusters"] = clusters
    return load_settings(None, environ={}, overrides=data)


class RunningExporter:
    """The real exporter (scheduler + HTTP server) in this process, on a free port."""

    def __init__(self, settings: Settings) -> None:
        self.exporter = Exporter(settings, None, {})
        self.port = 0
        self.http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RunningExporter:
        self.port = await self.exporter.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        await self.exporter.stop()

    async def get(self, path: str, **headers: str) -> tuple[int, str, Mapping[str, str]]:
        assert self.http is not None
        async with self.http.get(self.url + path, headers=headers) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    async def samples(self, path: str = "/metrics") -> Samples:
        status, text, _ = await self.get(path)
        assert status == 200, text
        return parse(text)

    async def value(self, name: str, path: str = "/metrics", **labels: str) -> float | None:
        return (await self.samples(path)).get((name, frozenset(labels.items())))

    async def reason(self, probe: str, path: str = "/metrics") -> str | None:
        """The reason whose state-set series is 1 for this probe."""
        samples = await self.samples(path)
        for (name, labels), value in samples.items():
            if name == "placeos_probe_failure_reason" and value == 1 and ("probe", probe) in labels:
                return dict(labels)["reason"]
        return None

    async def wait_reason(self, probe: str, reason: str, timeout: float = 10.0) -> None:
        async def check() -> bool:
            return await self.reason(probe) == reason

        await wait_for(check, timeout, f"{probe} reason {reason}")


def poll(check: Callable[[], Any], deadline: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns a truthy value (exceptions count as not yet); fail at the deadline."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except Exception as e:
            last = e
        if time.monotonic() >= end:
            pytest.fail(f"{what}: not true after {deadline:g}s (last: {last!r})"[:2000])
        time.sleep(interval)
