"""Tests of the cluster harness itself: real apiserver, controllers, scheduler, pod runner."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from tests.cluster import manifests as m
from tests.cluster.fixtures import Runner, sa_client
from tests.cluster.kube import Kube, condition_true
from tests.cluster.podrunner import PodRunner
from tests.cluster.rest import ApiError, Obj

pytestmark = pytest.mark.cluster
Wait = Callable[..., Any]

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.llamaft.test"},
    "spec": {
        "group": "harness.llamaft.test",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def job_condition(kube: Kube, name: str, kind: str) -> Callable[[], bool]:
    def check() -> bool:
        return condition_true(kube.get("batch/v1", "Job", name), kind)

    check.__name__ = f"Job {name} {kind}"
    return check


def pods_of(kube: Kube, job: str) -> list[Obj]:
    return kube.select("v1", "Pod", f"job-name={job}")


def test_apiserver_rejects_invalid_object_by_schema(
    kube: Kube, apply_crd: Callable[[Path], list[str]], tmp_path: Path
) -> None:
    crd = tmp_path / "widget-crd.yaml"
    crd.write_text(yaml.safe_dump(WIDGET_CRD))
    assert apply_crd(crd) == ["widgets.harness.llamaft.test"]

    def widget(name: str, size: object) -> Obj:
        return {
            "apiVersion": "harness.llamaft.test/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size},
        }

    kube.create(widget("good", 3))
    for name, size in (("bad-type", "three"), ("too-big", 11)):
        with pytest.raises(ApiError) as err:
            kube.create(widget(name, size))
        assert err.value.status == 422, err.value
        assert "spec.size" in str(err.value)


def test_job_with_two_completions_runs_commands(
    kube: Kube, podrunner: PodRunner, wait_for: Wait
) -> None:
    script = 'echo "ran in $POD_NAME on $NODE"'
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    job = m.job(
        "two", m.pod_spec(m.container(["sh", "-c", script], env=env)), completions=2, parallelism=2
    )
    kube.create(job)
    wait_for(job_condition(kube, "two", "Complete"), timeout=60, describe=job)
    assert kube.get("batch/v1", "Job", "two")["status"]["succeeded"] == 2
    for pod in pods_of(kube, "two"):
        name = pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Succeeded"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
        assert f"ran in {name} on {pod['spec']['nodeName']}" in podrunner.logs(kube.namespace, name)


RENDEZVOUS = textwrap.dedent("""
    import os, socket, sys, time
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    if index == 0:
        server = socket.create_server(("0.0.0.0", 29500))
        conn, _ = server.accept()
        message = conn.recv(100).decode()
        open("/dev/termination-log", "w").write(message)
        print("received", message)
    else:
        peer = os.environ["PEER"]
        for _ in range(100):
            try:
                with socket.create_connection((peer, 29500), timeout=2) as conn:
                    conn.sendall(f"hello from {socket.gethostname()}".encode())
                    break
            except OSError:
                time.sleep(0.2)
        else:
            sys.exit(f"could not reach {peer}")
