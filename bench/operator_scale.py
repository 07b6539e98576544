"""Operator scale and latency: 1,000 LlamaFineTunes on a real control plane with kwok GPU nodes.

    scripts/testbin.sh                                    # once: kube-apiserver, etcd, kwok ...
    .venv/bin/python -m bench.operator_scale --crs 1000 --mode dryrun
    .venv/bin/python -m bench.operator_scale --crs 1000 --mode jobs --nodes 100

What runs: the test control plane of tests/cluster (etcd, kube-apiserver, controller-manager,
scheduler; no pod network, no pod runner), kwok managing `--nodes` fake nodes with 8
`nvidia.com/gpu` each (kwok's default stages make pods Running, and complete pods owned by
Jobs), and the operator as a subprocess (`python -m llamaft_operator --namespace bench
--standalone`, the e2e settings with a catalogue of 8-GPU nodes). In `jobs` mode a small
provisioner in this script creates a PersistentVolume for every claim (the controller-manager's
binder binds them), so the operator's pods can be scheduled onto the kwok nodes.

Modes:
- dryrun: every CR has `spec.dryRun: true`: the operator plans and writes status (phase
  Planned), creates nothing. Latency = create -> status.phase Planned.
- jobs: real CRs (builtin tiny model, data in a ConfigMap): latency = create -> the first Job
  owned by the CR exists; then the time until every CR reaches a terminal phase (Succeeded,
  Failed: kwok completes pods without running them, so steps that read a report fail, which is
  terminal too; the reasons are counted).

Measured: p50/p99/max latency (client clock: the create call's return to the watch event),
time until all done, operator peak RSS and CPU seconds (psutil), API requests by the operator
per CR (kube-apiserver audit log, the operator's ServiceAccount user, by verb and
resource), Jobs per CR and step (duplicates), errors in the operator log.
Targets (issue 9): p50 <= 1 s, p99 <= 3 s, RSS <= 150 MB, no errors, no duplicate Jobs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import common

NAMESPACE = "bench"
API = "llamaft.io/v1alpha1"
GPU_TYPE = "sim-h100"
CATALOGUE = [
    {
        "name": GPU_TYPE,
        "memoryGib": 80,
        "bf16Tflops": 989,
        "gpusPerNode": 8,
        "cpuPerNode": 96,
        "memoryGibPerNode": 1024,
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
    }
]
OPERATOR_SA = "llamaft-operator"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}"
AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["{OPERATOR_USER}"]
- level: None
"""
TERMINAL = {"Succeeded", "Failed", "Planned"}
# What each step's container "prints" as its termination message when kwok completes its pod:
# what the real trainer reports, so the run walks validate -> train -> eval -> Succeeded.
STEP_RESULTS = {
    "validate": {"rows": 20, "tokens": 4000, "badRows": 0},
    "eval": {"metrics": {"golden": {"rougeL": 0.9, "exactMatch": 0.8}}},
}
# kwok's "fast" pod stages (pod-ready, pod-complete, pod-delete; kustomize/stage/pod/fast in
# kwok v0.6.1), pod-complete extended by the step's termination message.
KWOK_STAGES = """apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.podIP', operator: DoesNotExist}
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Ready}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: ContainersReady}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-complete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: [Running]}
    - {key: '.metadata.ownerReferences.[].kind', operator: In, values: [Job]}
  delay: {durationMilliseconds: DELAY_MS}
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $step := index .metadata.labels "llamaft.io/step" }}
      {{ $message := "{}" }}
      MESSAGES
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ $now | Quote }}
            reason: Completed
            startedAt: {{ $now | Quote }}
            message: {{ $message | Quote }}
      {{ end }}
      phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  next:
    finalizers: {empty: true}
    delete: true
"""


