"""PersistentVolumeClaims: the run's work volume and the namespace's model cache.

`<name>-work` holds checkpoints, the adapter, reports and the package; it is owned by the run, so
it goes when the run is deleted and survives suspend and retries. The model cache is shared by the
runs of a namespace and owned by none of them, so a model is downloaded once.
"""

from __future__ import annotations

from typing import Any

from llamaft_operator.builders.common import WORK_SUFFIX, Run, metadata, shared_labels
from llamaft_operator.settings import Settings


def work_access_mode(run: Run) -> str:
    """Every rank of a multi-node run writes its checkpoint shard, so those need RWX."""
    return "ReadWriteMany" if run.plan.resources.nodes > 1 else run.settings.work_access_mode


def _claim(
    meta: dict[str, Any], size: str, access_mode: str, storage_class: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def build_work_pvc(run: Run) -> dict[str, Any]:
    return _claim(
        metadata(run.owner, WORK_SUFFIX, "work"),
        run.spec.work_volume_size,
        work_access_mode(run),
        run.settings.storage_class,
    )


def build_model_cache_pvc(namespace: str, settings: Settings) -> dict[str, Any]:
    meta = {
        "name": settings.model_cache_claim,
        "namespace": namespace,
        "labels": shared_labels("model-cache"),
    }
    return _claim(
        meta, settings.model_cache_size, settings.model_cache_access_mode, settings.storage_class
    )
