"""The Helm chart: documented values, schema, CRD copy, RBAC, Pod Security, operator settings.

The helm tests render the chart with `helm template` (helm from scripts/testbin.sh) for the default
values and every file in charts/llamaft/ci/; they skip when helm is not built.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamaft_operator.catalogue import GpuType
from llamaft_operator.settings import ENV, Settings
from tests.unit.chart_helpers import (
    CHART,
    QUICKSTART,
    README,
    ROOT,
    VALUES,
    find,
    helm,
    misnamed,
    quickstart_example,
    readme_with_table,
    render,
    template_args,
    undocumented,
    value_docs,
)

pytestmark = pytest.mark.unit

CI_FILES = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
NAMESPACED = "namespaced-values.yaml"


# --- files that must agree with each other (no helm needed) -------------------------------------


def test_chart_crd_is_the_generated_crd() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "sync-chart-crd"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_value_is_documented_by_a_comment_starting_with_its_name() -> None:
    docs = value_docs()
    assert not undocumented(docs), "undocumented values: " + ", ".join(undocumented(docs))
    assert not misnamed(docs), "\n".join(misnamed(docs))


def test_doc_check_catches_a_bad_comment() -> None:
    docs = value_docs("a:\n  # The thing\n  b: 1\n  c: 2\n")
    assert misnamed(docs) == ["a.b (values.yaml:3): comment starts with 'The'"]
    assert undocumented(docs) == ["a.c (values.yaml:4)"]


def test_readme_values_table_is_up_to_date() -> None:
    readme = README.read_text()
    assert readme == readme_with_table(readme), (
        "charts/llamaft/README.md is stale: python -m tests.unit.chart_helpers --write"
    )


def _schema_gaps(values: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    gaps = []
    if isinstance(values, dict) and "properties" in schema:
        for key, value in values.items():
            if key not in schema["properties"]:
                gaps.append(f"{path}{key}")
            else:
                gaps += _schema_gaps(value, schema["properties"][key], f"{path}{key}.")
    return gaps


def test_schema_knows_every_value_and_forbids_unknown_keys() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert not _schema_gaps(values, SCHEMA)

    def closed(schema: dict[str, Any], path: str) -> list[str]:
        open_ = [] if schema.get("additionalProperties") is False else [path or "(root)"]
        for key, sub in schema.get("properties", {}).items():
            open_ += closed(sub, f"{path}.{key}" if path else key)
        if "items" in schema:
            open_ += closed(schema["items"], f"{path}[]")
        return open_ if "properties" in schema else []

    assert closed(SCHEMA, "") == []


def test_schema_catalogue_entry_is_the_operators_gpu_type() -> None:
    item = SCHEMA["properties"]["gpu"]["properties"]["catalogue"]["items"]
    model = GpuType.model_json_schema(by_alias=True)
    assert set(item["properties"]) == set(model["properties"])
    assert set(item["required"]) == set(model["required"])


def test_chart_sets_only_settings_the_operator_reads() -> None:
    import re

    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    names = set(re.findall(r"name: (LLAMAFT_[A-Z_]+)", helpers))
    assert names, "no LLAMAFT_* variables found in _helpers.tpl"
    assert names <= set(ENV), f"unknown to settings.py: {sorted(names - set(ENV))}"


# --- rendered chart ------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", ["", *CI_FILES])
def test_helm_lint_strict(values_file: str) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", "1.32.4"]
    if values_file:
        args += ["-f", str(CHART / "ci" / values_file)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"operator.replicas": "two"}, "operator.replicas: Invalid type. Expected: integer"),
        ({"operator.replica": "2"}, "Additional property replica is not allowed"),
        ({"crds.kep": "true"}, "Additional property kep is not allowed"),
        ({"unknownTopLevel": "1"}, "Additional property unknownTopLevel is not allowed"),
        ({"storage.workAccessMode": "ReadWriteSometimes"}, "workAccessMode must be one of"),
        ({"watchNamespaces[0]": "Bad_Name"}, "watchNamespaces.0: Does not match pattern"),
        ({"gpu.catalogue[0].name": "X"}, "memoryGib is required"),
        ({"operator.image.digest": "latest"}, "digest: Does not match pattern"),
        (
            {"operator.peering.enabled": "false"},
            "operator.replicas > 1 needs operator.peering.enabled=true",
        ),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(sets: dict[str, str], message: str) -> None:
    result = helm(*template_args(sets=sets), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("values_file", ["", *CI_FILES])
def test_operator_settings_from_the_chart_are_accepted_by_the_operator(values_file: str) -> None:
    objs = render(*([values_file] if values_file else []))
    (deployment,) = find(objs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("LLAMAFT_")}
    settings = Settings.from_env(env)
    values = yaml.safe_load(VALUES.read_text())
    if values_file:
        values = _merge(values, yaml.safe_load((CHART / "ci" / values_file).read_text()))
    assert settings.namespaces == tuple(values["watchNamespaces"])
    assert settings.trainer_service_account == values["trainer"]["serviceAccount"]["name"]
    assert settings.default_gpu_type == values["gpu"]["defaultType"]
    if values["gpu"]["catalogue"]:
        assert settings.gpu_catalogue.names() == [g["name"] for g in values["gpu"]["catalogue"]]
    assert settings.trainer_image.startswith("ghcr.io/llamaft/trainer")
    assert (settings.peering_name is not None) == values["operator"]["peering"]["enabled"]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def test_chart_crd_renders_as_the_generated_crd_with_keep() -> None:
    generated = yaml.safe_load((ROOT / "crds" / "llamafinetune.yaml").read_text())
    (crd,) = find(render(), "CustomResourceDefinition")
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}

    (crd,) = find(render(sets={"crds.keep": "false"}), "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]
    assert find(render(sets={"crds.enabled": "false"}), "CustomResourceDefinition") == []


def test_kopf_peering_crds_come_from_the_crds_folder() -> None:
    crds = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()) if d]
    assert {c["metadata"]["name"] for c in crds} == {
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


# --- RBAC ----------------------------------------------------------------------------------------

OPERATOR_RULES = {
    ("llamaft.io", "llamafinetunes"): {"get", "list", "watch"},
    ("llamaft.io", "llamafinetunes/status"): {"get", "patch"},
    ("llamaft.io", "llamafinetunes/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "persistentvolumeclaims"): {"get", "create"},
    ("", "services"): {"get", "create"},
    ("", "secrets"): {"get"},
    ("", "pods"): {"get", "list"},
    ("", "events"): {"create"},
}


def rule_table(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


def test_no_wildcards_anywhere() -> None:
    for values_file in ["", *CI_FILES]:
        for obj in render(*([values_file] if values_file else [])):
            for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], (values_file, obj["metadata"]["name"], rule)


def test_cluster_wide_operator_rbac_is_exactly_what_it_needs() -> None:
    objs = render()
    (role,) = find(objs, "ClusterRole", "t-llamaft-operator")
    expected = {
        **OPERATOR_RULES,
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    }
    assert rule_table(role["rules"]) == expected
    (discovery,) = find(objs, "ClusterRole", "t-llamaft-operator-discovery")
    assert rule_table(discovery["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}
    }
    (binding,) = find(objs, "ClusterRoleBinding", "t-llamaft-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "t-llamaft-operator", "namespace": "llamaft"}
    ]


def test_namespaced_operator_gets_roles_only_in_its_namespaces() -> None:
    objs = render(NAMESPACED)
    roles = find(objs, "Role", "t-llamaft-operator")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-team-a", "ml-team-b"]
    for role in roles:
        expected = {
            **OPERATOR_RULES,
            ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
        }
        assert rule_table(role["rules"]) == expected
    # The only cluster-wide rights: read CRDs and namespaces (kopf's discovery).
    (cluster_role,) = find(objs, "ClusterRole")
    assert rule_table(cluster_role["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
        ("", "namespaces"): {"get", "list", "watch"},
    }
    peerings = find(objs, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("ml-team-a", "llamaft-ha"),
        ("ml-team-b", "llamaft-ha"),
    }


@pytest.mark.parametrize("values_file", ["", NAMESPACED])
def test_trainer_may_only_patch_status_in_its_namespaces(values_file: str) -> None:
    objs = render(*([values_file] if values_file else []))
    roles = find(objs, "Role", "llamaft-trainer")
    expected_namespaces = ["ml-team-a", "ml-team-b"] if values_file else ["llamaft"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == expected_namespaces
    for role in roles:
        assert rule_table(role["rules"]) == {("llamaft.io", "llamafinetunes/status"): {"patch"}}
    accounts = [
        a for a in find(objs, "ServiceAccount") if a["metadata"]["name"] == "llamaft-trainer"
    ]
    assert sorted(a["metadata"]["namespace"] for a in accounts) == expected_namespaces


def test_operator_managed_trainer_rbac_is_opt_in() -> None:
    (role,) = find(render("minimal-values.yaml"), "ClusterRole", "t-llamaft-operator")
    table = rule_table(role["rules"])
    assert table[("", "serviceaccounts")] == {"get", "create"}
    assert table[("rbac.authorization.k8s.io", "roles")] == {"get", "create"}
    (role,) = find(render(), "ClusterRole", "t-llamaft-operator")
    assert ("", "serviceaccounts") not in rule_table(role["rules"])


# --- Pod Security (restricted) -------------------------------------------------------------------

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard's checks (v1.32), for a pod spec."""
    bad = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {volume['name']}: {kinds}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
            bad.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
    return bad


