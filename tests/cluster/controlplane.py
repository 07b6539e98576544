"""A real Kubernetes control plane for tests: etcd, kube-apiserver, controller-manager, scheduler.

The binaries come from scripts/testbin.sh (built from upstream Go modules). Everything lives in a
state directory: certificates, etcd data, logs, kubeconfigs. Ports are picked free on the bind
address so parallel runs do not clash. `stop()` always tears every process down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.cluster import pki

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTBIN_SCRIPT = REPO_ROOT / "scripts" / "testbin.sh"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "helm", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ISSUER = "https://kubernetes.default.svc.cluster.local"

# The controllers a fine-tuning operator relies on. Old short names: v1.32 still accepts them.
CONTROLLERS = (
    "job",
    "garbagecollector",
    "namespace",
    "serviceaccount-token",
    "serviceaccount",
    "root-ca-cert-publisher",  # kube-root-ca.crt, which every pod's API-access volume mounts
    "endpoint",
    "endpointslice",
    "nodelifecycle",
    "podgc",
    "replicaset",
    "deployment",
    "statefulset",
    "cronjob",
    "ttl-after-finished",
    "disruption",
    "resourcequota",
    "persistentvolume-binder",  # binds the PVs the pod runner provisions for each claim
    # Remove the in-use protection finalizers once no pod uses a claim; without them a deleted
    # PVC stays Terminating forever.
    "pvc-protection",
    "pv-protection",
    "clusterrole-aggregation",
)


class BinariesMissingError(RuntimeError):
    """The control-plane binaries have not been built on this machine."""


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start; the message carries its log tail."""


def find_bin_dir() -> Path:
    """Where scripts/testbin.sh cached the binaries; raises with instructions when absent."""
    override = os.environ.get("LLAMAFT_TESTBIN_DIR")
    if override:
        path = Path(override)
    else:
        result = subprocess.run(
            ["bash", str(TESTBIN_SCRIPT), "--print-dir"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BinariesMissingError(
                "Kubernetes test binaries are missing: run scripts/testbin.sh (about 14 min cold, "
                f"seconds when cached). {result.stderr.strip()}"
            )
        path = Path(result.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (path / b).exists()]
    if missing:
        raise BinariesMissingError(
            f"{', '.join(missing)} missing in {path}: run scripts/testbin.sh"
        )
    return path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    user: str,
    cert: pki.CertPair | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    auth: dict[str, str] = {}
    if cert is not None:
        auth = {"client-certificate": str(cert.cert), "client-key": str(cert.key)}
    if token is not None:
        auth = {"token": token}
    context: dict[str, str] = {"cluster": "llamaft-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llamaft-test",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "llamaft-test", "context": context}],
        "current-context": "llamaft-test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler in `state_dir`.

    `bind_address` is where kube-apiserver listens: 127.0.0.1, or the pod network's gateway so
    pods reach it too (see network.PodNetwork).
    """

    bin_dir: Path
    state_dir: Path
    bind_address: str = "127.0.0.1"
    extra_apiserver_args: tuple[str, ...] = ()
    extra_controller_manager_args: tuple[str, ...] = ()
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    apiserver_port: int = 0

    @property
    def server(self) -> str:
        return f"https://{self.bind_address}:{self.apiserver_port}"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate in group system:masters)."""
        return self.state_dir / "admin.kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def start(self, timeout: float = 60.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        ca = pki.CertificateAuthority(self.pki_dir)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=tuple({"127.0.0.1", self.bind_address, "10.96.0.1"}),
        )
        admin = ca.issue("admin", "llamaft-admin", organization="system:masters")
        kcm = ca.issue("kcm", "system:kube-controller-manager")
        scheduler = ca.issue("scheduler", "system:kube-scheduler")
        sa = pki.write_service_account_keys(self.pki_dir)

        etcd_client, etcd_peer = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.apiserver_port = free_port(self.bind_address)
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.state_dir / 'etcd'}",
                "--name=default",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                # Test data is disposable; fsync would dominate on a shared disk.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.bind_address}",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.pair.cert}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--service-account-issuer={SERVICE_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--allow-privileged=false",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                # One client (the tests) does not need fairness queues; they only add latency.
                "--enable-priority-and-fairness=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )
        self._wait_ready(admin, timeout)
        write_kubeconfig(self.kubeconfig, self.server, ca.pair.cert, user="admin", cert=admin)
        kcm_config = write_kubeconfig(
            self.state_dir / "kcm.kubeconfig", self.server, ca.pair.cert, user="kcm", cert=kcm
        )
        sched_config = write_kubeconfig(
            self.state_dir / "scheduler.kubeconfig",
            self.server,
            ca.pair.cert,
            user="scheduler",
            cert=scheduler,
        )
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kcm_config}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join(CONTROLLERS)}",
                # Each controller acts as its own service account, so RBAC is exercised as in
                # production (a missing rule in our chart would show up here).
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={ca.pair.cert}",
                f"--cluster-signing-cert-file={ca.pair.cert}",
                f"--cluster-signing-key-file={ca.pair.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # React within seconds, not the production minutes.
                "--pvclaimbinder-sync-period=2s",
                "--node-monitor-period=2s",
                "--node-monitor-grace-period=40s",
                "--terminated-pod-gc-threshold=1000",
                "--concurrent-job-syncs=10",
                "--v=1",
                *self.extra_controller_manager_args,
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={sched_config}",
                f"--authentication-kubeconfig={sched_config}",
                f"--authorization-kubeconfig={sched_config}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        self._write_state()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        # New session: a Ctrl-C in the terminal reaches us, and we stop children in order.
        self.processes[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _wait_ready(self, admin: pki.CertPair, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", context=context, timeout=5
                ) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout:.0f} s ({last}):\n"
            f"{_tail(self.log_dir / 'kube-apiserver.log')}"
        )

    def check_alive(self) -> None:
        """Raise if a component died (a test failing later would otherwise be baffling)."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                log = _tail(self.log_dir / f"{name}.log")
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{log}")

    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "pids": {name: p.pid for name, p in self.processes.items()},
        }
        (self.state_dir / "controlplane.json").write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        # Reverse start order: clients before the apiserver, the apiserver before etcd.
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    # kube-apiserver's graceful shutdown waits on open watch connections for a
                    # minute; nothing here needs a clean shutdown, so a short grace suffices.
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.processes.clear()
