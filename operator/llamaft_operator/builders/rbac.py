"""The trainer's identity in a namespace: it may only patch `llamafinetunes/status` there.

The step pods of pilot and train patch `status.progress`; nothing else in the cluster is open to
them. The three objects are shared by the runs of a namespace and owned by none.
"""

from __future__ import annotations

from typing import Any

from llamaft_operator.api import GROUP, PLURAL
from llamaft_operator.builders.common import shared_labels
from llamaft_operator.settings import Settings


def _meta(namespace: str, settings: Settings) -> dict[str, Any]:
    return {
        "name": settings.trainer_service_account,
        "namespace": namespace,
        "labels": shared_labels("trainer"),
    }


def build_trainer_service_account(namespace: str, settings: Settings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(namespace, settings)}


def trainer_rules() -> list[dict[str, Any]]:
    return [
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
    ]


def build_trainer_role(namespace: str, settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(namespace, settings),
        "rules": trainer_rules(),
    }


def build_trainer_role_binding(namespace: str, settings: Settings) -> dict[str, Any]:
    name = settings.trainer_service_account
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(namespace, settings),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
