"""A TEST-ONLY node agent: the kubelet's part for a control plane without kubelets or containers.

Never use this outside tests. It registers Node objects (with `nvidia.com/gpu` capacity and GPU
labels), keeps them Ready with node Lease heartbeats, and runs every pod the scheduler binds to
them as local processes:

- Each container's command/args (with `$(VAR)` expansion) runs under `ip netns exec <pod netns>`
  with exactly the pod's env: downward-API fieldRefs (JOB_COMPLETION_INDEX comes from the
  annotation), resourceFieldRefs, secretKeyRef/configMapKeyRef, envFrom, plus
  KUBERNETES_SERVICE_HOST/PORT pointing at the real apiserver.
- `image` only selects the entry point when `command` is empty (`images`: substring -> argv);
  every image gets the repo's `.venv/bin` first on PATH: `llamaft`, `torchrun`, `python` are ours.
- Volumes are host directories bind-mounted at their real mountPaths inside the container's own
  mount namespace (volumes.py), so no path rewriting is needed; the terminationMessagePath is a
  host file mounted the same way. PVCs are provisioned here: a hostPath PV per claim.
- Each pod has its own network namespace and IP on a bridge (network.py); pods of one namespace
  with a `subdomain` resolve each other as `<hostname>.<subdomain>` (the Job's headless Service).
- Status goes Pending -> Running -> Succeeded/Failed with containerStatuses, exit codes, reasons
  (Completed, Error, OOMKilled) and termination messages; logs are kept on disk (`logs()`).
- Deletion: SIGTERM, SIGKILL after the grace period, then the pod object is removed (grace 0).
- Hooks: `kill_pod`, `oom_kill`, `lose_node` / `restore_node`.

Not emulated: images' filesystems, users and securityContext, resource limits and cgroups, probes
(a running container is Ready), Services' virtual IPs, cluster DNS beyond the hosts entries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import podspec
from tests.cluster.network import HostEntry, PodNetwork, host_names
from tests.cluster.podworker import PodWorker, now
from tests.cluster.rest import ApiError, Obj, Rest
from tests.cluster.volumes import MountPoints

log = logging.getLogger("podrunner")
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_IMAGES: Mapping[str, Sequence[str]] = {
    "operator": ("llamaft-operator",),
    "trainer": ("llamaft",),
}
HEARTBEAT_S = 5.0
PROVISIONER = "llamaft.test/podrunner"


@dataclass(frozen=True)
class NodeSpec:
    """One fake GPU node. Labels follow NVIDIA GPU feature discovery."""

    name: str
    gpus: int = 8
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"
    gpu_memory_mib: int = 81920
    cpu: str = "96"
    memory: str = "1024Gi"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Obj] = ()

    def manifest(self) -> Obj:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": f"test-{self.gpus}x{self.gpu_product}",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.gpu_product,
            "nvidia.com/gpu.count": str(self.gpus),
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": list(self.taints)} if self.taints else {},
        }

    def capacity(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            "ephemeral-storage": "1Ti",
            "nvidia.com/gpu": str(self.gpus),
        }


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PodRunner:
    def __init__(
        self,
        rest: Rest,
        state_dir: Path,
        network: PodNetwork,
        apiserver_port: int,
        nodes: Sequence[NodeSpec] = (NodeSpec("gpu-node-0"), NodeSpec("gpu-node-1")),
        *,
        images: Mapping[str, Sequence[str]] = DEFAULT_IMAGES,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.rest, self.state_dir, self.network = rest, state_dir, network
        self.apiserver_port = apiserver_port
        self.host_ip = network.gateway
        self.nodes = {n.name: n for n in nodes}
        self.images = images
        self.extra_env = dict(extra_env or {})
        self.mountpoints = MountPoints()
        self._workers: dict[str, PodWorker] = {}  # by pod uid, kept after the pod is gone (logs)
        self._lost: set[str] = set()
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_storage_class()
        for spec in self.nodes.values():
            self._register(spec)
        self._heartbeat()
        for name, target in (
            ("heartbeat", self._heartbeat_loop),
            (
                "pods",
                lambda: self._informer(
                    "/api/v1/pods", self._on_pod, fieldSelector="spec.nodeName!="
                ),
            ),
            ("claims", lambda: self._informer("/api/v1/persistentvolumeclaims", self._on_claim)),
        ):
            thread = threading.Thread(target=target, name=f"podrunner-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.wait_nodes_ready(timeout)

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.request_stop(0)
        for worker in workers:
            worker.done.wait(10)
        self.mountpoints.release_all()

    def wait_nodes_ready(self, timeout: float, names: Sequence[str] | None = None) -> None:
        """Until each node is Ready and the node lifecycle controller lifted its not-ready taint."""
        deadline = time.monotonic() + timeout
        pending = list(names or [n for n in self.nodes if n not in self._lost])
        while pending:
            node = self.rest.get(f"/api/v1/nodes/{pending[0]}")
            taints = [t["key"] for t in node["spec"].get("taints") or []]
            if not any(k.startswith("node.kubernetes.io/") for k in taints):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node {pending[0]} still tainted {taints} after {timeout:.0f} s"
                )
            time.sleep(0.3)

    # ---- nodes ----------------------------------------------------------------------------------

    def _register(self, spec: NodeSpec) -> None:
        try:
            self.rest.post("/api/v1/nodes", spec.manifest())
        except ApiError as e:
            if e.status != 409:
                raise
            self.rest.patch(f"/api/v1/nodes/{spec.name}", {"metadata": spec.manifest()["metadata"]})
        self._post_node_status(spec.name, ready=True)

    def _post_node_status(self, name: str, ready: bool) -> None:
        spec = self.nodes[name]
        stamp = now()
        conditions = [
            {
                "type": t,
                "status": "False",
                "reason": f"KubeletHas{r}",
                "message": "pod runner",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
            for t, r in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        if ready:
            conditions.append(
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "pod runner is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            )
        else:
            conditions.append(
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            )
        status = {
            "capacity": spec.capacity(),
            "allocatable": spec.capacity(),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": spec.name,
                "systemUUID": spec.name,
                "bootID": spec.name,
                "kernelVersion": os.uname().release,
                "osImage": "llamaft pod runner",
                "containerRuntimeVersion": "podrunner://1",
                "kubeletVersion": "v1.32.4",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.rest.patch(f"/api/v1/nodes/{name}/status", {"status": status})

    def _heartbeat(self) -> None:
        for name in self.nodes:
            if name in self._lost:
                continue
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": 40,
                    "renewTime": micro_now(),
                },
            }
            path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
            try:
                self.rest.patch(f"{path}/{name}", {"spec": lease["spec"]}, "merge")
            except ApiError as e:
                if e.status != 404:
                    raise
                self.rest.post(path, lease)

    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            try:
                self._heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    def node_allocatable(self, node: str) -> dict[str, str]:
        return self.nodes[node].capacity()

    # ---- watches ---------------------------------------------------------------------------------

    def _informer(self, path: str, handler: Callable[[str, Obj], None], **params: str) -> None:
        """List then watch `path`, calling handler(event type, object); relists on 410 Gone."""
        while not self._stopped.is_set():
            try:
                listing = self.rest.get(path, **params)
                version = listing["metadata"]["resourceVersion"]
                for item in listing["items"]:
                    self._safe(handler, "ADDED", item)
                while not self._stopped.is_set():
                    watch_path = path + (
                        "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
                    )
                    for kind, obj in self.rest.watch(watch_path, version):
                        version = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            self._safe(handler, kind, obj)
                        if self._stopped.is_set():
                            return
            except ApiError as e:
                if e.status != 410:
                    log.warning("watch %s: %s", path, e)
                    time.sleep(1)
            except Exception as e:
                if not self._stopped.is_set():
                    log.warning("watch %s: %s", path, e)
                    time.sleep(1)

    @staticmethod
    def _safe(handler: Callable[[str, Obj], None], kind: str, obj: Obj) -> None:
        try:
            handler(kind, obj)
        except Exception:
            log.exception("handling %s %s", kind, obj.get("metadata", {}).get("name"))

    def _on_pod(self, kind: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        node = spec.get("nodeName")
        if node not in self.nodes:
            return
        with self._lock:
            worker = self._workers.get(meta["uid"])
            if kind == "DELETED":
                if worker is not None:
                    worker.request_stop(0)
                    threading.Thread(target=self._forget, args=(worker,), daemon=True).start()
                return
            if node in self._lost:
                return  # a dead kubelet does nothing
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp"):
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                if worker is not None and not worker.deleting:
                    worker.deleting = True
                    worker.request_stop(grace)
                    threading.Thread(
                        target=self._finalize_deletion, args=(worker,), daemon=True
                    ).start()
                elif worker is None:
                    self._force_delete(meta["namespace"], meta["name"], meta["uid"])
                return
            if worker is None and phase not in ("Succeeded", "Failed"):
                worker = PodWorker(self, pod)
                self._workers[meta["uid"]] = worker
                worker.start()

    def _finalize_deletion(self, worker: PodWorker) -> None:
        worker.done.wait()
        self._force_delete(worker.namespace, worker.pod_name, worker.uid)

    def _force_delete(self, namespace: str, name: str, uid: str) -> None:
        """What a kubelet does once a deleted pod's containers are gone: remove it for good."""
        with contextlib.suppress(ApiError):
            self.rest.delete(
                f"/api/v1/namespaces/{namespace}/pods/{name}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
            )

    def _forget(self, worker: PodWorker) -> None:
        worker.done.wait(60)
        if worker.pod_ip is not None:
            ip, worker.pod_ip = worker.pod_ip, None
            self.network.release_ip(ip)
            self._update_hosts(worker.namespace)

    # ---- claims ---------------------------------------------------------------------------------

    def _ensure_storage_class(self) -> None:
        sc = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        with contextlib.suppress(ApiError):
            self.rest.post("/apis/storage.k8s.io/v1/storageclasses", sc)

    def _on_claim(self, kind: str, pvc: Obj) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        pv_name = f"pvc-{meta['uid']}"
        if kind == "DELETED":
            with contextlib.suppress(ApiError):
                self.rest.delete(f"/api/v1/persistentvolumes/{pv_name}")
            return
        if spec.get("volumeName") or (pvc.get("status") or {}).get("phase") != "Pending":
            return
        directory = self.state_dir / "pvc" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "labels": {"llamaft.test/provisioned-by": "podrunner"},
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {
                    "storage": (spec.get("resources") or {})
                    .get("requests", {})
                    .get("storage", "1Gi")
                },
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.rest.post("/api/v1/persistentvolumes", pv)
        except ApiError as e:
            if e.status != 409:
                raise

    def claim_dir(self, namespace: str, claim: str) -> Path | None:
        """The host directory of a bound claim (None while unbound or absent)."""
        try:
            pvc = self.rest.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
            if (pvc.get("status") or {}).get("phase") != "Bound":
                return None
            pv = self.rest.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        host_path = (pv["spec"].get("hostPath") or {}).get("path")
        return Path(host_path) if host_path else None

    # ---- services for workers --------------------------------------------------------------------

    def lookup_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = self.rest.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        obj.setdefault("kind", kind)
        return podspec.decode_data(obj)

    def issue_token(
        self, namespace: str, sa: str, audience: str | None, seconds: int, pod: Obj
    ) -> str:
        spec: Obj = {
            "expirationSeconds": max(seconds, 600),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        try:
            result = self.rest.post(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
        except ApiError as e:
            if e.status == 404:
                raise podspec.MissingReferenceError(
                    f"ServiceAccount {namespace}/{sa} not found"
                ) from e
            raise
        return str(result["status"]["token"])

    def entrypoint(self, image: str) -> list[str]:
        for needle, argv in self.images.items():
            if needle in image:
                return list(argv)
        return []

    def base_env(self, worker: PodWorker) -> dict[str, str]:
        home, tmp = worker.dir / "home", worker.dir / "tmp"
        home.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        port = str(self.apiserver_port)
        return {
            "PATH": f"{VENV_BIN}:{HOST_PATH}",
            "HOSTNAME": worker.hostname,
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "KUBERNETES_SERVICE_HOST": self.host_ip,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{self.host_ip}:{port}",
            **self.extra_env,
        }

    def patch_pod_status(self, namespace: str, name: str, uid: str, status: Obj) -> None:
        body = {"metadata": {"uid": uid}, "status": status}
        for attempt in range(5):
            try:
                self.rest.patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", body)
                return
            except ApiError as e:
                if e.status in (404, 409, 422):
                    if e.status == 422:
                        log.warning("pod %s/%s status rejected: %s", namespace, name, e)
                    return
                time.sleep(0.2 * (attempt + 1))
            except OSError:
                time.sleep(0.2 * (attempt + 1))

    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        stamp = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "podrunner", "host": pod["spec"].get("nodeName", "")},
        }
        with contextlib.suppress(ApiError, OSError):
            self.rest.post(f"/api/v1/namespaces/{meta['namespace']}/events", body)

    def pod_addressed(self, worker: PodWorker) -> None:
        self._update_hosts(worker.namespace)

    def _update_hosts(self, namespace: str) -> None:
        with self._lock:
            peers = [
                w
                for w in self._workers.values()
                if w.namespace == namespace and w.pod_ip is not None
            ]
        for worker in peers:
            if worker.netns is None:
                continue
            entries = [
                HostEntry(
                    worker.pod_ip or "", host_names(worker.hostname, worker.subdomain, namespace)
                )
            ]
            for peer in peers:
                if peer is not worker and peer.subdomain:
                    names = host_names(peer.hostname, peer.subdomain, namespace)[:-1]
                    entries.append(HostEntry(peer.pod_ip or "", names))
            if worker.netns is not None:
                self.network.write_hosts(worker.netns, entries)

    # ---- hooks for tests -------------------------------------------------------------------------

    def _worker(self, namespace: str, name: str) -> PodWorker:
        with self._lock:
            matches = [
                w for w in self._workers.values() if (w.namespace, w.pod_name) == (namespace, name)
            ]
        if not matches:
            raise KeyError(f"pod {namespace}/{name} was never run by the pod runner")
        return matches[-1]

    def kill_pod(self, namespace: str, name: str, container: str | None = None) -> None:
        """SIGKILL a pod's container processes (exit 137, reason Error), as if they crashed."""
        self._worker(namespace, name).kill(container, oom=False)

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> None:
        """Kill a pod's container as the kernel's OOM killer would: exit 137, reason OOMKilled."""
        self._worker(namespace, name).kill(container, oom=True)

    def lose_node(self, node: str) -> list[str]:
        """The node vanishes: NotReady + unreachable taints, its pods Failed with DisruptionTarget.

        Does at once what the node lifecycle controller and taint manager do after their timeouts;
        the pods are then removed, as pod GC would. Returns the names of the pods it disrupted.
        """
        with self._lock:
            self._lost.add(node)
            victims = [w for w in self._workers.values() if w.node == node and not w.done.is_set()]
        taints = [
            {"key": "node.kubernetes.io/unreachable", "effect": e, "timeAdded": now()}
            for e in ("NoSchedule", "NoExecute")
        ]
        self.rest.patch(f"/api/v1/nodes/{node}", {"spec": {"taints": taints}}, "merge")
        self._post_node_status(node, ready=False)
        for worker in victims:
            worker.disrupt(
                "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint"
            )
        for worker in victims:
            worker.done.wait(30)
            self._force_delete(worker.namespace, worker.pod_name, worker.uid)
        return [w.pod_name for w in victims]

    def restore_node(self, node: str, timeout: float = 60.0) -> None:
        with self._lock:
            self._lost.discard(node)
        self._post_node_status(node, ready=True)
        self._heartbeat()
        self.rest.patch(f"/api/v1/nodes/{node}", {"spec": {"taints": None}}, "merge")
        self.wait_nodes_ready(timeout, [node])

    def restore_all_nodes(self) -> None:
        for node in list(self._lost):
            self.restore_node(node)

    def logs(
        self, namespace: str, name: str, container: str | None = None, previous: bool = False
    ) -> str:
        """A container's output (stdout and stderr together), like `kubectl logs [--previous]`.

        Empty while the pod has not started here yet.
        """
        try:
            files = self._worker(namespace, name).log_files(container)
        except KeyError:
            return ""
        if previous:
            files = files[:-1]
        return files[-1].read_text(errors="replace") if files else ""

    def pod_ip(self, namespace: str, name: str) -> str | None:
        return self._worker(namespace, name).pod_ip

    def volume_dir(self, namespace: str, claim: str) -> Path:
        """The host directory behind a PersistentVolumeClaim (to seed or inspect its files)."""
        path = self.claim_dir(namespace, claim)
        if path is None:
            raise KeyError(f"PersistentVolumeClaim {namespace}/{claim} is not bound")
        return path

    def describe(self, namespace: str) -> list[dict[str, object]]:
        with self._lock:
            return [w.describe() for w in self._workers.values() if w.namespace == namespace]
