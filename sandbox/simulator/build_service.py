"""The PlaceOS build service (``placeos-build-api``) that era D's core compiles drivers through.

``python -m sandbox.simulator.build_service --port P [--build-seconds S]``

What it reproduces, from PlaceOS/build_service ``0c8c0b3`` (``src/placeos-build-api/controllers/
driver.cr``, ``controllers/monitor.cr``, ``task.cr``) and core's client of it (core ``3351920``
``src/placeos-core/driver_manager/build_api.cr``; internals §11.3):

* ``GET /api/build/v1/`` -> ``{"health":"ok"}``; ``GET /api/build/v1/version`` -> ``{version,
  build_time, commit, service: "build-api"}``.
* ``GET /api/build/v1/monitor?state=pending|running|cancelled|error|done`` (default ``pending``): the
  jobs in that state as ``TaskStatus`` ``{state, id, message, driver, repo, branch, commit,
  timestamp}``; an unknown state is a 400.
* ``GET /api/build/v1/<arch>/compiled/<file>?url&branch&commit``: 200 ``LinkData`` ``{size, md5,
  modified, url, link_expiry}`` when that build exists, else 404. The seed's drivers are built at start
  (a running cluster's drivers are), with one ``done`` job each.
* ``POST /api/build/v1/<arch>/<file>?url&branch&commit&force``: 202 with the job's ``TaskStatus`` and
  ``Content-Location: /api/build/v1/<arch>/task/<id>``; the job is ``pending``, then ``running``, then
  ``done`` after ``--build-seconds`` (a sandbox build always succeeds).
* ``GET /api/build/v1/<arch>/task/<id>``: 200 with the status while pending/running, 303 with
  ``Location: /api/build/v1/<arch>/compiled/<executable>`` once done, 404 for an unknown job.
* ``DELETE /api/build/v1/cancel/<job>``: cancels a pending job (200), 409 for a running one, else 404.

Its faults are the generic process ones (``break build-service kill|stop|garbage``): core's calls then
fail with a connect error, a read timeout or a bad answer. ``GET /_sandbox/ready`` (README contract 6).
Left out: git checkout and compilation, S3 (artifacts are not downloadable), metadata/defaults routes,
failed-attempt limits.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.simulator import seed

log = logging.getLogger("sandbox.build_service")

BASE = "/api/build/v1"
STATES = ("pending", "running", "cancelled", "error", "done")
VERSION = "1.4.2"


def rfc3339(t: float) -> str:
    """Crystal's ``Time#to_json``: RFC 3339, UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def executable_name(source: str, arch: str, commit: str) -> str:
    """build-api ``executable_name``: ``<source without .cr, / and . as _>_<commit[..6]>_<arch>``."""
    stem = source.removesuffix(".cr").replace("/", "_").replace(".", "_")
    return f"{stem}_{commit[:7]}_{arch}".lower()


@dataclass
class Job:
    """One compilation request and where it stands."""

    id: str
    driver: str
    repo: str
    branch: str
    commit: str
    arch: str
    created: float
    state: str = "pending"
    message: str = ""
    updated: float = field(default_factory=time.time)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "id": self.id,
            "message": self.message,
            "driver": self.driver,
            "repo": self.repo,
            "branch": self.branch,
            "commit": self.commit,
            "timestamp": rfc3339(self.updated),
        }


class BuildService:
    """Jobs and built artifacts, in memory."""

    def __init__(self, build_seconds: float) -> None:
        self.build_seconds = build_seconds
        self.jobs: dict[str, Job] = {}
        self.built: dict[tuple[str, str, str, str, str], float] = {}  # (url, branch, file, commit7, arch)
        self.started = time.time()
        for driver in seed.DRIVERS:
            job = self._job(seed.REPOSITORY_URI, seed.REPOSITORY_BRANCH, driver.file_name, "a1b2c3d4e5f6", "amd64")
            self._finish(job)

    def _job(self, url: str, branch: str, source: str, commit: str, arch: str) -> Job:
        job = Job(str(uuid.uuid4()), source, url, branch, commit, arch, time.monotonic())
        job.message = f"Driver {source} compilation queued"
        self.jobs[job.id] = job
        return job

    def _finish(self, job: Job) -> None:
        job.state, job.updated = "done", time.time()
        job.message = f"Driver {job.driver} compilation completed"
        self.built[(job.repo, job.branch, job.driver, job.commit[:7], job.arch)] = job.updated

    def advance(self) -> None:
        """Jobs move on with time: pending for a third of the build, then running, then done."""
        now = time.monotonic()
        for job in self.jobs.values():
            if job.state == "pending" and now - job.created >= self.build_seconds / 3:
                job.state, job.updated, job.message = "running", time.time(), f"Compiling {job.driver}"
            if job.state == "running" and now - job.created >= self.build_seconds:
                self._finish(job)

    def link(self, request: web.Request, url: str, branch: str, source: str, commit: str, arch: str) -> Any:
        modified = self.built.get((url, branch, source, commit[:7], arch))
        if modified is None:
            return None
        name = executable_name(source, arch, commit)
        return {
            "size": 8_388_608,
            "md5": hashlib.md5(name.encode()).hexdigest(),
            "modified": rfc3339(modified),
            "url": f"http://{request.host}/_sandbox/artifacts/{name}",
            "link_expiry": rfc3339(time.time() + 300),
        }