def kwok_stages(step_seconds: float) -> str:
    """The pod stages with each step's result as a Go-template branch on its step label."""
    branches = "\n      ".join(
        f"{{{{ if eq $step {json.dumps(step)} }}}}{{{{ $message = {json.dumps(json.dumps(r))} }}}}"
        "{{ end }}"
        for step, r in STEP_RESULTS.items()
    )
    return KWOK_STAGES.replace("MESSAGES", branches).replace(
        "DELAY_MS", str(int(step_seconds * 1000))
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "96", "memory": "1024Gi", "pods": "110", "nvidia.com/gpu": "8"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {},
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def finetune(name: str, mode: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "builtin:tiny-llama"},
        "dataset": {
            "source": {"configMap": {"name": "bench-data", "key": "train.jsonl"}},
            "format": "prompt-response",
        },
        "method": "lora",
        "training": {"maxSteps": 4, "maxSeqLength": 128},
        "resources": {"gpuType": GPU_TYPE},
    }
    if mode == "dryrun":
        spec["dryRun"] = True
    return {"apiVersion": API, "kind": "LlamaFineTune", "metadata": {"name": name}, "spec": spec}


class Provisioner(threading.Thread):
    """Creates a hostPath PersistentVolume pre-bound to every new claim in the namespace."""

    def __init__(self, rest: Any, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.rest, self.stop = rest, stop
        self.created = 0

    def run(self) -> None:
        path = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
        version = self.rest.get(path)["metadata"]["resourceVersion"]
        while not self.stop.is_set():
            try:
                for kind, obj in self.rest.watch(path, version, timeout_s=5):
                    version = obj["metadata"].get("resourceVersion", version)
                    if kind == "ADDED" and not obj["spec"].get("volumeName"):
                        self.provision(obj)
            except Exception as err:
                if self.stop.is_set():
                    return
                print(f"provisioner watch: {err}", file=sys.stderr)
                version = self.rest.get(path)["metadata"]["resourceVersion"]

    def provision(self, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        self.created += 1
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"pv-{meta['uid']}"},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "storageClassName": claim["spec"].get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": f"/tmp/kwok-pv/{meta['uid']}"},
                "claimRef": {
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.rest.post("/api/v1/persistentvolumes", pv)
        except Exception as err:
            print(f"provisioner: {err}", file=sys.stderr)


class Watcher(threading.Thread):
    """Records when (monotonic, this process) each CR first reached a phase or got a Job."""

    def __init__(self, rest: Any, path: str, seen: Any, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.rest, self.path, self.seen, self.stop = rest, path, seen, stop

    def run(self) -> None:
        version = self.rest.get(self.path)["metadata"]["resourceVersion"]
        while not self.stop.is_set():
            try:
                for _kind, obj in self.rest.watch(self.path, version, timeout_s=5):
                    version = obj["metadata"].get("resourceVersion", version)
                    if _kind != "BOOKMARK":
                        self.seen(obj, time.monotonic())
            except Exception as err:  # 410 Gone and friends: relist
                if self.stop.is_set():
                    return
                print(f"watch {self.path}: {err}", file=sys.stderr)
                version = self.rest.get(self.path)["metadata"]["resourceVersion"]


class OperatorProbe(threading.Thread):
    """Peak RSS and CPU seconds of the operator process."""

    def __init__(self, pid: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.stop = stop
        self.peak_rss_mib = 0.0
        self.cpu_seconds = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak_rss_mib = max(self.peak_rss_mib, self.proc.memory_info().rss / common.MIB)
                times = self.proc.cpu_times()
                self.cpu_seconds = times.user + times.system
            except Exception:
                return
            time.sleep(0.2)


def control_plane_cpu(cp: Any) -> dict[str, float]:
    """CPU seconds (user + system) used so far by kube-apiserver and etcd."""
    import psutil

    out = {}
    for name in ("kube-apiserver", "etcd"):
        times = psutil.Process(cp.processes[name].pid).cpu_times()
        out[name] = times.user + times.system
    return out


def wait_served(rest: Any, path: str, timeout: float = 60) -> None:
    """Until `path` lists: a just-established CRD answers 429 while its storage initialises."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rest.get(path)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def audit_counts(log: Path, since: str) -> dict[str, Any]:
    """Requests by the operator's user after `since` (RFC 3339), by verb and resource."""
    by: collections.Counter[str] = collections.Counter()
    ids = set()
    if not log.exists():
        return {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") != OPERATOR_USER:
            continue
        if event.get("requestReceivedTimestamp", "") < since or event["auditID"] in ids:
            continue
        ids.add(event["auditID"])
        ref = event.get("objectRef", {})
        resource = ref.get("resource", "?") + (
            f"/{ref['subresource']}" if "subresource" in ref else ""
        )
        by[f"{event['verb']} {resource}"] += 1
    return {"total": len(ids), "byVerbResource": dict(by.most_common())}


def operator_kubeconfig(cp: Any, admin: Any, work: Path) -> Path:
    """A ServiceAccount token (cluster-admin) for the operator, so the audit log tells its
    requests apart from this script's and kwok's."""
    from tests.cluster.controlplane import write_kubeconfig

    admin.post(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA}},
    )
    admin.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NAMESPACE}],
        },
    )
    token = admin.post(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{OPERATOR_SA}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        },
    )["status"]["token"]
    return write_kubeconfig(
        work / "operator.kubeconfig",
        cp.server,
        cp.ca_file,
        user=OPERATOR_USER,
        token=token,
        namespace=NAMESPACE,
    )


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tests.cluster.controlplane import ControlPlane, find_bin_dir
    from tests.cluster.rest import Rest
    from tests.e2e.conftest import CRD

    bin_dir = find_bin_dir()
    policy = work / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = work / "audit.log"
    cp = ControlPlane(
        bin_dir,
        work / "controlplane",
        extra_apiserver_args=(
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-mode=batch",
            "--audit-log-batch-max-wait=1s",
        ),
        # The Job controller's client is limited to 20 requests/s by default, which, not the
        # operator, paces thousands of Jobs; large clusters raise it too.
        extra_controller_manager_args=(
            f"--kube-api-qps={args.kcm_qps}",
            f"--kube-api-burst={2 * args.kcm_qps}",
            "--concurrent-job-syncs=50",
            # The harness keeps 1,000 finished pods; production's default is 12,500. Fewer
            # would delete pods whose termination message the operator has not read yet.
            "--terminated-pod-gc-threshold=12500",
        ),
    )
    stop = threading.Event()
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, Any] = {"mode": args.mode, "crs": args.crs, "nodes": args.nodes}
    started = time.monotonic()
    cp.start()
    report["controlPlaneStartSeconds"] = round(time.monotonic() - started, 1)
    try:
        admin = Rest.from_kubeconfig(cp.kubeconfig).with_namespace(NAMESPACE)
        kube_env = {"KUBECONFIG": str(cp.kubeconfig)}
        subprocess.run(
            ["kubectl", "apply", "--server-side", "-f", str(CRD)],
            check=True,
            capture_output=True,
            env={**kube_env, "PATH": "/usr/bin:/bin"},
        )
        subprocess.run(
            [
                "kubectl",
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/llamafinetunes.llamaft.io",
            ],
            check=True,
            capture_output=True,
            env={**kube_env, "PATH": "/usr/bin:/bin"},
        )
        admin.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        )
        admin.post(
            f"/api/v1/namespaces/{NAMESPACE}/configmaps",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bench-data"},
                "data": {"train.jsonl": '{"prompt": "hi", "response": "hello"}\n' * 20},
            },
        )
        kwok_config = work / "kwok.yaml"
        kwok_config.write_text(kwok_stages(args.step_seconds))
        kwok_log = (work / "kwok.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "kwok"),
                    f"--kubeconfig={cp.kubeconfig}",
                    f"--config={kwok_config}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                    "--cidr=10.0.0.1/16",
                    "--node-ip=10.0.0.1",
                    "--node-port=0",
                    "--server-address=127.0.0.1:0",
                ],
                stdout=kwok_log,
                stderr=subprocess.STDOUT,
            )
        )
        for i in range(args.nodes):
            admin.post("/api/v1/nodes", node(f"gpu-node-{i:03d}"))
        ft_path = f"/apis/{API}/namespaces/{NAMESPACE}/llamafinetunes"
        wait_served(admin, ft_path)
        # The operator's own defaults (not the e2e's short retry intervals), our catalogue.
        env = {
            **os.environ,
            "KUBECONFIG": str(operator_kubeconfig(cp, admin, work)),
            "LLAMAFT_GPU_CATALOGUE": json.dumps(CATALOGUE),
            "LLAMAFT_DEFAULT_GPU_TYPE": GPU_TYPE,
            "LLAMAFT_TRAINER_IMAGE": "llamaft/trainer:bench",
            "LLAMAFT_METRICS_PORT": "0",
            "LLAMAFT_LIVENESS_ENDPOINT": "off",
            **dict(kv.split("=", 1) for kv in args.operator_env),
        }
        if args.operator_src:  # another version of the operator, e.g. `git archive` of a commit
            env["PYTHONPATH"] = str(args.operator_src.resolve())
            report["operatorSrc"] = str(args.operator_src)
        report["operatorEnv"] = args.operator_env
        op_log = work / "operator.log"
        operator = subprocess.Popen(
            [sys.executable, "-m", "llamaft_operator", "--namespace", NAMESPACE, "--standalone"],
            env=env,
            stdout=op_log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=common.ROOT,
        )
        procs.append(operator)
        time.sleep(args.settle)
        if args.mode == "jobs":
            Provisioner(admin, stop).start()
        probe = OperatorProbe(operator.pid, stop)
        probe.start()
        rss_idle = probe.proc.memory_info().rss / common.MIB

        created: dict[str, float] = {}
        done: dict[str, float] = {}
        phases: dict[str, str] = {}
        first_job: dict[str, float] = {}
        failures: dict[str, str] = {}
        jobs: collections.Counter[tuple[str, str]] = collections.Counter()
        job_names: set[str] = set()
        lock = threading.Lock()

        def seen_ft(obj: dict[str, Any], at: float) -> None:
            name = obj["metadata"]["name"]
            phase = (obj.get("status") or {}).get("phase")
            with lock:
                if phase:
                    phases[name] = phase
                if phase == "Failed":
                    for cond in (obj.get("status") or {}).get("conditions") or []:
                        if cond.get("type") == "Failed":
                            failures[name] = f"{cond.get('reason')}: {cond.get('message')}"[:300]
                if phase in TERMINAL and name not in done:
                    done[name] = at

        def seen_job(obj: dict[str, Any], at: float) -> None:
            owners = [o["name"] for o in obj["metadata"].get("ownerReferences", [])]
            with lock:
                for owner in owners:
                    first_job.setdefault(owner, at)
                    if obj["metadata"]["name"] not in job_names:
                        job_names.add(obj["metadata"]["name"])
                        step = obj["metadata"].get("labels", {}).get("llamaft.io/step", "?")
                        jobs[(owner, step)] += 1

        Watcher(admin, ft_path, seen_ft, stop).start()
        Watcher(admin, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", seen_job, stop).start()
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        log_offset = op_log.stat().st_size  # errors count from here: start-up is not measured
        cpu_before = probe.proc.cpu_times()
        plane_before = control_plane_cpu(cp)
        if args.profile:
            procs.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(operator.pid),
                        "--format",
                        "raw",
                        "--rate",
                        "50",
                        "--output",
                        str(args.profile),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        apply_started = time.monotonic()
        for i in range(args.crs):
            name = f"ft-{i:04d}"
            admin.post(ft_path, finetune(name, args.mode))
            created[name] = time.monotonic()
            if args.rate:  # paced on the clock: the i-th create at i / rate seconds
                time.sleep(max(0.0, apply_started + (i + 1) / args.rate - time.monotonic()))
        apply_seconds = time.monotonic() - apply_started
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(done) < args.crs:
            time.sleep(1)
        all_done = time.monotonic() - apply_started
        time.sleep(2)  # the audit log's batch
        cpu_after = probe.proc.cpu_times()
        plane_after = control_plane_cpu(cp)
        if args.profile:
            procs[-1].send_signal(2)  # SIGINT: py-spy writes its profile
            procs[-1].wait(30)
        stop.set()
        if args.mode == "dryrun":
            latency = [done[n] - created[n] for n in created if n in done]
        else:
            latency = [first_job[n] - created[n] for n in created if n in first_job]
        duplicates = {f"{o}/{s}": c for (o, s), c in jobs.items() if c > 1}
        log_text = op_log.read_bytes()[log_offset:].decode(errors="replace")
        errors = [ln for ln in log_text.splitlines() if " ERROR" in ln or "Traceback" in ln]
        retried = [ln for ln in log_text.splitlines() if "Reconcile failed" in ln]
        audit = audit_counts(audit_log, since)
        report.update(
            applySeconds=round(apply_seconds, 1),
            latencyOf="create -> phase Planned" if args.mode == "dryrun" else "create -> first Job",
            latencyP50=round(percentile(latency, 0.5), 3),
            latencyP99=round(percentile(latency, 0.99), 3),
            latencyMax=round(max(latency), 3) if latency else None,
            latencyMean=round(statistics.fmean(latency), 3) if latency else None,
            measured=len(latency),
            terminal=len(done),
            untilAllTerminalSeconds=round(all_done, 1) if len(done) == args.crs else None,
            phases=dict(collections.Counter(phases.values())),
            operatorRssIdleMiB=round(rss_idle),
            operatorPeakRssMiB=round(probe.peak_rss_mib),
            operatorCpuSeconds=round(
                (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system), 1
            ),
            controlPlaneCpuSeconds={
                k: round(plane_after[k] - plane_before[k], 1) for k in plane_after
            },
            apiRequests=audit.get("total"),
            apiRequestsPerCr=round(audit.get("total", 0) / args.crs, 1),
            apiRequestsByVerb=audit.get("byVerbResource"),
            jobs=len(job_names),
            duplicateJobs=duplicates,
            operatorErrors=len(errors),
            operatorErrorSample=errors[:5],
            reconcilesRetried=len(retried),
            reconcileRetrySample=retried[:3],
            failedReasons=dict(collections.Counter(f.split(":")[0] for f in failures.values())),
            failedSample=list(failures.values())[:3],
        )
        return report
    finally:
        stop.set()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        cp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--mode", choices=["dryrun", "jobs"], default="dryrun")
    parser.add_argument(
        "--rate", type=float, default=0, help="creates per second (0: as fast as possible)"
    )
    parser.add_argument("--settle", type=float, default=5, help="seconds for the operator to start")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--step-seconds", type=float, default=1.0, help="how long kwok runs each step's pod"
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="LLAMAFT_X=VALUE",
        help="extra operator setting (repeat)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the operator while it works (raw stacks here)"
    )
    parser.add_argument(
        "--operator-src",
        type=Path,
        help="directory holding another llamaft_operator package to run (before/after runs)",
    )
    parser.add_argument(
        "--kcm-qps", type=int, default=200, help="kube-controller-manager's API requests/s"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="keep logs (operator, kwok, audit) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.keep.parent if args.keep else None) as tmp:
        work = Path(tmp)
        report = {"machine": common.machine(), **run(args, work)}
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("operator.log", "kwok.log"):
                if (work / name).exists():
                    (args.keep / name).write_bytes((work / name).read_bytes())
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
