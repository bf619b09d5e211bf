"""charts/crescendo with the real helm 3.17 binary: lint, render per toggle, validate, inspect.

`helm lint --strict` and `helm template` run for the default values and every ci/*-values.yaml;
the output goes through `kubernetes-validate --strict` for the built-in kinds (the Prometheus
Operator kinds have no offline schema: their fields are checked here by hand).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from crescendo_spec.crd import crd_yaml

from tests.chart.render import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    ROOT,
    RULES,
    alert_rules,
    helm,
    of_kind,
    one,
    render,
    template_text,
)

TOGGLES = [None, *CI_VALUES]
IDS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]
VALIDATOR = Path(sys.executable).with_name("kubernetes-validate")
# The chart's kubeVersion floor and the newest schemas kubernetes-validate knows.
KUBE_VERSIONS = ("1.26.0", "1.37.0")


def _values(path: Path | None) -> list[Path]:
    return [path] if path else []


def test_there_is_a_ci_values_file_per_toggle() -> None:
    names = {p.name for p in CI_VALUES}
    for toggle in ("servicemonitor", "podmonitor", "prometheusrule", "dashboard",
                   "watch-all-namespaces", "watch-namespaces", "no-rbac", "prometheus"):
        assert f"{toggle}-values.yaml" in names


@pytest.mark.parametrize("values", TOGGLES, ids=IDS)
def test_helm_lint_strict_passes(values: Path | None) -> None:
    extra: list[str | Path] = ["-f", values] if values else []
    result = helm("lint", "--strict", CHART, *extra)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", TOGGLES, ids=IDS)
def test_rendered_built_in_kinds_pass_kubernetes_validate_strict(
    values: Path | None, kube: str
) -> None:
    rendered = template_text(_values(values), crds=True)
    assert rendered.returncode == 0, rendered.stderr
    result = subprocess.run(
        [str(VALIDATOR), "--strict", "--no-warn", "-k", kube, "-"],
        input=rendered.stdout, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource deployment/" in result.stdout + result.stderr


def test_kubernetes_validate_strict_rejects_an_unknown_field() -> None:
    bad = template_text().stdout.replace("strategy:", "strategyy:", 1)
    result = subprocess.run([str(VALIDATOR), "--strict", "-"], input=bad,
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_chart_crd_is_the_generated_one_and_the_manifest_copy() -> None:
    generated = crd_yaml()
    assert (CHART / "crds/adaptivebatchjobs.crescendo.dev.yaml").read_text() == generated, (
        "regenerate: crescendo crd > charts/crescendo/crds/adaptivebatchjobs.crescendo.dev.yaml")
    assert (ROOT / "manifests/crd/adaptivebatchjobs.crescendo.dev.yaml").read_text() == generated
    assert [p.name for p in (CHART / "crds").iterdir()] == ["adaptivebatchjobs.crescendo.dev.yaml"]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


def test_operator_runs_once_recreated_hardened_and_probed_on_kopf_health() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = _container(objects)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["args"][0] == f"--liveness=http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_every_object_carries_the_app_kubernetes_io_labels() -> None:
    for values in TOGGLES:
        for obj in render(_values(values)):
            labels = obj["metadata"].get("labels", {})
            for key in ("name", "instance", "version", "managed-by"):
                assert f"app.kubernetes.io/{key}" in labels, (obj["kind"], key)
            assert labels["helm.sh/chart"] == "crescendo-0.1.0"


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _container(objects)["env"]}


def test_operator_config_values_become_its_crescendo_variables() -> None:
    env = _env(render(sets=[
        "operator.prometheusUrl=http://prom:9090", "operator.scrapeIntervalSeconds=2",
        "operator.httpTimeoutSeconds=3", "operator.metricsPort=9100",
        "operator.watchNamespaces={a,b}",
    ]))
    assert env["CRESCENDO_PROMETHEUS_URL"] == "http://prom:9090"
    assert env["CRESCENDO_SCRAPE_INTERVAL_SECONDS"] == "2"
    assert env["CRESCENDO_HTTP_TIMEOUT_SECONDS"] == "3"
    assert env["CRESCENDO_OPERATOR_METRICS_PORT"] == "9100"
    assert env["CRESCENDO_NAMESPACES"] == "a,b"


def test_chart_env_names_are_the_ones_the_operator_reads() -> None:
    from crescendo_operator import config

    read = {v for k, v in vars(config).items() if k.isupper() and isinstance(v, str)
            and v.startswith(config.PREFIX) and v != config.PREFIX}
    assert set(_env(render())) <= read


def test_default_watches_only_the_release_namespace_with_a_role() -> None:
    objects = render()
    assert _env(objects)["CRESCENDO_NAMESPACES"] == NAMESPACE
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    binding = one(objects, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    operator_roles = [r for r in of_kind(objects, "ClusterRole")
                      if r["metadata"]["name"].endswith("-operator")]
    assert operator_roles == [] and of_kind(objects, "ClusterRoleBinding") == []


def test_named_namespaces_get_a_role_and_binding_each() -> None:
    objects = render([CHART / "ci/watch-namespaces-values.yaml"])
    assert sorted(r["metadata"]["namespace"] for r in of_kind(objects, "Role")) == [
        "team-a", "team-b"]
    bindings = of_kind(objects, "RoleBinding")
    assert {b["subjects"][0]["namespace"] for b in bindings} == {NAMESPACE}
    assert _env(objects)["CRESCENDO_NAMESPACES"] == "team-a,team-b"


def test_watching_all_namespaces_uses_a_cluster_role_and_no_namespace_list() -> None:
    objects = render([CHART / "ci/watch-all-namespaces-values.yaml"])
    assert of_kind(objects, "Role") == []
    assert one(objects, "ClusterRoleBinding")["roleRef"]["kind"] == "ClusterRole"
    assert _env(objects)["CRESCENDO_NAMESPACES"] == ""


def test_no_rbac_toggle_creates_no_rbac_and_uses_the_named_account() -> None:
    objects = render([CHART / "ci/no-rbac-values.yaml"])
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"):
        assert of_kind(objects, kind) == [], kind
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "crescendo-operator"


def test_user_roles_aggregate_into_edit_and_view_with_the_scale_subresource() -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind(render(), "ClusterRole")}
    edit, view = roles["r-crescendo-edit"], roles["r-crescendo-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    scale = next(r for r in edit["rules"] if r["resources"] == ["adaptivebatchjobs/scale"])
    assert {"get", "update", "patch"} <= set(scale["verbs"])
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in view["rules"])


def test_monitoring_objects_exist_only_when_toggled() -> None:
    default = {o["kind"] for o in render()}
    assert not default & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    for name, kind in (("servicemonitor", "ServiceMonitor"), ("podmonitor", "PodMonitor"),
                       ("prometheusrule", "PrometheusRule"), ("dashboard", "ConfigMap")):
        objects = render([CHART / f"ci/{name}-values.yaml"])
        assert len(of_kind(objects, kind)) == 1, name


def test_service_monitor_scrapes_the_operator_metrics_port_through_its_service() -> None:
    objects = render([CHART / "ci/servicemonitor-values.yaml"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(objects, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in _container(
        objects)["ports"]}


def test_pod_monitor_selects_worker_pods_by_the_contract_label_and_port() -> None:
    from crescendo_spec import contract

    objects = render([CHART / "ci/podmonitor-values.yaml"])
    spec = one(objects, "PodMonitor")["spec"]
    assert spec["selector"]["matchLabels"] == {contract.POD_LABEL_ROLE: "worker"}
    assert spec["podMetricsEndpoints"][0]["port"] == "metrics"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    everywhere = render([CHART / "ci/podmonitor-values.yaml",
                         CHART / "ci/watch-all-namespaces-values.yaml"])
    assert one(everywhere, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}


def test_worker_pods_name_their_metrics_port_as_the_pod_monitor_expects() -> None:
    from crescendo_operator.builders import worker_pod
    from crescendo_spec.parse import parse_spec

    spec = parse_spec({"image": "x", "batch": {"initial": 32, "max": 64, "perGpuMax": 32},
                       "epochs": 1})
    pod = worker_pod("job", "ns", 0, spec, "uid")
    assert "metrics" in {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}


def test_prometheus_rule_embeds_the_rule_file_verbatim() -> None:
    objects = render([CHART / "ci/prometheusrule-values.yaml"])
    rules = yaml.safe_load(RULES.read_text())
    assert one(objects, "PrometheusRule")["spec"] == rules


def test_prometheus_rule_leaves_out_disabled_alerts_and_labels_the_rest_keeping_severity() -> None:
    objects = render([CHART / "ci/prometheusrule-values.yaml"], [
        "prometheusRule.disabled={CrescendoJobWorkerRestartsClimbing,CrescendoJobMetricsStale}",
        "prometheusRule.ruleLabels.team=ml-platform",
        "prometheusRule.ruleLabels.severity=page",
    ])
    rendered = [rule for group in one(objects, "PrometheusRule")["spec"]["groups"]
                for rule in group["rules"]]
    expected = [rule for rule in alert_rules() if rule["alert"] not in
                {"CrescendoJobWorkerRestartsClimbing", "CrescendoJobMetricsStale"}]
    assert [r["alert"] for r in rendered] == [r["alert"] for r in expected]
    for mine, original in zip(rendered, expected, strict=True):
        assert mine["labels"] == {**original["labels"], "team": "ml-platform"}
        assert {k: v for k, v in mine.items() if k != "labels"} == {
            k: v for k, v in original.items() if k != "labels"}


def test_only_alerts_of_the_rule_file_can_be_disabled() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = schema["properties"]["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
    assert sorted(allowed) == sorted(rule["alert"] for rule in alert_rules())
    result = template_text(sets=["prometheusRule.disabled={CrescendoJobStuckPendng}"])
    assert result.returncode != 0 and "prometheusRule.disabled" in result.stderr, result.stderr


def test_dashboard_config_map_holds_each_dashboard_for_the_grafana_sidecar() -> None:
    objects = render([CHART / "ci/dashboard-values.yaml"])
    config_map = one(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    dashboards = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(config_map["data"]) == dashboards and dashboards
    for name in dashboards:
        assert config_map["data"][name] == (CHART / "dashboards" / name).read_text()


@pytest.mark.parametrize(("setting", "field"), [
    ("operator.scrapeIntervalSeconds=0", "scrapeIntervalSeconds"),
    ("operator.prometheusUrl=prometheus:9090", "prometheusUrl"),
    ("operator.watchNamespaces={Bad_Name}", "watchNamespaces"),
    ("operator.metricsPort=70000", "metricsPort"),
    ("serviceMonitor.interval=often", "interval"),
    ("operator.wachNamespaces={a}", "wachNamespaces"),
    ("image.pullPolicy=Sometimes", "pullPolicy"),
])
def test_bad_values_are_refused_naming_the_field(setting: str, field: str) -> None:
    result = template_text(sets=[setting])
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):")


def _keys_and_comments(text: str) -> list[tuple[str, int, bool]]:
    """(dotted key, depth, commented) for every mapping key of values.yaml, in order."""
    found: list[tuple[str, int, bool]] = []
    path: list[str] = []
    previous = ""
    for line in text.splitlines():
        match = KEY.match(line)
        if match:
            depth = len(match["indent"]) // 2
            path = [*path[:depth], match["key"]]
            found.append((".".join(path), depth, previous.lstrip().startswith("#")))
        if line.strip():
            previous = line
    return found


def test_values_yaml_comments_every_setting() -> None:
    entries = _keys_and_comments((CHART / "values.yaml").read_text())
    commented = {key for key, _, has in entries if has}
    headers = {key for key, _, _ in entries
               if any(other.startswith(key + ".") for other, _, _ in entries)}
    # A setting is explained by its own comment or by one on a block that holds it; a bare
    # section header (`operator:`) needs none, but then each of its settings does.
    uncovered = [key for key, _, _ in entries if key not in headers
                 and not any(key == c or key.startswith(c + ".") for c in commented)]
    assert uncovered == []


def test_every_values_key_is_declared_in_the_values_schema() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for section, settings in values.items():
        declared = schema["properties"][section]
        if declared.get("additionalProperties") is False and isinstance(settings, dict):
            assert set(settings) <= set(declared["properties"]), section


def test_helm_test_hook_fetches_the_operator_metrics_service() -> None:
    from crescendo_spec import contract

    objects = render()
    hook = next(o for o in of_kind(objects, "Pod")
                if o["metadata"]["annotations"]["helm.sh/hook"] == "test")
    script = hook["spec"]["containers"][0]["command"][-1]
    service = one(objects, "Service")
    url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/metrics"
    assert f'"{url}"' in script and f'"{contract.METRIC_OP_JOBS}"' in script
    assert hook["spec"]["securityContext"]["runAsNonRoot"] is True
    compile(script, "helm-test", "exec")  # the inline script is valid Python


def test_a_fractional_interval_from_helm_set_is_accepted() -> None:
    # `--set x=0.5` reaches the schema as the string "0.5"; the operator parses it at start-up.
    env = _env(render(sets=["operator.scrapeIntervalSeconds=0.5"]))
    assert env["CRESCENDO_SCRAPE_INTERVAL_SECONDS"] == "0.5"
    assert template_text(sets=["operator.scrapeIntervalSeconds=often"]).returncode != 0