@pytest.mark.parametrize("values_file", ["", *CI_FILES])
def test_every_pod_meets_the_restricted_pod_security_standard(values_file: str) -> None:
    objs = render(*([values_file] if values_file else []))
    pods = [d["spec"]["template"]["spec"] for d in find(objs, "Deployment")]
    pods += [p["spec"] for p in find(objs, "Pod")]
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == []


def test_restricted_check_catches_a_root_pod() -> None:
    pod = {"containers": [{"name": "c", "securityContext": {"runAsUser": 0}}]}
    assert len(restricted_violations(pod)) == 5


def test_operator_deployment_shape() -> None:
    objs = render()
    (deployment,) = find(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["llamaft-operator"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    (pdb,) = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == spec["selector"]
    (policy,) = find(objs, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == spec["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (peering,) = find(objs, "ClusterKopfPeering")
    assert env["LLAMAFT_PEERING"] == peering["metadata"]["name"]
    assert env["LLAMAFT_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"


def test_settings_changes_roll_the_operator() -> None:
    def checksum(objs: list[dict[str, Any]]) -> str:
        (deployment,) = find(objs, "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"])

    assert checksum(render()) != checksum(render(sets={"gpu.defaultType": "A100-80GB"}))


def test_images_pin_digest_when_given() -> None:
    objs = render("monitoring-kueue-values.yaml")
    (deployment,) = find(objs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/llamaft/operator@sha256:" + "0" * 64
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LLAMAFT_TRAINER_IMAGE"] == "ghcr.io/llamaft/trainer@sha256:" + "1" * 64


def test_optional_objects() -> None:
    objs = render("monitoring-kueue-values.yaml")
    (monitor,) = find(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (rule,) = find(objs, "PrometheusRule")
    assert {r["alert"] for r in rule["spec"]["groups"][0]["rules"]} >= {"LlamaftOperatorDown"}
    (queue,) = find(objs, "LocalQueue")
    assert queue["spec"] == {"clusterQueue": "gpu-cluster-queue"}
    minimal = render("minimal-values.yaml")
    for kind in ("NetworkPolicy", "PodDisruptionBudget", "ClusterKopfPeering", "Pod"):
        assert find(minimal, kind) == [], kind


def test_helm_test_script_compiles() -> None:
    source = (CHART / "files" / "helm-test.py").read_text()
    compile(source, "helm-test.py", "exec")
    (pod,) = find(render(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["command"][2] == source


def test_ci_values_files_are_headed_by_their_command() -> None:
    for name in CI_FILES:
        first = Path(CHART / "ci" / name).read_text().splitlines()[0]
        assert first == f"# helm template t charts/llamaft -f charts/llamaft/ci/{name}", name


def test_alerts_use_metrics_the_operator_exports() -> None:
    import re

    from llamaft_operator import metrics

    exported = {"up"}
    for metric in vars(metrics).values():
        names = getattr(metric, "_name", None)
        if isinstance(names, str):
            kind = getattr(metric, "_type", "")
            exported.add(f"{names}_total" if kind == "counter" else names)
    (rule,) = find(render("monitoring-kueue-values.yaml"), "PrometheusRule")
    for alert in rule["spec"]["groups"][0]["rules"]:
        used = set(re.findall(r"\b([a-z_]+)\{", alert["expr"]))
        assert used <= exported, (alert["alert"], used - exported)


def test_crd_annotations_for_argo_cd() -> None:
    sets = {"crds.annotations.argocd\\.argoproj\\.io/sync-options": "Prune=false"}
    (crd,) = find(render(sets=sets), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Prune=false",
    }


def test_quickstart_example_embeds_the_quickstart_data_and_is_valid() -> None:
    stale = "examples/quickstart.yaml is stale: python -m tests.unit.chart_helpers --write"
    assert QUICKSTART.read_text() == quickstart_example(), stale
    config_map, _ = [d for d in yaml.safe_load_all(QUICKSTART.read_text()) if d]
    for key in ("train.jsonl", "golden.jsonl"):
        assert config_map["data"][key] == (ROOT / "examples/data/quickstart" / key).read_text()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "llamaft"), "validate", str(QUICKSTART)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
