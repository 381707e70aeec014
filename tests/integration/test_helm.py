"""Packaging: the Helm chart (helm/placeos-exporter, rendered with the Helm v4 SDK of helm-python-sdk, no
helm binary) and the deploy docs' snippets.

Lint, the values schema, every rendered manifest against the Kubernetes JSON schemas of
kubernetes-validate (offline), the CRDs (ServiceMonitor, PrometheusRule) by hand, one source for
alerts/ and dashboards/, the rendered configuration accepted by the exporter itself, what NOTES.txt tells
the installer (no cluster configured, the local image, the monitoring objects), and docs/deploy.md's
compose, scrape, inhibit and Helm snippets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.settings import SECTIONS, Settings, env_names

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


def values_for(name: str) -> dict[str, Any] | None:
    if name == "chart defaults":
        return None
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return loaded


def render_text(values: dict[str, Any] | None, *, monitoring_api: bool = False) -> dict[str, str]:
    """`helm template`, by default as plain `helm template` and Argo CD run it: without the cluster's
    API capabilities (monitoring_api=True adds `--api-versions monitoring.coreos.com/v1`). Text per
    template, NOTES.txt included."""
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
    return {template.rsplit("/", 1)[-1]: text for template, text in out.items()}


def render(values: dict[str, Any] | None, *, monitoring_api: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Manifests per template (NOTES.txt left out)."""
    return {
        template: [d for d in yaml.safe_load_all(text) if d]
        for template, text in render_text(values, monitoring_api=monitoring_api).items()
        if template != "NOTES.txt"
    }


def notes(values: dict[str, Any] | None) -> str:
    return render_text(values)["NOTES.txt"]


