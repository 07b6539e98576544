"""What every child object shares: names, labels, owner references, in-pod paths, security.

Child names are deterministic (`<name>-<suffix>`) so a create after a crash or a restart finds the
object it made before instead of making a second one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llamaft_operator.api import API_VERSION, KIND, LlamaFineTuneSpec
from llamaft_operator.settings import Settings
from llamaft_trainer.config import RunPlan

# --- steps and names ----------------------------------------------------------------------------
VALIDATE = "validate"
FETCH = "fetch"
PILOT = "pilot"
TRAIN = "train"
EVAL = "eval"
PUBLISH = "publish"
STEPS = (VALIDATE, FETCH, PILOT, TRAIN, EVAL, PUBLISH)
GPU_STEPS = (PILOT, TRAIN, EVAL)

PLAN_SUFFIX = "plan"
WORK_SUFFIX = "work"
RENDEZVOUS_SUFFIX = "train"  # the headless Service shares the train Job's name


def child_name(name: str, suffix: str) -> str:
    return f"{name}-{suffix}"


# --- labels and annotations ---------------------------------------------------------------------
LABEL_FINETUNE = "llamaft.io/finetune"
LABEL_STEP = "llamaft.io/step"
LABEL_RENDEZVOUS = "llamaft.io/rendezvous"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_PUBLISH_HASH = "llamaft.io/publish-hash"
MANAGED_BY = "llamaft-operator"


def labels(name: str, component: str) -> dict[str, str]:
    """Labels of every child: the run's name selects them all (`-l llamaft.io/finetune=<name>`)."""
    return {
        LABEL_NAME: "llamaft",
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_FINETUNE: name,
    }


def shared_labels(component: str) -> dict[str, str]:
    """Labels of objects shared by the runs of a namespace (model cache, trainer RBAC)."""
    return {LABEL_NAME: "llamaft", LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY}


# --- in-pod paths (the trainer CLI's contract) -------------------------------------------------
PLAN_DIR = "/etc/llamaft"
PLAN_FILE = "plan.json"
INITIAL_PLAN_FILE = "initial-plan.json"
PLAN_PATH = f"{PLAN_DIR}/{PLAN_FILE}"
WORKDIR = "/workspace"
MODEL_CACHE = "/models"
DATA_ROOT = "/data"
CONFIGMAP_ROOT = "/config"
PUBLISH_ROOT = "/publish"
TOKEN_DIR = "/var/run/secrets/llamaft/hub"
TOKEN_FILE = "token"
TOKEN_PATH = f"{TOKEN_DIR}/{TOKEN_FILE}"
TERMINATION_LOG = "/dev/termination-log"
RUN_AS_USER = 1000


@dataclass(frozen=True)
class Owner:
    """The LlamaFineTune that owns the children."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Run:
    """Everything a builder needs: the owner, its spec, the plan and the operator settings.

    `plan_revision` is the plan ConfigMap's revision that holds `plan` (see builders/configmap.py).
    """

    owner: Owner
    spec: LlamaFineTuneSpec
    plan: RunPlan
    settings: Settings
    plan_revision: int = 1

    def name(self, suffix: str) -> str:
        return child_name(self.owner.name, suffix)


def owner_reference(owner: Owner) -> dict[str, Any]:
    """Controller owner reference: deleting the run garbage-collects the child."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    owner: Owner,
    suffix: str,
    component: str,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": child_name(owner.name, suffix),
        "namespace": owner.namespace,
        "labels": {**labels(owner.name, component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


# --- restricted Pod Security Standard --------------------------------------------------------
def pod_security_context() -> dict[str, Any]:
    """Pod-level part of the `restricted` standard; fsGroup makes the volumes writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container part: no escalation, no capabilities, read-only root (/tmp is an emptyDir)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def spec_hash(value: object) -> str:
    """A short stable hash of a JSON-able value (which settings a child was built from)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def publish_hash(spec: LlamaFineTuneSpec) -> str:
    publish = spec.publish.model_dump(by_alias=True, exclude_none=True) if spec.publish else None
    return spec_hash(publish)
