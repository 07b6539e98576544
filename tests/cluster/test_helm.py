"""The Helm chart on the real control plane: install, RBAC, Pod Security, helm test, upgrade,
uninstall.

The chart is installed with the real helm into the test's namespace (which enforces the
`restricted` Pod Security Standard). Its operator Deployment then runs through the pod runner as
`llamaft-operator` with the chart's environment and the chart ServiceAccount's real token, so
every API call the operator makes is authorised by the chart's RBAC, not by an admin.

Cluster-scoped objects (the CRD, kopf's peering CRDs) are shared by the session: the CRD is
adopted by each release (Helm's documented adoption annotations) and kept on uninstall
(`crds.keep`), as in a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.kube import Kube
from tests.cluster.podrunner import PodRunner
from tests.e2e.conftest import (  # noqa: F401  (datasets is a fixture)
    API,
    KIND,
    TEST_CATALOGUE,
    TEST_GPU,
    condition_is,
    datasets,
    finetune,
    trainer_supports,
)
from tests.unit.test_argocd_health import health

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llamaft"
CRD_NAME = "llamafinetunes.llamaft.io"
Runner = Callable[..., "subprocess.CompletedProcess[str]"]
Wait = Callable[..., Any]
VALIDATE = "validate-data --plan --workdir"
TRAIN_STEPS = ("train --plan --workdir", "evaluate")


def chart_values(namespace: str, **overrides: Any) -> dict[str, Any]:
    """Chart values for the test cluster: its fake GPU nodes, short retries, small CPU steps."""
    values: dict[str, Any] = {
        "watchNamespaces": [namespace],
        "operator": {
            "replicas": 1,
            "extraEnv": [
                {"name": "LLAMAFT_RESYNC_SECONDS", "value": "10"},
                {"name": "LLAMAFT_MISSING_RETRY_SECONDS", "value": "2"},
                {"name": "LLAMAFT_ERROR_BACKOFFS", "value": "0.5,1,2"},
                {"name": "LLAMAFT_CPU_STEP_CPU", "value": "500m"},
                {"name": "LLAMAFT_CPU_STEP_MEMORY", "value": "1Gi"},
            ],
        },
        "gpu": {"catalogue": TEST_CATALOGUE, "defaultType": TEST_GPU},
        "storage": {"modelCache": {"size": "1Gi"}},
        "trainer": {"progressIntervalSeconds": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


class Release:
    """One helm release of the chart in the test's namespace; uninstalled at the end."""

    def __init__(self, helm: Runner, kubectl: Runner, kube: Kube, tmp_path: Path) -> None:
        self.helm, self.kubectl, self.kube = helm, kubectl, kube
        self.name = f"lft-{secrets.token_hex(2)}"
        self.fullname = f"{self.name}-llamaft"
        self.values_file = tmp_path / f"{self.name}-values.yaml"
        self.installed = False

    @property
    def operator_sa(self) -> str:
        return f"system:serviceaccount:{self.kube.namespace}:{self.fullname}-operator"

    @property
    def trainer_sa(self) -> str:
        return f"system:serviceaccount:{self.kube.namespace}:llamaft-trainer"

    def adopt_crd(self) -> None:
        """Let this release manage a CRD that an earlier test or release left (crds.keep)."""
        if self.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
            return
        self.kubectl(
            "annotate", "--overwrite", "crd", CRD_NAME,
            f"meta.helm.sh/release-name={self.name}",
            f"meta.helm.sh/release-namespace={self.kube.namespace}",
        )  # fmt: skip
        self.kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")

    def install(self, values: dict[str, Any], *extra: str) -> None:
        self.values_file.write_text(yaml.safe_dump(values))
        self.adopt_crd()
        self.helm(
            "install", self.name, str(CHART), "-n", self.kube.namespace,
            "-f", str(self.values_file), "--wait", "--timeout", "180s", *extra,
            timeout=240,
        )  # fmt: skip
        self.installed = True

    def upgrade(self, *sets: str) -> None:
        args = [a for s in sets for a in ("--set-json", s)]
        self.helm(
            "upgrade", self.name, str(CHART), "-n", self.kube.namespace, "--reuse-values",
            *args, "--wait", "--timeout", "180s", timeout=240,
        )  # fmt: skip

    def uninstall(self) -> None:
        if self.installed:
            self.helm("uninstall", self.name, "-n", self.kube.namespace, "--wait", timeout=180)
            self.installed = False

    def can(self, who: str, verb: str, resource: str, namespace: str | None = None) -> bool:
        """`kubectl auth can-i` as `who` (the admin impersonates it)."""
        args = ["auth", "can-i", verb, resource, f"--as={who}"]
        if "/" in resource and not resource.startswith("/"):
            resource, sub = resource.split("/", 1)
            args = ["auth", "can-i", verb, resource, f"--subresource={sub}", f"--as={who}"]
        args += ["-n", namespace or self.kube.namespace]
        result = self.kubectl(*args, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
        return result.stdout.strip() == "yes"

    def operator_pods(self) -> list[dict[str, Any]]:
        return self.kube.select("v1", "Pod", "app.kubernetes.io/component=operator")


@pytest.fixture
def release(
    helm: Runner, kubectl: Runner, kube: Kube, tmp_path: Path, podrunner: PodRunner
) -> Iterator[Release]:
    rel = Release(helm, kubectl, kube, tmp_path)
    try:
        yield rel
    finally:
        for pod in rel.operator_pods():
            name = pod["metadata"]["name"]
            log = podrunner.logs(kube.namespace, name)
            if log:
                print(f"\n--- operator pod {name} ---\n{log[-6000:]}")
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            rel.uninstall()


def other_namespace(kube: Kube) -> Iterator[str]:
    name = f"{kube.namespace}-other"
    kube.rest.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            kube.rest.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def elsewhere(kube: Kube) -> Iterator[str]:
    """A second namespace the namespaced operator must not reach."""
    yield from other_namespace(kube)


def created_by(obj: dict[str, Any]) -> str:
    """The field manager that created `obj` (the first non-status entry)."""
    return str(
        next(f["manager"] for f in obj["metadata"]["managedFields"] if not f.get("subresource"))
    )


def forbidden_in_logs(podrunner: PodRunner, kube: Kube, pods: list[dict[str, Any]]) -> list[str]:
    lines = []
    for pod in pods:
        log = podrunner.logs(kube.namespace, pod["metadata"]["name"])
        lines += [line for line in log.splitlines() if "403" in line or "orbidden" in line]
    return lines


# --- install: objects, RBAC, Pod Security, helm test ---------------------------------------------


def test_install_namespaced(
    release: Release,
    datasets: Path,  # noqa: F811
    kube: Kube,
    kubectl: Runner,
    helm: Runner,
    podrunner: PodRunner,
    wait_for: Wait,
    elsewhere: str,
) -> None:
    ns = kube.namespace
    release.install(chart_values(ns, operator={"replicas": 2}))

    # The CRD is served and kept on uninstall; kopf's peering CRDs came from crds/.
    crd = json.loads(kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert (
        "llamafinetunes" in kubectl("api-resources", "--api-group=llamaft.io", "-o", "name").stdout
    )
    kubectl("get", "crd", "kopfpeerings.kopf.dev")

    # Both replicas were admitted in a `restricted` namespace and run; peering has both.
    pods = wait_for(
        lambda: (
            [p for p in release.operator_pods() if p["status"].get("phase") == "Running"]
            if len(release.operator_pods()) == 2
            else None
        ),
        timeout=60,
        what="two operator pods running",
    )
    assert len(pods) == 2
    peering = wait_for(
        lambda: (lambda s: s if len(s) == 2 else None)(
            kube.get("kopf.dev/v1", "KopfPeering", release.fullname).get("status") or {}
        ),
        timeout=90,
        what="both replicas in the peering object",
    )
    assert len(peering) == 2

    # The operator (as its ServiceAccount) plans a dry-run fine-tune: read, status patch, Events.
    kube.create(finetune("chart-dry", dryRun=True))
    wait_for(
        lambda: condition_is(kube, "chart-dry", "Planned"),
        timeout=60,
        describe=(API, KIND, "chart-dry"),
    )
    assert forbidden_in_logs(podrunner, kube, pods) == []
    # No drift for GitOps: only status changed (the operator cannot patch anything else), and the
    # Argo CD health check reads the real status as Healthy.
    planned = kube.get(API, KIND, "chart-dry")
    assert planned["metadata"]["generation"] == 1
    assert not planned["metadata"].get("finalizers") and not planned["metadata"].get("annotations")
    writers = {
        (f["manager"], f.get("subresource", "")) for f in planned["metadata"]["managedFields"]
    }
    creator = created_by(planned)
    assert all(sub == "status" for manager, sub in writers if manager != creator), writers
    assert health(planned)["status"] == "Healthy"

    # A real run: the operator (as its ServiceAccount) creates the plan ConfigMap, the work PVC
    # and the validate Job; the Job controller's pod, running as the chart's trainer
    # ServiceAccount, is admitted in the `restricted` namespace.
    kube.create(finetune("chart-run"))
    wait_for(
        lambda: kube.select("v1", "Pod", "llamaft.io/finetune=chart-run,llamaft.io/step=validate"),
        timeout=90,
        describe=(API, KIND, "chart-run"),
        what="validate pod admitted",
    )
    assert kube.get_or_none("v1", "ConfigMap", "chart-run-plan") is not None
    assert kube.get_or_none("v1", "PersistentVolumeClaim", "chart-run-work") is not None
    (pod,) = kube.select("v1", "Pod", "llamaft.io/finetune=chart-run,llamaft.io/step=validate")
    assert pod["spec"]["serviceAccountName"] == "llamaft-trainer"
    assert any(e["reason"] for e in kube.events("chart-run"))
    assert forbidden_in_logs(podrunner, kube, pods) == []

    # `helm test`: its pod (stdlib Python in the operator image) checks readiness and discovery.
    result = helm("test", release.name, "-n", ns, "--timeout", "120s", timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Phase:          Succeeded" in result.stdout

    # RBAC, as the operator's ServiceAccount.
    op = release.operator_sa
    allowed = [
        ("list", "llamafinetunes.llamaft.io", ns),
        ("watch", "llamafinetunes.llamaft.io", ns),
        ("patch", "llamafinetunes.llamaft.io/status", ns),
        ("create", "jobs.batch", ns),
        ("delete", "jobs.batch", ns),
        ("create", "persistentvolumeclaims", ns),
        ("patch", "configmaps", ns),
        ("get", "secrets", ns),
        ("list", "pods", ns),
        ("create", "events", ns),
        ("patch", "kopfpeerings.kopf.dev", ns),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", ns),
    ]
    denied = [
        ("list", "secrets", ns),  # presence checks are by name only
        ("watch", "secrets", ns),
        ("delete", "secrets", ns),
        ("create", "pods", ns),  # the Job controller creates pods, never the operator
        ("patch", "llamafinetunes.llamaft.io", ns),  # no spec changes: no GitOps drift
        ("delete", "llamafinetunes.llamaft.io", ns),
        ("create", "roles.rbac.authorization.k8s.io", ns),
        ("create", "serviceaccounts", ns),
        ("get", "secrets", elsewhere),  # namespaced: nothing outside its namespaces
        ("list", "llamafinetunes.llamaft.io", elsewhere),
        ("create", "jobs.batch", elsewhere),
        ("get", "secrets", "kube-system"),
        ("create", "clusterkopfpeerings.kopf.dev", ns),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", ns),
    ]
    assert [a for a in allowed if not release.can(op, *a)] == []
    assert [d for d in denied if release.can(op, *d)] == []

    # The trainer's ServiceAccount: patch llamafinetunes/status in its namespace, nothing else.
    trainer = release.trainer_sa
    assert release.can(trainer, "patch", "llamafinetunes.llamaft.io/status")
    for verb, resource, where in [
        ("get", "llamafinetunes.llamaft.io", ns),
        ("patch", "llamafinetunes.llamaft.io", ns),
        ("list", "pods", ns),
        ("get", "secrets", ns),
        ("create", "jobs.batch", ns),
        ("patch", "llamafinetunes.llamaft.io/status", elsewhere),
    ]:
        assert not release.can(trainer, verb, resource, where), (verb, resource, where)


def test_operator_pod_template_passes_restricted_admission(
    release: Release, kube: Kube, kubectl: Runner, tmp_path: Path
) -> None:
    """A server-side dry-run create of the Deployment's pod spec in a `restricted` namespace."""
    rendered = release.helm(
        "template", "t", str(CHART), "-n", kube.namespace, "--kube-version", "1.32.4"
    ).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-admission", "namespace": kube.namespace},
        "spec": deployment["spec"]["template"]["spec"],
    }
    pod["spec"]["serviceAccountName"] = "default"
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    result = kubectl("create", "--dry-run=server", "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    assert "violates PodSecurity" not in result.stderr

    # The check is real: the same pod with privilege escalation allowed is refused.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    path.write_text(yaml.safe_dump(pod))
    result = kubectl("create", "--dry-run=server", "-f", str(path), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr


def test_install_cluster_wide_rbac(release: Release, kube: Kube, elsewhere: str) -> None:
    """Cluster-wide mode: a ClusterRole; still no Secret listing, no pods, no spec changes.

    replicas 0: a cluster-wide operator would also serve the other tests' namespaces.
    """
    release.install(chart_values(kube.namespace, watchNamespaces=[], operator={"replicas": 0}))
    op = release.operator_sa
    assert release.can(op, "list", "llamafinetunes.llamaft.io", elsewhere)
    assert release.can(op, "create", "jobs.batch", elsewhere)
    assert release.can(op, "get", "secrets", elsewhere)
    assert release.can(op, "patch", "clusterkopfpeerings.kopf.dev")
    for verb, resource in [
        ("list", "secrets"),
        ("create", "pods"),
        ("patch", "llamafinetunes.llamaft.io"),
        ("list", "namespaces"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
    ]:
        assert not release.can(op, verb, resource, elsewhere), (verb, resource)
    # Trainer RBAC went to the release namespace only (trainer.namespaces empty).
    assert release.can(release.trainer_sa, "patch", "llamafinetunes.llamaft.io/status")
    assert kube.get_or_none("rbac.authorization.k8s.io/v1", "Role", "llamaft-trainer") is not None


# --- upgrade and uninstall keep the CRD and the fine-tunes ---------------------------------------


def crd_uid(kubectl: Runner) -> str:
    return str(json.loads(kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)["metadata"]["uid"])


def upgrade_rolls_the_operator(release: Release, wait_for: Wait, *sets: str) -> None:
    before = {p["metadata"]["uid"] for p in release.operator_pods()}
    release.upgrade(*sets)
    wait_for(
        lambda: {p["metadata"]["uid"] for p in release.operator_pods()}.isdisjoint(before),
        timeout=120,
        what="operator pods replaced by the upgrade",
    )


def test_upgrade_and_uninstall_keep_the_crd_and_fine_tunes(
    release: Release, kube: Kube, kubectl: Runner, podrunner: PodRunner, wait_for: Wait
) -> None:
    release.install(chart_values(kube.namespace))
    uid_of_crd = crd_uid(kubectl)
    kube.create(finetune("before", dryRun=True))
    wait_for(lambda: condition_is(kube, "before", "Planned"), timeout=60, what="planned")
    uid = kube.get(API, KIND, "before")["metadata"]["uid"]

    # A settings change rolls the operator; the run and the CRD stay, the new operator serves.
    upgrade_rolls_the_operator(release, wait_for, "gpu.pricePerGpuHour=2.5")
    assert crd_uid(kubectl) == uid_of_crd
    assert kube.get(API, KIND, "before")["metadata"]["uid"] == uid
    kube.create(finetune("after", dryRun=True))
    wait_for(lambda: condition_is(kube, "after", "Planned"), timeout=60, what="planned after")
    for pod in release.operator_pods():  # the new pods run with the upgraded setting
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["LLAMAFT_PRICE_PER_GPU_HOUR"] == "2.5"
    assert forbidden_in_logs(podrunner, kube, release.operator_pods()) == []

    # Uninstall with crds.keep: the CRD and both runs, with their status, stay.
    statuses = {n: kube.get(API, KIND, n)["status"] for n in ("before", "after")}
    release.uninstall()
    assert crd_uid(kubectl) == uid_of_crd
    for name, status in statuses.items():
        assert kube.get(API, KIND, name)["status"] == status
    # The operator pods go with the Deployment (garbage collection, after their grace period).
    wait_for(lambda: release.operator_pods() == [], timeout=90, what="operator pods gone")


# --- the README's install, as written, and a run across an upgrade --------------------------------

QUICKSTART = CHART / "examples" / "quickstart.yaml"


@pytest.mark.e2e
def test_readme_install_and_quickstart_across_an_upgrade(
    release: Release, kube: Kube, kubectl: Runner, podrunner: PodRunner, wait_for: Wait
) -> None:
    """`helm install llamaft charts/llamaft -n <ns>` with the default values (cluster-wide, two
    replicas, the built-in GPU catalogue), then one `kubectl apply` of the quickstart."""
    release.name, release.fullname = "llamaft", "llamaft"
    release.adopt_crd()
    release.helm(
        "install", "llamaft", str(CHART), "-n", kube.namespace, "--wait", "--timeout", "180s",
        timeout=240,
    )  # fmt: skip
    release.installed = True
    kubectl("apply", "-n", kube.namespace, "-f", str(QUICKSTART))
    wait_for(
        lambda: condition_is(kube, "quickstart", "Planned"),
        timeout=90,
        describe=(API, KIND, "quickstart"),
    )
    wait_for(
        lambda: kube.select("v1", "Pod", "llamaft.io/finetune=quickstart,llamaft.io/step=validate"),
        timeout=90,
        describe=(API, KIND, "quickstart"),
        what="validate pod admitted",
    )
    missing = trainer_supports(VALIDATE, *TRAIN_STEPS)
    if missing:
        assert forbidden_in_logs(podrunner, kube, release.operator_pods()) == []
        pytest.skip(f"planned and validate started; the trainer CLI does not implement: {missing}")
    wait_for(
        lambda: kube.select(
            "batch/v1", "Job", "llamaft.io/finetune=quickstart,llamaft.io/step=train"
        ),
        timeout=600,
        describe=(API, KIND, "quickstart"),
        what="train Job created",
    )
    upgrade_rolls_the_operator(release, wait_for, "gpu.pricePerGpuHour=2.5")
    wait_for(
        lambda: condition_is(kube, "quickstart", "Succeeded"),
        timeout=900,
        describe=(API, KIND, "quickstart"),
    )
    jobs = kube.select("batch/v1", "Job", "llamaft.io/finetune=quickstart")
    steps = sorted(j["metadata"]["labels"]["llamaft.io/step"] for j in jobs)
    assert steps == sorted(set(steps)), "one Job per step across the operator's restart"
    assert forbidden_in_logs(podrunner, kube, release.operator_pods()) == []
    table = kubectl("get", "lft", "-n", kube.namespace).stdout
    assert "Succeeded" in table
    assert health(kube.get(API, KIND, "quickstart"))["status"] == "Healthy"
