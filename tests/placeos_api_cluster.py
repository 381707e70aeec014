"""The PlaceOS API double's cluster, build-monitor and edge routes (internals §11.1; placeos-2026 §2)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from placeos_api_wire import (
    _AB,
    BUILD_HOSTPORT,
    CORE_HOST,
    CORE_ID,
    CORE_PORT,
    CORE_URI,
    MODULE_ID,
    OTHER_MODULE_ID,
    _json,
    _Principal,
    _Unhandled,
)


class ClusterRoutes:
    """Routes of the PlaceOS API double (tests/placeos_api.py); mixed into ``PlaceOSApi``."""

    # ------------------------------------------------------------------ cluster (internals §11.1)

    def _cluster_guard(self, p: _Principal) -> None:
        if not p.admin:  # check_admin before can_read
            raise self._forbidden()
        self._require(p, ["cluster"], "read")
        etcd = self._etcd_fresh_failure()
        if etcd:
            raise _Unhandled(etcd)
        if self.era in ("C", "D") and self._on("redis_down"):  # node_hash is HGETALL {service_core}_lookup
            raise _Unhandled(self.redis_error())

    def _loaded(self) -> dict[str, list[str]]:
        """core GET /api/core/v1/status/loaded ``local``: driver key -> module ids."""
        loaded: dict[str, list[str]] = {}
        if not (self._on("driver_never_compiled") or self._on("module_not_loaded")):
            loaded[self._driver_key("display", "driver-1")] = [] if self._on("driver_crashloop") else [MODULE_ID]
        if not self._on("driver_compile_failed"):
            loaded[self._driver_key("lighting", "driver-2")] = [OTHER_MODULE_ID]
        return loaded

    def _core_status(self) -> dict[str, Any]:
        unavailable = []
        compiled = []
        for name, slug, driver_id, broken in (
            ("Display", "display", "driver-1", self._on("driver_never_compiled")),
            ("Lighting", "lighting", "driver-2", self._on("driver_compile_failed")),
        ):
            if broken:
                unavailable.append(
                    {
                        "name": name,
                        "reason": f"failed to compile {name} from drivers: drivers/place/{slug}.cr:12:5\n\n"
                        "Error: undefined constant Foo",
                    }
                )
            else:
                compiled.append(self._driver_key(slug, driver_id))
        loaded = self._loaded()
        return {
            "available_repositories": ["drivers"] if self.era in _AB else [],
            "unavailable_repositories": [],
            "compiled_drivers": compiled,
            "unavailable_drivers": unavailable,
            "run_count": {
                "local": {"drivers": len(loaded), "modules": sum(max(len(m), 1) for m in loaded.values())},
                "edge": {},
            },
        }

    @staticmethod
    def _load() -> dict[str, Any]:
        local = {
            "hostname": CORE_HOST,
            "cpu_count": 2,
            "core_cpu": 1.5,
            "total_cpu": 12.0,
            "memory_total": 4_000_000,
            "memory_usage": 1_200_000,
            "core_memory": 150_000,
        }
        return {"local": local, "edge": {}}

    async def _cluster(self, request: web.Request) -> web.Response:
        """GET /cluster?include_status=: one entry per core in discovery; failing cores silently dropped."""
        p = self._authorize(request)
        self._cluster_guard(p)
        raw = request.query.get("include_status", "false")
        if raw not in ("true", "false"):
            return _json(400, {"error": "invalid parameter", "parameter": "include_status", "restriction": "Bool"})
        include_status = raw == "true"
        if self._on("core_down"):
            return _json(200, [])
        if not include_status and self.era != "D":
            return _json(200, [{"id": CORE_ID, "uri": CORE_URI}])
        if self._on("core_stale"):
            await asyncio.sleep(float(self.knobs["core_retry_delay"]))
            return _json(200, [])
        entry: dict[str, Any] = {"id": CORE_ID, "uri": CORE_URI, "load": self._load()}
        if include_status:
            entry["status"] = self._core_status()
        return _json(200, [entry])

    async def _cluster_core(self, request: web.Request) -> web.Response:
        p = self._authorize(request)
        self._cluster_guard(p)
        core_id = request.match_info["core_id"]
        include_status = request.query.get("include_status", "false") == "true"
        if self._on("core_down") or core_id != CORE_ID:
            return _json(404, {"error": f"core not registered: {core_id}"})
        if self._on("core_stale"):
            await asyncio.sleep(float(self.knobs["core_retry_delay"]))
            raise _Unhandled(f"Error connecting to '{CORE_HOST}:{CORE_PORT}': Connection refused")
        entries = []
        for key, modules in self._loaded().items():
            local: dict[str, Any] = {"modules": modules}
            if include_status:
                local["status"] = self._driver_status(key)
            entries.append({"driver": key, "local": local, "edge": {}})
        return _json(200, entries)

    def _driver_status(self, key: str) -> dict[str, Any]:
        """core GET /status/driver?path=<key> ``local`` (core-client DriverStatus::Metadata)."""
        if "display" in key and self._on("driver_crashloop"):
            self._launch_count += 1  # relaunched immediately after every exit (§11.2)
            return {
                "running": False,
                "module_instances": 1,
                "last_exit_code": 1,
                "launch_count": self._launch_count,
                "launch_time": int(time.time()),
            }
        return {
            "running": True,
            "module_instances": 1,
            "last_exit_code": 0,
            "launch_count": 1,
            "launch_time": self._launch_time,
            "percentage_cpu": 0.2,
            "memory_total": 4_000_000,
            "memory_usage": 20_000,
        }

    async def _build_monitor(self, request: web.Request) -> web.Response:
        """GET /build/monitor (rest-api cd3ae1f, 2025-09; era D here). Absent (404) before."""
        if self.era != "D":
            return web.Response(status=404, text="404: Not Found")
        self._authorize(request)
        if self._on("build_service_unreachable"):
            text = f"Call to Build service endpoint failed with error  Error connecting to '{BUILD_HOSTPORT}': "
            return web.Response(status=500, text=text + "Connection refused", content_type="text/plain")
        return _json(200, [])

    async def _edges_health(self, request: web.Request) -> web.Response:
        """GET /edges/health (rest-api #417, era D): per-core errors are swallowed, so ``{}`` when the core lacks
        the PPT-11 routes (rest-api ee8db8e edges.cr collect_edges_health). Absent (404) before."""
        if self.era != "D":
            return web.Response(status=404, text="404: Not Found")
        p = self._authorize(request)
        if not p.support:
            raise self._forbidden()
        return _json(200, {})
