"""The operator's driver against the real API server: which reads it saves and what it notices.

The driver (`handlers.Driver`) runs here in the test's process, with the operator's own API
client (`k8s.Kube`) wrapped only to record each request it sends; no operator subprocess, so the
test can reconcile step by step and count the requests of one reconcile.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llamaft_operator.catalogue import GpuCatalogue, GpuType
from llamaft_operator.handlers import Driver, Queue
from llamaft_operator.k8s import Kube as OperatorKube
from llamaft_operator.reconcile import shared_refs
from llamaft_operator.settings import Settings
from tests.cluster.kube import Kube

pytestmark = pytest.mark.cluster

API = "llamaft.io/v1alpha1"
CRD = Path(__file__).resolve().parents[2] / "crds" / "llamafinetune.yaml"
SETTINGS = Settings(
    gpu_catalogue=GpuCatalogue(
        [GpuType(name="test-gpu", memory_gib=80, bf16_tflops=300, gpus_per_node=1)],
        default="test-gpu",
    ),
    default_gpu_type="test-gpu",
)
ROWS = '{"prompt": "2+2?", "response": "4"}\n' * 8


class RecordingKube(OperatorKube):
    """The operator's client, unchanged, recording (method, path) of every request."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        return super().request(method, path, *args, **kwargs)

    def gets(self) -> list[str]:
        """The GETs' paths within the namespace: "jobs", "configmaps/data", ..."""
        return [
            path.split("/namespaces/", 1)[-1].split("/", 1)[-1]
            for method, path in self.calls
            if method == "GET"
        ]


def test_driver_skips_its_own_job_event_and_rereads_owned_objects_on_resync(
    kube: Kube, apply_crd: Callable[[Path], list[str]]
) -> None:
    apply_crd(CRD)
    ns = kube.namespace
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "data", "namespace": ns},
            "data": {"train.jsonl": ROWS},
        }
    )
    kube.create(
        {
            "apiVersion": API,
            "kind": "LlamaFineTune",
            "metadata": {"name": "ft", "namespace": ns},
            "spec": {
                "model": {"name": "builtin:tiny-llama"},
                "dataset": {"source": {"configMap": {"name": "data", "key": "train.jsonl"}}},
                "method": "lora",
                # Kueue's queue: the Job is created suspended and, with no Kueue here, stays so;
                # nothing about it changes while the test reads it.
                "queueName": "team-a",
                "resources": {"gpuType": "test-gpu"},
            },
        }
    )
    client = RecordingKube(kube.api_client)
    driver = Driver(client, SETTINGS)
    queue = Queue(driver, SETTINGS)

    first = driver.reconcile_once(ns, "ft")
    assert first is not None
    created = {(o["kind"], o["metadata"]["name"]) for o in first.create}
    expected = {
        ("ConfigMap", "ft-plan"),
        ("PersistentVolumeClaim", "ft-work"),
        ("Job", "ft-validate"),
    }
    assert expected <= created

    # The run as our status patch left it, and after a progress patch like the trainer's: the
    # watch events of both change nothing the reconcile reads.
    assert not driver.run_changed((ns, "ft"), kube.get(API, "LlamaFineTune", "ft"))
    kube.rest.patch(
        f"/apis/{API}/namespaces/{ns}/llamafinetunes/ft/status",
        {"status": {"progress": {"step": 3, "totalSteps": 10}}},
        kind="merge",
    )
    progressed = kube.get(API, "LlamaFineTune", "ft")
    assert progressed["status"]["progress"]["step"] == 3
    assert not driver.run_changed((ns, "ft"), progressed)

    # The Job as the API server serves it, i.e. what its ADDED watch event carries: not a
    # reason to reconcile, the driver created it. A change the reconcile reads still is.
    job = kube.get("batch/v1", "Job", "ft-validate")
    assert not queue.job_changed(ns, job, deleted=False)
    admitted = {**job, "spec": {**job["spec"], "suspend": False}}
    assert queue.job_changed(ns, admitted, deleted=False)

    client.calls.clear()
    again = driver.reconcile_once(ns, "ft")
    assert again is not None and again.status is None and not again.create
    # The run, its Jobs and pods, and the user's dataset ConfigMap; not the plan ConfigMap,
    # work PVC, model-cache PVC or RBAC objects, which only the operator writes.
    assert sorted(client.gets()) == sorted(
        ["llamafinetunes/ft", "jobs", "pods", "configmaps/data"]
    ), client.calls
    assert [m for m, _ in client.calls] == ["GET"] * 4, "an unchanged run writes nothing"

    # Deleted behind the operator's back: a watch event's reconcile still goes by the
    # remembered copy (nothing watches ConfigMaps)...
    kube.delete("v1", "ConfigMap", "ft-plan")
    client.calls.clear()
    event = driver.reconcile_once(ns, "ft")
    assert event is not None and not event.create
    assert "configmaps/ft-plan" not in client.gets()

    # ...the periodic resync (the queue's timer: `fresh`) reads it and recreates it.
    client.calls.clear()
    resync = driver.reconcile_once(ns, "ft", fresh=True)
    assert resync is not None
    assert ("ConfigMap", "ft-plan") in {(o["kind"], o["metadata"]["name"]) for o in resync.create}
    plan = kube.get("v1", "ConfigMap", "ft-plan")
    assert "plan.json" in plan["data"]
    assert {"configmaps/ft-plan", "persistentvolumeclaims/ft-work"} <= set(client.gets())
    # Not the namespace's shared objects, read for all runs at most once per resync: one run's
    # resync must not re-read them for every run.
    shared = {f"{kind.lower()}s/{name}" for kind, name in shared_refs(SETTINGS)}
    assert len(shared) == 4 and not shared & set(client.gets()), client.calls

    # A remembered copy older than KNOWN_RESYNCS resyncs is read again without a resync, for
    # a run whose events keep postponing it (aged here instead of waiting five minutes).
    kube.delete("v1", "ConfigMap", "ft-plan")
    driver.known = {key: (0.0, obj) for key, (_, obj) in driver.known.items()}
    client.calls.clear()
    aged = driver.reconcile_once(ns, "ft")
    assert aged is not None
    assert ("ConfigMap", "ft-plan") in {(o["kind"], o["metadata"]["name"]) for o in aged.create}
    assert "configmaps/ft-plan" in client.gets()