""")


def test_indexed_job_pods_reach_each_other_by_hostname(
    kube: Kube, podrunner: PodRunner, wait_for: Wait
) -> None:
    kube.create(m.headless_service("rdzv", {"job-name": "pair"}))
    spec = m.pod_spec(
        m.container(["python", "-c", RENDEZVOUS], env=[{"name": "PEER", "value": "pair-0.rdzv"}]),
        subdomain="rdzv",
    )
    job = m.job("pair", spec, completions=2, parallelism=2, indexed=True)
    kube.create(job)
    wait_for(job_condition(kube, "pair", "Complete"), timeout=90, describe=job)
    pods = {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
        for p in pods_of(kube, "pair")
    }
    assert pods["0"]["spec"]["hostname"] == "pair-0"
    assert pods["0"]["status"]["podIP"] != pods["1"]["status"]["podIP"]
    message = pods["0"]["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert message == "hello from pair-1"


def test_deleting_owner_garbage_collects_children(kube: Kube, wait_for: Wait) -> None:
    owner = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "child", "ownerReferences": [ref]},
            "data": {"a": "b"},
        }
    )
    kube.delete("v1", "ConfigMap", "owner")
    wait_for(
        lambda: kube.get_or_none("v1", "ConfigMap", "child") is None,
        timeout=60,
        what="child ConfigMap garbage-collected",
    )


def test_pod_failure_policy_fail_job_on_exit_code(kube: Kube, wait_for: Wait) -> None:
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [2]},
            }
        ]
    }
    job = m.job(
        "fails",
        m.pod_spec(m.container(["sh", "-c", "exit 2"])),
        backoff_limit=6,
        podFailurePolicy=policy,
    )
    kube.create(job)
    wait_for(job_condition(kube, "fails", "Failed"), timeout=60, describe=job)
    status = kube.get("batch/v1", "Job", "fails")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert status.get("failed") == 1 and len(pods_of(kube, "fails")) == 1  # no retries


def test_service_account_without_rights_gets_403(
    kube: Kube, sa_kubeconfig: Callable[[str, str], Path], kubectl: Runner
) -> None:
    config = sa_kubeconfig(kube.namespace, "nobody")
    client = sa_client(config)
    with pytest.raises(ApiError) as err:
        client.get(f"/api/v1/namespaces/{kube.namespace}/pods")
    assert err.value.status == 403
    answer = kubectl("auth", "can-i", "list", "pods", f"--kubeconfig={config}", check=False)
    assert answer.stdout.strip() == "no"

    kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
    )
    kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "nobody-reads"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": kube.namespace}],
        }
    )
    assert client.get(f"/api/v1/namespaces/{kube.namespace}/pods")["items"] == []


def test_pod_env_volumes_and_termination_message(
    kube: Kube, podrunner: PodRunner, wait_for: Wait
) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cret"},
        }
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"MODE": "fast", "plan.json": '{"steps": 3}'},
        }
    )
    kube.create(m.pvc("work"))
    script = (
        'echo "token=$TOKEN mode=$MODE ns=$NS"; cat /etc/llamaft/plan.json; echo; '
        "echo persisted > /work/out.txt; touch /scratch/x; echo done > /results/summary"
    )
    spec = m.pod_spec(
        m.container(
            ["sh", "-c", script],
            env=[
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ],
            envFrom=[{"configMapRef": {"name": "settings"}}],
            volumeMounts=[
                {"name": "settings", "mountPath": "/etc/llamaft", "readOnly": True},
                {"name": "work", "mountPath": "/work"},
                {"name": "scratch", "mountPath": "/scratch"},
            ],
            terminationMessagePath="/results/summary",
        ),
        volumes=[
            {"name": "settings", "configMap": {"name": "settings"}},
            {"name": "work", "persistentVolumeClaim": {"claimName": "work"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    kube.create(m.pod("env", spec))
    pod = wait_for(
        lambda: (
            (p := kube.get("v1", "Pod", "env"))["status"].get("phase") in ("Succeeded", "Failed")
            and p
        ),
        timeout=60,
        describe=("v1", "Pod", "env"),
    )
    log = podrunner.logs(kube.namespace, "env")
    assert pod["status"]["phase"] == "Succeeded", log
    assert f"token=s3cret mode=fast ns={kube.namespace}" in log
    assert '{"steps": 3}' in log
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "done\n"
    assert (podrunner.volume_dir(kube.namespace, "work") / "out.txt").read_text() == "persisted\n"


def test_pod_deletion_sends_sigterm_then_removes_pod(
    kube: Kube, podrunner: PodRunner, wait_for: Wait
) -> None:
    script = "trap 'echo got SIGTERM; exit 0' TERM; echo started; while true; do sleep 0.1; done"
    kube.create(m.pod("graceful", m.pod_spec(m.container(["sh", "-c", script]))))
    wait_for(
        lambda: "started" in podrunner.logs(kube.namespace, "graceful"),
        timeout=60,
        describe=("v1", "Pod", "graceful"),
        what="container started",
    )
    kube.delete("v1", "Pod", "graceful")
    wait_for(
        lambda: kube.get_or_none("v1", "Pod", "graceful") is None, timeout=30, what="pod removed"
    )
    assert "got SIGTERM" in podrunner.logs(kube.namespace, "graceful")


def test_oom_kill_reports_oomkilled(kube: Kube, podrunner: PodRunner, wait_for: Wait) -> None:
    kube.create(m.pod("hog", m.pod_spec(m.container(["sh", "-c", "echo up; sleep 300"]))))
    wait_for(
        lambda: "up" in podrunner.logs(kube.namespace, "hog"),
        timeout=60,
        describe=("v1", "Pod", "hog"),
        what="container started",
    )
    podrunner.oom_kill(kube.namespace, "hog")
    pod = wait_for(
        lambda: (p := kube.get("v1", "Pod", "hog"))["status"].get("phase") == "Failed" and p,
        timeout=30,
        describe=("v1", "Pod", "hog"),
    )
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


def test_lose_node_disrupts_its_pods(kube: Kube, podrunner: PodRunner, wait_for: Wait) -> None:
    kube.create(m.pvc("marks"))
    # The first pod sleeps; its replacement (after the node is lost) finds the mark and succeeds.
    script = "if [ -e /marks/first ]; then exit 0; fi; touch /marks/first; sleep 300"
    mounts = [{"name": "marks", "mountPath": "/marks"}]
    volumes = [{"name": "marks", "persistentVolumeClaim": {"claimName": "marks"}}]
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    job = m.job(
        "survivor",
        m.pod_spec(m.container(["sh", "-c", script], volumeMounts=mounts), volumes=volumes),
        podFailurePolicy=policy,
    )
    kube.create(job)
    first = wait_for(
        lambda: [p for p in pods_of(kube, "survivor") if p["status"].get("phase") == "Running"],
        timeout=60,
        describe=job,
    )[0]
    node = first["spec"]["nodeName"]
    # A bare pod on the same node, held by a finalizer so its final status can be read.
    held = m.pod(
        "held",
        m.pod_spec(m.container(["sleep", "300"]), nodeSelector={"kubernetes.io/hostname": node}),
        finalizers=["llamaft.test/hold"],
    )
    kube.create(held)
    wait_for(
        lambda: kube.get("v1", "Pod", "held")["status"].get("phase") == "Running",
        timeout=60,
        describe=held,
    )

    assert sorted(podrunner.lose_node(node)) == sorted([first["metadata"]["name"], "held"])

    pod = kube.get("v1", "Pod", "held")
    assert pod["status"]["phase"] == "Failed"
    assert condition_true(pod, "DisruptionTarget")
    kube.rest.patch(
        f"/api/v1/namespaces/{kube.namespace}/pods/held",
        {"metadata": {"finalizers": None}},
        "merge",
    )
    ready = next(
        c for c in kube.get("v1", "Node", node)["status"]["conditions"] if c["type"] == "Ready"
    )
    assert ready["status"] == "Unknown"
    # podFailurePolicy Ignore matched the DisruptionTarget condition: no failure counted.
    wait_for(job_condition(kube, "survivor", "Complete"), timeout=90, describe=job)
    assert not kube.get("batch/v1", "Job", "survivor")["status"].get("failed")
    replacement = [p for p in pods_of(kube, "survivor") if p["status"].get("phase") == "Succeeded"]
    assert replacement and replacement[0]["spec"]["nodeName"] != node


INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
ALLREDUCE = textwrap.dedent("""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {value.item()}")
    assert value.item() == 3.0
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_torchrun_rendezvous_across_two_pods(
    kube: Kube, podrunner: PodRunner, wait_for: Wait
) -> None:
    kube.create(m.headless_service("ddp", {"job-name": "ddp"}))
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ddp"},
            "data": {"allreduce.py": ALLREDUCE},
        }
    )
    command = [
        "torchrun",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--master-addr=ddp-0.ddp",
        "--master-port=29500",
        "/opt/ddp/allreduce.py",
    ]
    spec = m.pod_spec(
        m.container(
            command,
            volumeMounts=[{"name": "code", "mountPath": "/opt/ddp"}],
            env=[
                {
                    "name": "JOB_COMPLETION_INDEX",
                    "valueFrom": {"fieldRef": {"fieldPath": INDEX_ANNOTATION}},
                }
            ],
        ),
        subdomain="ddp",
        volumes=[{"name": "code", "configMap": {"name": "ddp"}}],
    )
    job = m.job("ddp", spec, completions=2, parallelism=2, indexed=True)
    kube.create(job)
    wait_for(job_condition(kube, "ddp", "Complete"), timeout=180, describe=job)
    logs = [podrunner.logs(kube.namespace, p["metadata"]["name"]) for p in pods_of(kube, "ddp")]
    assert any("rank 0 of 2: sum 3.0" in log for log in logs), logs
    assert any("rank 1 of 2: sum 3.0" in log for log in logs), logs


