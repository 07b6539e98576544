"""Small manifest factories for cluster tests; pods satisfy the restricted Pod Security Standard."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Obj = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def container(command: list[str], name: str = "main", image: str = "busybox", **extra: Any) -> Obj:
    return {
        "name": name,
        "image": image,
        "command": command,
        "securityContext": dict(CONTAINER_SECURITY),
        **extra,
    }


def pod_spec(*containers: Obj, restart_policy: str = "Never", **extra: Any) -> Obj:
    return {
        "restartPolicy": restart_policy,
        "securityContext": dict(POD_SECURITY),
        "terminationGracePeriodSeconds": 5,
        "containers": list(containers),
        **extra,
    }


def pod(name: str, spec: Obj, **metadata: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **metadata}, "spec": spec}


def job(
    name: str,
    spec: Obj,
    *,
    completions: int = 1,
    parallelism: int = 1,
    indexed: bool = False,
    backoff_limit: int = 0,
    **job_spec: Any,
) -> Obj:
    body: Obj = {
        "completions": completions,
        "parallelism": parallelism,
        "backoffLimit": backoff_limit,
        "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        **job_spec,
    }
    if indexed:
        body["completionMode"] = "Indexed"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": body}


def headless_service(name: str, selector: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rdzv", "port": 29500}],
        },
    }


def pvc(name: str, size: str = "1Gi") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
    }
