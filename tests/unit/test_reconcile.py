"""The reconcile state machine, fed observed children in each state (no cluster).

`World` is a tiny fake API server: it applies Actions as the driver would (create-or-get, merge
patch of status, deletes) and lets a test move Jobs along (`succeed`, `fail`, `add_pod`).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llamaft_operator import conditions as c
from llamaft_operator.catalogue import GpuCatalogue, GpuType
from llamaft_operator.observed import Children
from llamaft_operator.reconcile import Actions, reconcile, referenced
from llamaft_operator.settings import Settings
from llamaft_trainer.config import RunPlan

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CATALOGUE = GpuCatalogue(
    [GpuType(name="test-gpu", memory_gib=80, bf16_tflops=300, gpus_per_node=1)],
    default="test-gpu",
)
SETTINGS = Settings(gpu_catalogue=CATALOGUE, default_gpu_type="test-gpu")
DATASET = {"source": {"pvc": {"claimName": "datasets", "path": "train.jsonl"}}}
GOLDEN = {"pvc": {"claimName": "datasets", "path": "golden.jsonl"}}
HUB = {"hub": {"repo": "acme/bot", "tokenSecret": {"name": "hf-write"}}}
STATS = {"rows": 100, "tokens": 50_000, "badRows": 0}


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"name": "builtin:tiny-llama"}, "dataset": DATASET}
    base.update(spec)
    return {
        "apiVersion": "llamaft.io/v1alpha1",
        "kind": "LlamaFineTune",
        "metadata": {"name": "ft", "namespace": "ml", "uid": "ft-uid", "generation": 1},
        "spec": base,
    }


class World:
    """Objects by (kind, name), plus the run; Actions are applied like the driver does."""

    def __init__(self, ft: dict[str, Any], *extra: dict[str, Any]) -> None:
        self.ft = ft
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.counter = 0
        self.clock = NOW
        self.created: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.add(
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "datasets"}}
        )
        for obj in extra:
            self.add(obj)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        self.counter += 1
        obj["metadata"].setdefault("uid", f"uid-{self.counter}")
        obj["metadata"].setdefault("namespace", "ml")
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def children(self) -> Children:
        jobs = tuple(o for (k, _), o in self.objects.items() if k == "Job")
        refs = referenced(self.ft, SETTINGS)
        named = {ref: self.objects[ref] for ref in refs if ref in self.objects}
        return Children(jobs=jobs, pods=tuple(self.pods), named=named)

    def reconcile(self, settings: Settings = SETTINGS) -> Actions:
        self.clock += timedelta(seconds=1)
        actions = reconcile(self.ft, self.children(), settings, now=self.clock)
        for obj in actions.create:
            key = (obj["kind"], obj["metadata"]["name"])
            if key not in self.objects:
                self.add(obj)
                self.created.append(f"{obj['kind']}/{obj['metadata']['name']}")
        for obj in actions.update:
            self.objects[(obj["kind"], obj["metadata"]["name"])].update({"data": obj["data"]})
        for delete in actions.delete:
            self.objects.pop((delete.kind, delete.name), None)
        if actions.status is not None:
            status = {**self.ft.get("status", {}), **actions.status}
            self.ft["status"] = {k: v for k, v in status.items() if v is not None}
        self.events += [(e.type, e.reason) for e in actions.events]
        return actions

    def settle(self, rounds: int = 4) -> Actions:
        """Reconcile until nothing more is created (a few rounds, as the triggers would)."""
        actions = self.reconcile()
        for _ in range(rounds):
            if not actions.create and not actions.update:
                break
            actions = self.reconcile()
        return actions

    def job(self, step: str) -> dict[str, Any] | None:
        return self.objects.get(("Job", f"ft-{step}"))

    def jobs(self) -> list[str]:
        return sorted(n for k, n in self.objects if k == "Job")

    def add_pod(
        self,
        step: str,
        phase: str,
        *,
        exit_code: int | None = None,
        reason: str = "",
        message: str = "",
        disrupted: bool = False,
        index: int = 0,
        owner_uid: str | None = None,
    ) -> dict[str, Any]:
        job = self.job(step)
        self.counter += 1
        pod: dict[str, Any] = {
            "metadata": {
                "name": f"ft-{step}-{self.counter}",
                "uid": f"pod-{self.counter}",
                "labels": {
                    "batch.kubernetes.io/job-name": f"ft-{step}",
                    "llamaft.io/finetune": "ft",
                },
                "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                "ownerReferences": [
                    {"controller": True, "uid": owner_uid or (job or {})["metadata"]["uid"]}
                ],
                "creationTimestamp": "2026-01-02T03:00:00Z",
            },
            "status": {"phase": phase, "conditions": []},
        }
        if exit_code is not None:
            term = {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "message": message,
                "finishedAt": f"2026-01-02T03:0{self.counter % 10}:00Z",
            }
            pod["status"]["containerStatuses"] = [{"name": step, "state": {"terminated": term}}]
        if disrupted:
            pod["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True"})
        self.pods.append(pod)
        return pod

    def succeed(self, step: str, result: dict[str, Any] | str | None = None) -> None:
        message = result if isinstance(result, str) else json.dumps(result or {})
        self.add_pod(step, "Succeeded", exit_code=0, message=message)
        self.set_job_condition(step, "Complete")

    def fail(self, step: str, reason: str, exit_code: int, message: str) -> None:
        self.add_pod(step, "Failed", exit_code=exit_code, message=message)
        self.set_job_condition(step, "Failed", reason)

    def set_job_condition(self, step: str, type_: str, reason: str = "") -> None:
        job = self.job(step)
        assert job is not None, f"no Job for {step}"
        job.setdefault("status", {}).setdefault("conditions", []).append(
            {"type": type_, "status": "True", "reason": reason, "message": f"{reason} happened"}
        )

    def condition(self, type_: str) -> dict[str, Any]:
        found = c.find(self.ft["status"]["conditions"], type_)
        assert found is not None, f"no {type_} condition in {self.ft['status']['conditions']}"
        return found

    @property
    def phase(self) -> str:
        return str(self.ft["status"]["phase"])

    def plan(self) -> RunPlan:
        return RunPlan.from_json(self.objects[("ConfigMap", "ft-plan")]["data"]["plan.json"])


def secret(name: str, key: str = "token") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {key: ""}}


def through_validate(world: World) -> None:
    world.settle()
    world.succeed("validate", STATS)
    world.settle()


# --- the happy path, step by step ---------------------------------------------------------------


def test_first_reconcile_creates_plan_volumes_rbac_and_validate() -> None:
    world = World(body())
    actions = world.reconcile()
    assert world.created == [
        "ConfigMap/ft-plan",
        "PersistentVolumeClaim/ft-work",
        "ServiceAccount/llamaft-trainer",
        "Role/llamaft-trainer",
        "RoleBinding/llamaft-trainer",
        "Job/ft-validate",
    ]
    assert world.phase == "Validating"
    assert world.condition(c.PLANNED)["reason"] == c.INITIAL_PLAN
    assert world.condition(c.DATA_VALIDATED)["status"] == c.UNKNOWN
    assert world.condition(c.MODEL_FETCHED)["reason"] == c.BUILTIN_MODEL
    assert world.condition(c.SUCCEEDED)["status"] == c.FALSE
    assert world.ft["status"]["plan"]["final"] is False
    assert world.ft["status"]["observedGeneration"] == 1
    assert ("Normal", c.JOB_CREATED) in world.events
    assert actions.requeue_after == SETTINGS.resync_seconds


def test_reconcile_is_idempotent() -> None:
    world = World(body())
    world.reconcile()
    again = world.reconcile()
    assert again.create == [] or all(
        (o["kind"], o["metadata"]["name"]) in world.objects for o in again.create
    )
    assert again.status is None, "unchanged status must not be patched"
    assert again.events == []


def test_validate_result_replans_then_starts_training() -> None:
    world = World(body(training={"maxSeqLength": 128}))
    world.settle()
    world.succeed("validate", STATS)
    assert plan_revision_env(world.job("validate")) == "1"
    assert world.objects[("ConfigMap", "ft-plan")]["data"]["revision"] == "1"
    first = world.reconcile()
    assert [o["kind"] for o in first.update] == ["ConfigMap"], "the final plan is written"
    assert first.requeue_after != 1.0, "no fixed pause between the plan and the Job"
    assert world.objects[("ConfigMap", "ft-plan")]["data"]["revision"] == "2"
    # The train Job starts in the same reconcile, for revision 2: its pod waits until the kubelet
    # mounts that revision (llamaft_trainer.plan_file), so it cannot read the initial plan.
    train = world.job("train")
    assert train is not None
    assert plan_revision_env(train) == "2"
    revision_items = [
        i
        for v in train["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "plan"
        for i in v["configMap"]["items"]
        if i["key"] == "revision"
    ]
    assert revision_items == [{"key": "revision", "path": "revision"}]
    assert world.condition(c.DATA_VALIDATED)["status"] == c.TRUE
    assert "100 rows, 50000 tokens" in world.condition(c.DATA_VALIDATED)["message"]
    assert world.condition(c.PLANNED)["reason"] == c.FINAL_PLAN
    assert world.ft["status"]["plan"]["final"] is True
    assert world.ft["status"]["plan"]["datasetTokens"] == 50_000
    assert world.plan().final is True
    assert world.plan().estimate.dataset_tokens == 50_000
    assert world.phase == "Training"
    again = world.reconcile()
    assert again.update == [], "an unchanged plan is not rewritten"
    assert world.objects[("ConfigMap", "ft-plan")]["data"]["revision"] == "2"


def plan_revision_env(job: dict[str, Any] | None) -> str | None:
    assert job is not None
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return next((e["value"] for e in env if e["name"] == "LLAMAFT_PLAN_REVISION"), None)


def test_full_run_to_succeeded() -> None:
    world = World(
        body(
            dataset={**DATASET, "goldenSet": GOLDEN},
            pilot={"enabled": True, "maxSteps": 5},
            evaluation={"gates": [{"metric": "golden.rougeL", "min": 0.3}]},
            publish=HUB,
        ),
        secret("hf-write"),
    )
    order = []
    world.settle()
    for step, result in [
        ("validate", STATS),
        ("pilot", {"loss": 1.0}),
        ("train", {"steps": 10}),
        ("eval", {"metrics": {"golden": {"rougeL": 0.42}, "validation": {"loss": 1.1}}}),
        (
            "publish",
            {"repo": "acme/bot", "revision": "main", "commit": "abc123", "url": "http://hub/c"},
        ),
    ]:
        assert world.job(step) is not None, f"{step} Job not created; jobs: {world.jobs()}"
        order.append(step)
        world.succeed(step, result)
        world.settle()
    assert order == ["validate", "pilot", "train", "eval", "publish"]
    assert world.phase == "Succeeded"
    assert world.condition(c.SUCCEEDED)["status"] == c.TRUE
    assert world.condition(c.FAILED)["status"] == c.FALSE
    assert world.condition(c.GATES_PASSED)["reason"] == c.ALL_GATES_PASSED
    assert world.condition(c.PUBLISHED)["reason"] == c.PUBLISH_SUCCEEDED
    status = world.ft["status"]
    assert status["publish"] == {
        "repo": "acme/bot",
        "revision": "main",
        "commit": "abc123",
        "url": "http://hub/c",
    }
    assert status["results"]["metrics"]["golden.rougeL"] == 0.42
    assert status["results"]["gates"][0]["passed"] is True
    assert status["results"]["headline"] == "rougeL=0.42"
    assert status["completionTime"]
    final = world.reconcile()
    assert final.status is None and final.create == [] and final.requeue_after is None


# --- failures -----------------------------------------------------------------------------------


def test_malformed_dataset_fails_without_a_train_job() -> None:
    world = World(body())
    world.settle()
    world.fail(
        "validate", "PodFailurePolicy", 2, "error: row 7: missing field 'response' (train.jsonl)"
    )
    world.settle()
    assert world.job("train") is None
    validated = world.condition(c.DATA_VALIDATED)
    assert (validated["status"], validated["reason"]) == (c.FALSE, c.INVALID_DATA)
    assert "row 7" in validated["message"]
    assert world.phase == "Failed"
    assert world.condition(c.FAILED)["status"] == c.TRUE
    assert "row 7" in world.condition(c.FAILED)["message"]
    assert ("Warning", c.INVALID_DATA) in world.events


@pytest.mark.parametrize(
    ("step", "job_reason", "exit_code", "condition", "reason"),
    [
        ("train", "BackoffLimitExceeded", 1, c.TRAINED, c.BACKOFF_LIMIT_EXCEEDED),
        ("train", "DeadlineExceeded", 137, c.TRAINED, c.DEADLINE_EXCEEDED),
        ("eval", "BackoffLimitExceeded", 1, c.EVALUATED, c.BACKOFF_LIMIT_EXCEEDED),
        ("publish", "PodFailurePolicy", 3, c.PUBLISHED, c.PUBLISH_REJECTED),
    ],
)
def test_step_failures_fail_the_run(
    step: str, job_reason: str, exit_code: int, condition: str, reason: str
) -> None:
    world = World(body(publish=HUB), secret("hf-write"))
    through_validate(world)
    for earlier in ("train", "eval", "publish"):
        if earlier == step:
            break
        world.succeed(earlier, {"metrics": {"validation": {"loss": 1.0}}})
        world.settle()
    world.fail(step, job_reason, exit_code, "boom")
    world.settle()
    got = world.condition(condition)
    assert (got["status"], got["reason"]) == (c.FALSE, reason)
    assert world.phase == "Failed"
    assert world.condition(c.FAILED)["reason"] == reason


def test_failing_gates_stop_before_publish() -> None:
    world = World(
        body(evaluation={"gates": [{"metric": "validation.loss", "max": 0.5}]}, publish=HUB),
        secret("hf-write"),
    )
    through_validate(world)
    world.succeed("train")
    world.settle()
    # The trainer exits 2 when a gate fails, with the scores as its termination message.
    world.fail("eval", "PodFailurePolicy", 2, json.dumps({"metrics": {"validation.loss": 0.9}}))
    world.settle()
    assert world.job("publish") is None
    assert world.condition(c.EVALUATED)["status"] == c.TRUE
    gates = world.condition(c.GATES_PASSED)
    assert (gates["status"], gates["reason"]) == (c.FALSE, c.GATES_FAILED)
    assert "validation.loss=0.9" in gates["message"]
    assert world.ft["status"]["results"]["gates"][0]["passed"] is False
    assert world.phase == "Failed"


def test_unreadable_validate_result_fails_clearly() -> None:
    world = World(body())
    world.settle()
    world.succeed("validate", "not json")
    world.settle()
    assert world.condition(c.DATA_VALIDATED)["reason"] == c.RESULT_UNREADABLE
    assert world.phase == "Failed"


def test_plan_error_fails_before_creating_anything() -> None:
    world = World(body(model={"name": "acme/mystery-model"}))
    world.reconcile()
    assert world.created == []
    planned = world.condition(c.PLANNED)
    assert (planned["status"], planned["reason"]) == (c.FALSE, c.PLAN_FAILED)
    assert "spec.model.parameters" in planned["message"]
    assert world.phase == "Failed"


def test_local_sources_are_rejected_in_a_cluster() -> None:
    world = World(body(dataset={"source": {"local": {"path": "train.jsonl"}}}))
    world.reconcile()
    assert world.condition(c.PLANNED)["reason"] == c.INVALID_SPEC
    assert world.created == []


# --- attempts -----------------------------------------------------------------------------------


def test_failed_pods_are_counted_as_attempts_with_reasons() -> None:
    world = World(body())
    through_validate(world)
    world.add_pod("train", "Failed", exit_code=137, reason="OOMKilled")
    world.add_pod("train", "Failed", exit_code=143, disrupted=True)
    world.add_pod("train", "Failed", exit_code=75)
    world.add_pod("train", "Running")
    world.reconcile()
    reasons = [a["reason"] for a in world.ft["status"]["attempts"]]
    assert sorted(reasons) == ["Disrupted", "OOMKilled", "Preempted"]
    assert all(a["step"] == "train" for a in world.ft["status"]["attempts"])
    assert world.condition(c.TRAINED)["reason"] == c.RUNNING
    again = world.reconcile()
    assert again.status is None, "attempts are not recorded twice"


# --- missing inputs -------------------------------------------------------------------------------


def test_missing_dataset_pvc_waits_with_a_condition() -> None:
    world = World(body(dataset={"source": {"pvc": {"claimName": "absent", "path": "x"}}}))
    actions = world.reconcile()
    assert world.job("validate") is None
    got = world.condition(c.DATA_VALIDATED)
    assert (got["status"], got["reason"]) == (c.FALSE, c.PVC_MISSING)
    assert "absent" in got["message"]
    assert actions.requeue_after == SETTINGS.missing_retry_seconds
    assert world.phase == "Pending"
    assert ("Warning", c.PVC_MISSING) in world.events


def test_missing_publish_secret_waits_then_publishes_when_created() -> None:
    world = World(body(publish=HUB))
    through_validate(world)
    world.succeed("train")
    world.settle()
    world.succeed("eval", {"metrics": {}})
    actions = world.settle()
    assert world.job("publish") is None
    got = world.condition(c.PUBLISHED)
    assert (got["status"], got["reason"]) == (c.FALSE, c.SECRET_MISSING)
    assert "hf-write" in got["message"]
    assert actions.requeue_after == SETTINGS.missing_retry_seconds
    assert world.phase == "Publishing"
    world.add(secret("hf-write", "other-key"))
    world.reconcile()
    assert "has no key token" in world.condition(c.PUBLISHED)["message"]
    world.add(secret("hf-write"))
    world.reconcile()
    assert world.job("publish") is not None


def test_steps_that_read_data_wait_for_the_dataset_token_secret() -> None:
    world = World(body(dataset={**DATASET, "tokenSecret": {"name": "hf-data"}}))
    world.reconcile()
    assert world.job("validate") is None
    got = world.condition(c.DATA_VALIDATED)
    assert got["reason"] == c.SECRET_MISSING
    assert "hf-data" in got["message"] and "spec.dataset.tokenSecret" in got["message"]
    world.add(secret("hf-data"))
    world.reconcile()
    assert world.job("validate") is not None


def test_train_waits_for_the_wandb_key_secret() -> None:
    tracking = {"wandb": {"project": "p", "apiKeySecret": {"name": "wandb", "key": "apiKey"}}}
    world = World(body(tracking=tracking))
    through_validate(world)
    assert world.job("train") is None
    got = world.condition(c.TRAINED)
    assert got["reason"] == c.SECRET_MISSING
    assert "spec.tracking.wandb.apiKeySecret" in got["message"]
    world.add(secret("wandb", "apiKey"))
    world.reconcile()
    assert world.job("train") is not None


def test_fetch_runs_beside_validate_and_waits_for_its_secret() -> None:
    model = {"name": "meta-llama/Llama-3.2-1B-Instruct", "tokenSecret": {"name": "hf-read"}}
    world = World(body(model=model))
    world.reconcile()
    assert world.job("validate") is not None
    assert world.job("fetch") is None
    assert world.condition(c.MODEL_FETCHED)["reason"] == c.SECRET_MISSING
    assert "PersistentVolumeClaim/llamaft-model-cache" in world.created
    world.add(secret("hf-read"))
    world.reconcile()
    assert world.job("fetch") is not None
    world.succeed("validate", STATS)
    world.settle()
    assert world.job("train") is None, "training waits for the model"
    world.succeed("fetch", {"complete": True})
    world.settle()
    assert world.job("train") is not None


# --- lifecycle ------------------------------------------------------------------------------------


def test_suspend_deletes_the_running_job_and_resume_recreates_it() -> None:
    world = World(body())
    through_validate(world)
    train_uid = world.job("train")["metadata"]["uid"]  # type: ignore[index]
    world.ft["spec"]["suspend"] = True
    world.ft["metadata"]["generation"] = 2
    actions = world.reconcile()
    assert [(d.kind, d.name, d.propagation) for d in actions.delete] == [
        ("Job", "ft-train", "Background")
    ]
    assert world.phase == "Suspended"
    assert world.condition(c.TRAINED)["reason"] == c.SUSPENDED
    assert world.condition(c.SUCCEEDED)["reason"] == c.SUSPENDED
    assert ("PersistentVolumeClaim", "ft-work") in world.objects, "the volume stays"
    # The old pod is still stopping: nothing is created while suspended or until it is gone.
    world.add_pod("train", "Running", owner_uid=train_uid)
    world.reconcile()
    assert world.job("train") is None
    world.ft["spec"]["suspend"] = False
    world.ft["metadata"]["generation"] = 3
    world.reconcile()
    assert world.job("train") is None
    assert "previous ft-train" in world.condition(c.TRAINED)["message"]
    world.pods[-1]["status"]["phase"] = "Failed"
    world.reconcile()
    assert world.job("train") is not None
    assert world.phase == "Training"


def test_suspend_before_a_step_holds_it() -> None:
    world = World(body(suspend=True))
    world.reconcile()
    assert world.job("validate") is None
    assert world.phase == "Suspended"
    assert ("ConfigMap", "ft-plan") in world.objects


def test_publish_settings_change_reruns_only_publish() -> None:
    world = World(body(publish=HUB), secret("hf-write"), secret("other"))
    through_validate(world)
    for step in ("train", "eval"):
        world.succeed(step, {"metrics": {}})
        world.settle()
    world.succeed("publish", {"repo": "acme/bot", "commit": "c1"})
    world.settle()
    assert world.phase == "Succeeded"
    train_uid = world.job("train")["metadata"]["uid"]  # type: ignore[index]
    world.ft["spec"]["publish"] = {"hub": {"repo": "acme/bot2", "tokenSecret": {"name": "other"}}}
    world.ft["metadata"]["generation"] = 2
    actions = world.reconcile()
    assert [(d.kind, d.name) for d in actions.delete] == [("Job", "ft-publish")]
    assert [o["kind"] for o in actions.update] == ["ConfigMap"]
    assert world.plan().publish is not None and world.plan().publish.hub is not None
    assert world.plan().publish.hub.repo == "acme/bot2"
    assert world.condition(c.PUBLISHED)["reason"] == c.PUBLISH_SETTINGS_CHANGED
    assert world.phase == "Publishing"
    assert "completionTime" not in world.ft["status"]
    world.settle()
    job = world.job("publish")
    assert job is not None
    assert job["spec"]["template"]["spec"]["volumes"][-1]["secret"]["secretName"] == "other"
    # The re-run publish reads the rewritten plan: its pod waits for that revision.
    assert world.objects[("ConfigMap", "ft-plan")]["data"]["revision"] == "3"
    assert plan_revision_env(job) == "3"
    assert world.job("train")["metadata"]["uid"] == train_uid  # type: ignore[index]
    assert plan_revision_env(world.job("train")) == "2"
    world.succeed("publish", {"repo": "acme/bot2", "commit": "c2"})
    world.settle()
    assert world.phase == "Succeeded"
    assert world.ft["status"]["publish"]["repo"] == "acme/bot2"


def test_the_plan_is_frozen_once_training_started() -> None:
    world = World(body())
    through_validate(world)
    before = world.objects[("ConfigMap", "ft-plan")]["data"]
    world.ft["spec"]["resources"] = {"maxGpus": 1, "gpuType": "test-gpu", "maxNodes": 1}
    world.ft["metadata"]["generation"] = 2
    actions = world.reconcile()
    assert actions.update == []
    assert world.objects[("ConfigMap", "ft-plan")]["data"] == before


def test_dry_run_only_plans() -> None:
    world = World(body(dryRun=True))
    actions = world.reconcile()
    assert actions.create == []
    assert world.phase == "Planned"
    planned = world.condition(c.PLANNED)
    assert (planned["status"], planned["reason"]) == (c.TRUE, c.DRY_RUN)
    assert world.ft["status"]["plan"]["totalGpus"] == 1
    world.ft["spec"]["dryRun"] = False
    world.reconcile()
    assert world.job("validate") is not None


def test_kueue_jobs_are_created_suspended_and_reported_queued() -> None:
    world = World(body(queueName="team-a"))
    world.reconcile()
    job = world.job("validate")
    assert job is not None and job["spec"]["suspend"] is True
    assert world.condition(c.DATA_VALIDATED)["reason"] == c.QUEUED
    assert "team-a" in world.condition(c.DATA_VALIDATED)["message"]
    assert world.reconcile().status is None, "the created Job reads as queued: nothing to patch"
    job["spec"]["suspend"] = False  # Kueue admits it
    world.reconcile()
    assert world.condition(c.DATA_VALIDATED)["reason"] == c.RUNNING


@pytest.mark.parametrize("spec", [{}, {"queueName": "team-a"}], ids=["direct", "kueue"])
def test_reconciling_the_creation_of_a_job_changes_nothing(spec: dict[str, Any]) -> None:
    """The driver does not reconcile the watch event of a Job it created
    (`handlers.Driver.jobs_seen`); that is right only if such a reconcile would do nothing, at
    every step of a full run."""
    world = World(
        body(
            dataset={**DATASET, "goldenSet": GOLDEN},
            pilot={"enabled": True, "maxSteps": 5},
            publish=HUB,
            **spec,
        ),
        secret("hf-write"),
    )
    results = {
        "validate": STATS,
        "pilot": {"loss": 1.0},
        "train": {"steps": 10},
        "eval": {"metrics": {"golden": {"rougeL": 0.42}}},
        "publish": {"repo": "acme/bot", "revision": "main", "commit": "c", "url": "http://h/c"},
    }
    created_steps = []
    actions = world.reconcile()
    while world.phase != "Succeeded":
        new_jobs = [o["metadata"]["name"] for o in actions.create if o["kind"] == "Job"]
        assert new_jobs, f"stuck in {world.phase} with jobs {world.jobs()}"
        assert ("Normal", c.JOB_CREATED) in [(e.type, e.reason) for e in actions.events]
        echo = world.reconcile()  # what the creation's watch event would have triggered
        assert echo.status is None, f"after creating {new_jobs}: {echo.status}"
        assert echo.create == [] and echo.update == [] and echo.events == []
        for job in new_jobs:
            step = job.removeprefix("ft-")
            created_steps.append(step)
            if spec:
                world.objects[("Job", job)]["spec"]["suspend"] = False  # Kueue admits it
            world.succeed(step, results[step])
        actions = world.reconcile()
    assert created_steps == ["validate", "pilot", "train", "eval", "publish"]


def test_children_of_a_previous_run_with_the_same_name_block_creation() -> None:
    old_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ft-plan", "ownerReferences": [{"controller": True, "uid": "old"}]},
        "data": {},
    }
    world = World(body(), old_cm)
    actions = world.reconcile()
    assert world.created == []
    assert world.condition(c.SUCCEEDED)["reason"] == c.NAME_TAKEN
    assert actions.requeue_after == SETTINGS.missing_retry_seconds


def test_a_job_of_the_same_name_owned_by_someone_else_is_not_used() -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "ft-validate", "ownerReferences": [{"controller": True, "uid": "x"}]},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    world = World(body(), foreign)
    world.reconcile()
    assert world.condition(c.DATA_VALIDATED)["status"] == c.UNKNOWN
    assert "belongs to another object" in world.condition(c.DATA_VALIDATED)["message"]


def test_multi_node_plan_creates_the_rendezvous_service_and_an_indexed_job() -> None:
    catalogue = GpuCatalogue(
        [GpuType(name="tiny", memory_gib=80, bf16_tflops=300, gpus_per_node=1)], default="tiny"
    )
    settings = Settings(gpu_catalogue=catalogue, default_gpu_type="tiny")
    world = World(body(model={"name": "meta-llama/Llama-3.1-8B-Instruct"}, method="full"))
    world.reconcile(settings)
    world.succeed("validate", STATS)
    world.succeed("fetch")
    world.reconcile(settings)
    world.reconcile(settings)
    assert world.plan().resources.nodes > 1
    assert ("Service", "ft-train") in world.objects
    job = world.job("train")
    assert job is not None and job["spec"]["completionMode"] == "Indexed"


# --- notification -----------------------------------------------------------------------------


def test_webhook_is_notified_once_per_terminal_state() -> None:
    world = World(
        body(notification={"webhookSecret": {"name": "hook", "key": "url"}}), secret("hook", "url")
    )
    world.settle()
    world.fail("validate", "PodFailurePolicy", 2, "row 1 is bad")
    assert world.reconcile().notify is not None
    assert world.condition(c.NOTIFIED)["status"] == c.TRUE
    assert world.condition(c.NOTIFIED)["message"].startswith("Failed at ")
    assert world.reconcile().notify is None
    assert world.reconcile().notify is None


def test_webhook_payload_and_retry_after_failure() -> None:
    world = World(
        body(notification={"webhookSecret": {"name": "hook", "key": "url"}}), secret("hook", "url")
    )
    world.settle()
    world.fail("validate", "PodFailurePolicy", 2, "row 1 is bad")
    actions = reconcile(world.ft, world.children(), SETTINGS, now=NOW)
    assert actions.notify is not None
    assert actions.notify.secret == "hook" and actions.notify.key == "url"
    payload = actions.notify.payload
    assert payload["phase"] == "Failed"
    assert payload["reason"] == c.INVALID_DATA
    assert "row 1" in payload["message"]
    dropped = actions.without_notification()
    assert dropped.notify is None
    assert dropped.status is not None
    assert c.find(dropped.status["conditions"], c.NOTIFIED) is None


def test_missing_webhook_secret_is_reported_and_retried() -> None:
    world = World(body(notification={"webhookSecret": {"name": "hook"}}))
    world.settle()
    world.fail("validate", "PodFailurePolicy", 2, "bad")
    actions = world.settle()
    assert actions.notify is None
    assert world.condition(c.NOTIFIED)["reason"] == c.SECRET_MISSING
    assert actions.requeue_after == SETTINGS.missing_retry_seconds


# --- status shape ---------------------------------------------------------------------------------


def test_conditions_carry_generation_and_keep_transition_times() -> None:
    world = World(body())
    world.reconcile()
    first = dict(world.condition(c.PLANNED))
    world.ft["metadata"]["generation"] = 5
    world.reconcile()
    planned = world.condition(c.PLANNED)
    assert planned["observedGeneration"] == 5
    assert planned["lastTransitionTime"] == first["lastTransitionTime"]
    assert world.ft["status"]["observedGeneration"] == 5


def test_status_never_touches_progress() -> None:
    world = World(body())
    world.ft["status"] = {"progress": {"step": 3}}
    actions = world.reconcile()
    assert actions.status is not None and "progress" not in actions.status


def test_price_setting_adds_a_cost_estimate() -> None:
    settings = Settings(
        gpu_catalogue=CATALOGUE, default_gpu_type="test-gpu", price_per_gpu_hour=2.0
    )
    world = World(
        body(
            model={"name": "meta-llama/Llama-3.1-8B-Instruct"},
            dataset={**DATASET, "approxTokens": 10**8},
        )
    )
    world.reconcile(settings)
    plan = world.ft["status"]["plan"]
    assert plan["estimatedGpuHours"] > 0
    assert plan["estimatedCostUsd"] == round(plan["estimatedGpuHours"] * 2.0, 2)
    assert plan["estimatedDuration"]