IN_CLUSTER = textwrap.dedent("""
    from kubernetes import client, config
    config.load_incluster_config()
    try:
        client.CoreV1Api().list_namespaced_pod(open(
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace").read())
    except client.ApiException as e:
        print("in-cluster status", e.status)
""")


def test_init_containers_restarts_and_in_cluster_config(
    kube: Kube, podrunner: PodRunner, wait_for: Wait
) -> None:
    # The init container leaves a file; the main container fails once, then succeeds (OnFailure).
    script = "test -e /data/again && exit 0; touch /data/again; exit 1"
    mounts = [{"name": "data", "mountPath": "/data"}]
    spec = m.pod_spec(
        m.container(
            ["sh", "-c", f"python -c '{IN_CLUSTER}' && {script}"],
            volumeMounts=[{"name": "data", "mountPath": "/data"}],
        ),
        restart_policy="OnFailure",
        initContainers=[
            m.container(
                ["sh", "-c", "echo init > /data/init"],
                name="init",
                volumeMounts=mounts,
            )
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    kube.create(m.pod("restarts", spec))
    pod = wait_for(
        lambda: (
            (p := kube.get("v1", "Pod", "restarts"))["status"].get("phase") == "Succeeded" and p
        ),
        timeout=90,
        describe=("v1", "Pod", "restarts"),
    )
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    # The pod's ServiceAccount token authenticated: the default account may not list pods.
    assert "in-cluster status 403" in podrunner.logs(kube.namespace, "restarts", previous=True)
    core = k8s_client.CoreV1Api(kube.api_client)
    names = [p.metadata.name for p in core.list_namespaced_pod(kube.namespace).items if p.metadata]
    assert names == ["restarts"]


def test_helm_installs_a_chart(helm: Runner, kubectl: Runner, tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.28.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    helm("install", "demo", str(chart), "--set", "greeting=hi", "--wait", "--timeout", "60s")
    out = kubectl("get", "configmap", "demo-cm", "-o", "jsonpath={.data.greeting}")
    assert out.stdout == "hi"
