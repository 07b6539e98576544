"""pytest plugin for tests against the real control plane (marker `cluster` / `e2e`).

Fixtures:
    cluster          session: the running Cluster (control plane and pod runner)
    control_plane    session: its ControlPlane (`.kubeconfig`, `.server`, `.ca_file`)
    kube             a Kube bound to a fresh namespace that enforces the restricted Pod Security
                     Standard
    apply_crd(path)  server-side apply a CRD file (kubectl), wait until Established; returns names
    kubectl(*args)   run the real kubectl in the test's namespace; CompletedProcess[str]
    helm(*args)      run the real helm on the test's namespace; CompletedProcess[str]
    podrunner        the PodRunner: kill_pod, oom_kill, lose_node, restore_node, logs, volume_dir
    wait_for(condition, timeout=60, describe=obj)  poll; on timeout show status, Events, pod logs
    sa_kubeconfig(namespace, name)  kubeconfig of a ServiceAccount (created if missing)

Binaries come from scripts/testbin.sh; when absent the tests FAIL saying so.
`LLAMAFT_SKIP_CLUSTER=1` skips them explicitly.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.cluster import kube as kube_mod
from tests.cluster.controlplane import (
    BinariesMissingError,
    ControlPlane,
    find_bin_dir,
    write_kubeconfig,
)
from tests.cluster.kube import Describe, Kube
from tests.cluster.podrunner import PodRunner
from tests.cluster.rest import ApiError, Rest
from tests.cluster.session import Cluster

T = TypeVar("T")
Runner = Callable[..., "subprocess.CompletedProcess[str]"]
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.environ.get("LLAMAFT_SKIP_CLUSTER") == "1":
        pytest.skip("LLAMAFT_SKIP_CLUSTER=1")
    try:
        bin_dir: Path | None = find_bin_dir()
        missing = ""
    except BinariesMissingError as e:
        bin_dir, missing = None, str(e)
    if bin_dir is None:
        pytest.fail(missing, pytrace=False)
    # Not under /tmp: pods mount an emptyDir at /tmp, which would hide the runner's own state
    # (termination-message files, volume dirs) from the mounts that follow it.
    base = Path(os.environ.get("LLAMAFT_CLUSTER_TMP", "/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="llamaft-cluster-", dir=base))
    running = Cluster(state / "cluster", bin_dir=bin_dir)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        # LLAMAFT_KEEP_CLUSTER=1 keeps pod logs and volumes for a post-mortem.
        if os.environ.get("LLAMAFT_KEEP_CLUSTER") != "1":
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def control_plane(cluster: Cluster) -> ControlPlane:
    assert cluster.control_plane is not None
    return cluster.control_plane


@pytest.fixture
def podrunner(cluster: Cluster) -> Iterator[PodRunner]:
    assert cluster.runner is not None
    yield cluster.runner
    cluster.runner.restore_all_nodes()


def _namespace_name(node_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"{base or 't'}-{secrets.token_hex(2)}"


@pytest.fixture
def kube(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Kube]:
    admin = cluster.admin()
    name = _namespace_name(request.node.name)
    admin.post(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}},
    )
    assert cluster.control_plane is not None
    cp = cluster.control_plane
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = name
    kubeconfig = cp.state_dir / f"{name}.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    try:
        yield Kube(name, admin.with_namespace(name), kubeconfig)
    finally:
        with contextlib.suppress(ApiError):
            admin.delete(f"/api/v1/namespaces/{name}")
        kubeconfig.unlink(missing_ok=True)


def _runner(binary: str, kubeconfig: Path, extra_env: dict[str, str] | None = None) -> Runner:
    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), **(extra_env or {})}
        result = subprocess.run(
            [binary, *args], env=env, input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{Path(binary).name} {' '.join(args)} failed "
                f"({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run


@pytest.fixture
def kubectl(kube: Kube) -> Runner:
    return _runner(shutil.which("kubectl") or "kubectl", kube.kubeconfig)


@pytest.fixture(scope="session")
def _helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture
def helm(kube: Kube, cluster: Cluster, _helm_home: Path) -> Runner:
    # Private helm dirs: no repositories or plugins of the developer leak into tests.
    env = {f"HELM_{k}_HOME": str(_helm_home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}
    bin_dir = cluster.bin_dir or find_bin_dir()
    return _runner(str(bin_dir / "helm"), kube.kubeconfig, env)


@pytest.fixture
def apply_crd(kubectl: Runner, kube: Kube) -> Callable[[Path | str], list[str]]:
    def apply(path: Path | str) -> list[str]:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names = [d["metadata"]["name"] for d in docs if d.get("kind") == "CustomResourceDefinition"]
        for name in names:
            kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        return names

    return apply


@pytest.fixture
def wait_for(kube: Kube, cluster: Cluster) -> Callable[..., Any]:
    def wait(
        condition: Callable[[], T],
        timeout: float = 60.0,
        describe: Describe = None,
        interval: float = 0.25,
        what: str = "",
    ) -> T:
        return kube_mod.wait_for(kube, cluster.runner, condition, timeout, describe, interval, what)

    return wait


@pytest.fixture
def sa_kubeconfig(cluster: Cluster, kube: Kube) -> Callable[[str, str], Path]:
    """Kubeconfig of ServiceAccount `name` in `namespace` (a 1 h token), to test RBAC."""

    def make(namespace: str, name: str) -> Path:
        admin = cluster.admin()
        try:
            admin.post(
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
        except ApiError as e:
            if e.status != 409:
                raise
        token = admin.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )["status"]["token"]
        assert cluster.control_plane is not None
        cp = cluster.control_plane
        path = cp.state_dir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(
            path,
            cp.server,
            cp.ca_file,
            user=f"{namespace}-{name}",
            token=token,
            namespace=namespace,
        )

    return make


def sa_client(kubeconfig: Path) -> Rest:
    """A JSON client from a kubeconfig written by `sa_kubeconfig`."""
    return Rest.from_kubeconfig(kubeconfig)