def enabled(values: dict[str, Any] | None, key: str) -> bool:
    """serviceMonitor/prometheusRule .enabled of a value set, over the chart's default."""
    default: bool = yaml.safe_load((CHART / "values.yaml").read_text())[key]["enabled"]
    return bool((values or {}).get(key, {}).get("enabled", default))


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
        "serviceMonitor: no endpoint": {"serviceMonitor": {"enabled": True, "selfMonitor": {"enabled": False}}},
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
    expected = ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    expected += [kind for kind, key in (("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "prometheusRule"))
                 if enabled(values_for(name), key)]  # fmt: skip
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
@pytest.mark.parametrize("monitoring_api", [False, True], ids=["helm template, Argo CD", "API present"])
def test_crds_render_when_enabled_whatever_the_api_capabilities(monitoring_api: bool) -> None:
    """No .Capabilities gate: `helm template` and Argo CD (no cluster API capabilities) render the
    ServiceMonitor and PrometheusRule exactly when enabled, as an install against the cluster does."""
    for sm in (False, True):
        for pr in (False, True):
            values = {"serviceMonitor": {"enabled": sm}, "prometheusRule": {"enabled": pr}}
            kinds = [d["kind"] for d in manifests(values, monitoring_api=monitoring_api)]
            assert kinds.count("ServiceMonitor") == sm and kinds.count("PrometheusRule") == pr, values
            assert "Deployment" in kinds
    multi = values_for("multi-cluster-values.yaml")
    assert render(multi, monitoring_api=monitoring_api) == render(multi, monitoring_api=not monitoring_api)
    for template in (CHART / "templates").iterdir():
        assert "Capabilities.APIVersions" not in template.read_text(), template.name


@needs_helm
def test_crds_are_off_by_default_and_take_the_release_label() -> None:
    """Off by default (prometheus-community's exporter charts do the same): an install where the
    Prometheus Operator's CRDs are missing would fail with 'no matches for kind ServiceMonitor'.
    values.yaml shows kube-prometheus-stack's release label, commented; NOTES.txt says all of it."""
    kinds = {d["kind"] for d in manifests(None)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"} and "Deployment" in kinds
    values_text = (CHART / "values.yaml").read_text()
    for key in ("serviceMonitor", "prometheusRule"):
        block = re.search(rf"^{key}:\n(.*?)^\S", values_text, re.S | re.M)
        assert block is not None
        assert re.search(r"^  enabled: false$", block.group(1), re.M), key
        assert re.search(r"^  additionalLabels: \{\}\n +# release: kube-prometheus-stack\b", block.group(1), re.M), key
    text = notes(None)
    assert "No ServiceMonitor (serviceMonitor.enabled=false, the default" in text
    assert "No PrometheusRule (prometheusRule.enabled=false, the default" in text
    assert "serviceMonitor.enabled=true,serviceMonitor.additionalLabels.release=" in text
    assert "alerts/placeos-exporter.rules.yml" in text
    # Enabled without kube-prometheus-stack's label: the notes say what selects them.
    on = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    text = notes(on)
    assert "ServiceMonitor placeos-exporter created" in text and "PrometheusRule placeos-exporter created" in text
    assert "Set serviceMonitor.additionalLabels.release=" in text
    assert "Set prometheusRule.additionalLabels.release=" in text
    # With it (own or common labels), on both objects, and no hint.
    label = {"release": "kube-prometheus-stack"}
    for labelled in (
        {"serviceMonitor": {"enabled": True, "additionalLabels": label},
         "prometheusRule": {"enabled": True, "additionalLabels": label}},
        {**on, "commonLabels": label},
    ):  # fmt: skip
        docs = manifests(labelled)
        for kind in ("ServiceMonitor", "PrometheusRule"):
            assert one(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert "additionalLabels.release" not in notes(labelled)


@needs_helm
def test_default_image_is_the_local_build_tag() -> None:
    """No image is published: the default is the tag the Dockerfile's own build line produces (no
    registry, so it cannot pass for a published image), and NOTES.txt says to build, push and set
    image.repository; once it is set, the notes keep quiet about it."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    assert defaults["repository"] == "placeos-exporter" and "/" not in defaults["repository"]
    image = one(manifests(None), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"placeos-exporter:{PYPROJECT_VERSION}"
    header = DOCKERFILE.read_text().split("\nFROM ", 1)[0]
    assert re.findall(r"docker build -t (\S+) \.", header) == [image], "the Dockerfile's README line"
    assert f"docker build -t {image} " in DEPLOY_DOC.read_text()
    text = notes(None)
    assert f"IMAGE: {image} is the local tag of `docker build`" in text
    assert f"docker build -t <registry>/placeos-exporter:{PYPROJECT_VERSION} . && docker push" in text
    assert "--set image.repository=<registry>/placeos-exporter" in text
    values_text = (CHART / "values.yaml").read_text()
    assert "docker build -t <registry>/placeos-exporter:<version> ." in values_text
    assert "docker push <registry>/placeos-exporter:<version>" in values_text
    pushed = {"image": {"repository": "registry.example.com/placeos-exporter"}}
    image = one(manifests(pushed), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.example.com/placeos-exporter:{PYPROJECT_VERSION}"
    assert "IMAGE:" not in notes(pushed)


def cluster_env_names() -> list[str]:
    """Every env name that sets something of the default cluster (exporter.settings), with the
    <NAME>_FILE forms of secrets."""
    names = []
    for section, model in SECTIONS.items():
        for _, found, secret in env_names(section, model):
            names += found + [f"{n}_FILE" for n in found if secret]
    return sorted(set(names))


@needs_helm
def test_notes_say_what_to_configure_when_no_cluster_is() -> None:
    """A default install comes up saying what to set and where it is documented; any setting of a
    cluster (env, extraEnv, secretKeys, config.clusters) silences that, exporter-wide settings do not."""
    nothing = "NO PLACEOS CLUSTER CONFIGURED"
    text = notes(None)
    assert nothing in text
    needed = ["PLACE_URI", "REDIS_URL", "PG_HOST", "ETCD_HOST", "RETHINKDB_HOST", "existingSecret",
              "PLACEOS_EXPORTER_API_API_KEY", "config.clusters", "docs/deploy.md", "docs/configuration.md"]  # fmt: skip
    assert [n for n in needed if n not in text] == []
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["home"] in text
    # Every name the exporter reads for a cluster counts, in env (non-empty), extraEnv or secretKeys.
    for name in cluster_env_names():
        assert nothing not in notes({"env": {name: "x"}}), name
    assert nothing not in notes({"extraEnv": [{"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {
        "name": "s", "key": "redis-url"}}}]})  # fmt: skip
    assert nothing not in notes({"existingSecret": "s", "secretKeys": {"PLACEOS_EXPORTER_API_API_KEY": "api-key"}})
    assert nothing not in notes(values_for("multi-cluster-values.yaml"))
    assert nothing not in notes(values_for("default-values.yaml"))
    # Exporter-wide settings, cluster metadata, empty values and unrelated variables say nothing of where PlaceOS is.
    wide = [f"PLACEOS_EXPORTER_{f.upper()}" for f in Settings.model_fields if f != "clusters"]
    wide += ["PLACEOS_EXPORTER_CLUSTER_NAME", "PLACEOS_EXPORTER_ERA", "PLACEOS_EXPORTER_ERA_FALLBACK", "TZ"]
    assert not set(wide) & set(cluster_env_names())
    for name in wide:
        assert nothing in notes({"env": {name: "x"}}), name
    assert nothing in notes({"env": {"REDIS_URL": ""}, "extraEnv": [{"name": "HTTPS_PROXY", "value": "x"}]})
    assert nothing in notes({"config": {"interval": 15}})


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
    rule = one(manifests({"prometheusRule": {"enabled": True}}), "PrometheusRule")
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
    with_sm = [name for name in VALUE_SETS if enabled(values_for(name), "serviceMonitor")]
    assert with_sm
    for name in with_sm:
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
    # The image step 1 pushes, under the chart's default tag.
    (build,) = [b for first, b in doc_blocks("sh").items() if first.startswith("# image for the chart")]
    (pushed,) = re.findall(r"^docker push (\S+)$", build, re.M)
    assert re.findall(r"^docker build -t (\S+) ", build, re.M) == [pushed]
    image = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == pushed == f"{values['image']['repository']}:{PYPROJECT_VERSION}"
    # Nothing left for the notes to complain about.
    text = notes(values)
    assert "NO PLACEOS CLUSTER" not in text and "IMAGE:" not in text and "additionalLabels.release" not in text
    env = container_env(one(docs, "Deployment"))
    assert set(values["env"]) <= set(env) <= configuration_env_names()
    assert env["PG_PASSWORD_FILE"] == "/etc/placeos-exporter/secrets/pg-password"
    assert one(docs, "NetworkPolicy")