def _params(request: web.Request, *names: str) -> dict[str, str] | web.Response:
    """AC's required query params: 422 ``{"error": "missing required parameter", ...}`` without one."""
    values = {name: request.query.get(name) for name in names}
    missing = [name for name, value in values.items() if value is None]
    if missing:
        body = {"error": "missing required parameter", "parameter": missing[0], "restriction": "String"}
        return web.json_response(body, status=422)
    return {k: str(v) for k, v in values.items()}


def make_app(service: BuildService) -> web.Application:
    r = web.RouteTableDef()

    @r.get(f"{BASE}/")
    async def index(request: web.Request) -> web.Response:
        return web.json_response({"health": "ok"})

    @r.get(f"{BASE}/version")
    async def version(request: web.Request) -> web.Response:
        built = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(service.started))
        return web.json_response({"version": VERSION, "build_time": built, "commit": "DEV", "service": "build-api"})

    @r.get(f"{BASE}/monitor")
    async def monitor(request: web.Request) -> web.Response:
        state = request.query.get("state", "pending").lower()
        if state not in STATES:
            body = {"error": f"Unknown enum PlaceOS::Api::State value: {state}", "parameter": "state"}
            return web.json_response(body, status=400)
        service.advance()
        return web.json_response([j.status() for j in service.jobs.values() if j.state == state])

    @r.delete(f"{BASE}/cancel/{{job}}")
    async def cancel(request: web.Request) -> web.Response:
        service.advance()
        job = service.jobs.get(request.match_info["job"])
        if job is not None and job.state == "pending":
            job.state, job.updated, job.message = "cancelled", time.time(), "Job cancelled by admin"
            return web.json_response({"status": "success", "message": f"Job with id {job.id} cancelled successfully"})
        if job is not None and job.state == "running":
            return web.json_response({"status": "error", "message": "Can not cancel already running job."}, status=409)
        return web.Response(status=404)

    @r.get(f"{BASE}/{{arch}}/compiled/{{file_name:.+}}")
    async def compiled(request: web.Request) -> web.Response:
        params = _params(request, "url", "commit")
        if isinstance(params, web.Response):
            return params
        service.advance()
        branch = request.query.get("branch") or "master"
        source, arch = request.match_info["file_name"], request.match_info["arch"]
        link = service.link(request, params["url"], branch, source, params["commit"], arch)
        return web.json_response(link) if link is not None else web.Response(status=404)

    @r.get(f"{BASE}/{{arch}}/task/{{id}}")
    async def task(request: web.Request) -> web.Response:
        service.advance()
        job = service.jobs.get(request.match_info["id"])
        if job is None:
            return web.Response(status=404)
        if job.state == "done":
            location = f"{BASE}/{job.arch}/compiled/{executable_name(job.driver, job.arch, job.commit)}"
            return web.json_response(job.status(), status=303, headers={"Location": location})
        return web.json_response(job.status())

    @r.post(f"{BASE}/{{arch}}/{{file_name:.+}}")
    async def build(request: web.Request) -> web.Response:
        params = _params(request, "url", "branch", "commit")
        if isinstance(params, web.Response):
            return params
        arch, source = request.match_info["arch"], request.match_info["file_name"]
        job = service._job(params["url"], params["branch"], source, params["commit"], arch)
        log.info("compile request for %s@%s (%s) queued as %s", source, params["commit"], arch, job.id)
        headers = {"Content-Location": f"{BASE}/{arch}/task/{job.id}"}
        return web.json_response(job.status(), status=202, headers=headers)

    @r.get("/_sandbox/ready")
    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_routes(r)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.simulator.build_service", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--build-seconds", type=float, default=0.6, help="how long a compilation takes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(make_app(BuildService(args.build_seconds)), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
