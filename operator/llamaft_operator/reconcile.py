"""The one level-triggered reconcile: (observed run, observed children, settings) -> Actions.

Every trigger (created, changed, resumed after a restart, a child Job changed, a periodic resync)
calls the same pure function. It reads the world as it is, never what happened, so it can run
any number of times, be killed half-way through, and resume on another replica:

1. parse the spec; plan twice: the initial plan from the spec (and `approxTokens`), the final
   plan from the token count the validate step measured (kept in `status.plan`). Once a GPU Job
   exists the plan in `<name>-plan` is frozen (only `publish` follows the spec);
2. desired shared children: the plan ConfigMap, the work PVC, the model cache PVC, the trainer's
   RBAC, the rendezvous Service of a multi-node run;
3. walk the steps validate, fetch | pilot | train | eval | publish: a step's Job is created when
   the steps it depends on succeeded and what it mounts exists; a succeeded Job's termination
   message becomes status; a failed one fails the run;
4. suspend deletes the running Job (the volume stays; the retried step resumes from its
   checkpoint); a publish-settings change deletes and re-runs only the publish Job;
5. status: conditions, phase, plan summary, results, publish, attempts; Events for every
   condition that changed; the completion webhook once per terminal state.

Child names are deterministic, so the driver's create-or-get never makes a second Job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from llamaft_operator import conditions as c
from llamaft_operator.api import LlamaFineTune, LlamaFineTuneSpec, PublishStatus
from llamaft_operator.builders.common import (
    ANNOTATION_PUBLISH_HASH,
    EVAL,
    FETCH,
    GPU_STEPS,
    INITIAL_PLAN_FILE,
    PILOT,
    PLAN_FILE,
    PLAN_SUFFIX,
    PUBLISH,
    RENDEZVOUS_SUFFIX,
    TRAIN,
    VALIDATE,
    WORK_SUFFIX,
    Owner,
    Run,
    child_name,
    publish_hash,
)
from llamaft_operator.builders.configmap import (
    build_plan_config_map,
    plan_revision,
    plans_differ,
)
from llamaft_operator.builders.jobs import build_job, uses_model_cache
from llamaft_operator.builders.pvc import build_model_cache_pvc, build_work_pvc
from llamaft_operator.builders.rbac import (
    build_trainer_role,
    build_trainer_role_binding,
    build_trainer_service_account,
)
from llamaft_operator.builders.service import build_rendezvous_service
from llamaft_operator.observed import (
    Children,
    JobState,
    controller_uid,
    failed_attempts,
    job_state,
)
from llamaft_operator.planner import PlanError, make_plan
from llamaft_operator.settings import Settings
from llamaft_operator.status import (
    DatasetStats,
    describe_gates,
    describe_plan,
    parse_results,
    parse_stats,
    plan_summary,
)
from llamaft_trainer.config import RunPlan

STEP_CONDITION = {
    VALIDATE: c.DATA_VALIDATED,
    FETCH: c.MODEL_FETCHED,
    PILOT: c.PILOT_PASSED,
    TRAIN: c.TRAINED,
    EVAL: c.EVALUATED,
    PUBLISH: c.PUBLISHED,
}
STEP_PHASE = {
    VALIDATE: "Validating",
    FETCH: "Validating",
    PILOT: "Piloting",
    TRAIN: "Training",
    EVAL: "Evaluating",
    PUBLISH: "Publishing",
}
STEP_SUCCESS = {
    VALIDATE: c.DATA_VALID,
    FETCH: c.MODEL_CACHED,
    PILOT: c.PILOT_SUCCEEDED,
    TRAIN: c.TRAINING_SUCCEEDED,
    EVAL: c.EVALUATION_SUCCEEDED,
    PUBLISH: c.PUBLISH_SUCCEEDED,
}
DEPENDS = {
    VALIDATE: (),
    FETCH: (),
    PILOT: (VALIDATE, FETCH),
    TRAIN: (VALIDATE, FETCH, PILOT),
    EVAL: (TRAIN,),
    PUBLISH: (EVAL,),
}
# Status fields the operator owns; `progress` is the trainer's and never written here.
OWNED_STATUS_FIELDS = (
    "phase",
    "observedGeneration",
    "conditions",
    "plan",
    "attempts",
    "results",
    "publish",
    "startTime",
    "completionTime",
)
MAX_ATTEMPTS = 64
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Delete:
    kind: str
    name: str
    propagation: str = "Background"


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Notification:
    """POST `payload` to the URL in Secret `secret`/`key`."""

    secret: str
    key: str
    payload: dict[str, Any]


@dataclass
class Actions:
    """What the driver applies, in this order: create, update, delete, notify, status, events."""

    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    notify: Notification | None = None
    requeue_after: float | None = None
    phase: str = "Pending"

    def requeue(self, seconds: float) -> None:
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds

    def without_notification(self) -> Actions:
        """The same actions with the Notified condition dropped (the webhook POST failed)."""
        if self.status is None:
            return self
        status = dict(self.status)
        status["conditions"] = c.remove(list(status.get("conditions") or []), c.NOTIFIED)
        return replace(self, status=status, notify=None)


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what to observe ---------------------------------------------------------------------------


def referenced(body: Mapping[str, Any], settings: Settings) -> list[tuple[str, str]]:
    """The (kind, name) objects the driver must look up for this run (besides Jobs and pods)."""
    name = body["metadata"]["name"]
    spec = body.get("spec") or {}
    refs: list[tuple[str, str]] = [
        ("ConfigMap", child_name(name, PLAN_SUFFIX)),
        ("PersistentVolumeClaim", spec.get("workVolumeClaim") or child_name(name, WORK_SUFFIX)),
        ("PersistentVolumeClaim", settings.model_cache_claim),
        ("Service", child_name(name, RENDEZVOUS_SUFFIX)),
    ]
    if settings.manage_trainer_rbac:
        sa = settings.trainer_service_account
        refs += [("ServiceAccount", sa), ("Role", sa), ("RoleBinding", sa)]
    dataset = spec.get("dataset") or {}
    for source in (dataset.get("source"), dataset.get("goldenSet")):
        source = source or {}
        if "pvc" in source:
            refs.append(("PersistentVolumeClaim", source["pvc"]["claimName"]))
        if "configMap" in source:
            refs.append(("ConfigMap", source["configMap"]["name"]))
    secrets = [
        (spec.get("model") or {}).get("tokenSecret"),
        dataset.get("tokenSecret"),
        ((spec.get("publish") or {}).get("hub") or {}).get("tokenSecret"),
        (spec.get("notification") or {}).get("webhookSecret"),
        ((spec.get("tracking") or {}).get("wandb") or {}).get("apiKeySecret"),
    ]
    refs += [("Secret", s["name"]) for s in secrets if s]
    claim = ((spec.get("publish") or {}).get("dir") or {}).get("claimName")
    if claim:
        refs.append(("PersistentVolumeClaim", claim))
    return list(dict.fromkeys(refs))


def shared_refs(settings: Settings) -> frozenset[tuple[str, str]]:
    """Objects every run of a namespace refers to and none owns: the model cache PVC and the
    trainer's ServiceAccount, Role and RoleBinding. The reconcile only asks whether they exist,
    so the driver may reuse a recent read instead of fetching them for every run."""
    sa = settings.trainer_service_account
    refs = {("PersistentVolumeClaim", settings.model_cache_claim)}
    if settings.manage_trainer_rbac:
        refs |= {("ServiceAccount", sa), ("Role", sa), ("RoleBinding", sa)}
    return frozenset(refs)


def owned_refs(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The `referenced` objects named after the run, which it creates and owns when it needs
    them: plan ConfigMap, rendezvous Service and work PVC (unless the spec names one). Only the
    operator writes them; absent, the reconcile creates them or does not need them."""
    name = body["metadata"]["name"]
    refs = [
        ("ConfigMap", child_name(name, PLAN_SUFFIX)),
        ("Service", child_name(name, RENDEZVOUS_SUFFIX)),
    ]
    if not (body.get("spec") or {}).get("workVolumeClaim"):
        refs.append(("PersistentVolumeClaim", child_name(name, WORK_SUFFIX)))
    return tuple(refs)


def run_fingerprint(body: Mapping[str, Any]) -> bytes:
    """A digest of what the reconcile reads of a run: its identity, generation, deletion,
    labels, annotations, spec and the status fields the operator owns. Two bodies with the same
    fingerprint reconcile the same, so a watch event that changes neither (the trainer's
    `status.progress` patches, the echo of our own status patch) need not trigger one."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    read = [
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        meta.get("labels"),
        meta.get("annotations"),
        body.get("spec"),
        {k: status.get(k) for k in OWNED_STATUS_FIELDS},
    ]
    text = json.dumps(read, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def plans_only(body: Mapping[str, Any], jobs: Sequence[Any], pods: Sequence[Any]) -> bool:
    """A dry run that never started a step: the reconcile plans and reads none of the
    `referenced` objects, so the driver need not fetch them."""
    return bool((body.get("spec") or {}).get("dryRun")) and not jobs and not pods


# --- the reconcile -------------------------------------------------------------------------------


def reconcile(
    body: Mapping[str, Any],
    children: Children,
    settings: Settings,
    now: datetime | None = None,
) -> Actions:
    """Compute what to create, update and delete, and the new status, for one run."""
    return _Reconcile(body, children, settings, timestamp(now or datetime.now(UTC))).run()


class _Reconcile:
    def __init__(
        self, body: Mapping[str, Any], children: Children, settings: Settings, now: str
    ) -> None:
        meta = body["metadata"]
        self.body = body
        self.children = children
        self.settings = settings
        self.now = now
        self.owner = Owner(meta["name"], meta.get("namespace") or "default", meta.get("uid", ""))
        self.generation: int | None = meta.get("generation")
        self.old: dict[str, Any] = dict(body.get("status") or {})
        self.conditions: list[dict[str, Any]] = list(self.old.get("conditions") or [])
        self.status: dict[str, Any] = {k: self.old[k] for k in OWNED_STATUS_FIELDS if k in self.old}
        self.actions = Actions()
        self.job_created: dict[str, Event] = {}
        """Condition -> the JobCreated Event that announces its change instead of the condition."""

    # --- helpers ---------------------------------------------------------------------------------
    def set(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = c.set_condition(
            self.conditions,
            type_,
            status,
            reason,
            message,
            generation=self.generation,
            now=self.now,
        )

    def set_active(self, type_: str, job_name: str, kueue: str | None) -> None:
        """A step whose Job exists and has not finished: waiting in Kueue queue `kueue` (the
        Job is suspended until admitted), or running."""
        if kueue is not None:
            message = f"Job {job_name} waits for Kueue queue {kueue} to admit it"
            self.set(type_, c.UNKNOWN, c.QUEUED, message)
        else:
            self.set(type_, c.UNKNOWN, c.RUNNING, f"Job {job_name} is running")

    def was_true(self, type_: str) -> bool:
        return c.is_true(list(self.old.get("conditions") or []), type_)

    def fail_early(self, reason: str, message: str, condition: str = c.PLANNED) -> Actions:
        self.set(condition, c.FALSE, reason, message)
        return self.finish(failed=(reason, message), phase="Failed")

    # --- main ----------------------------------------------------------------------------------
    def run(self) -> Actions:
        spec = self.parse_spec()
        if isinstance(spec, str):
            return self.fail_early(c.INVALID_SPEC, spec)
        ft = spec
        steps_started = any(
            job_state(self.children, child_name(self.owner.name, s), self.owner.uid, s).phase
            not in ("absent",)
            for s in (VALIDATE, FETCH, *GPU_STEPS, PUBLISH)
        )
        plans = self.plan(ft)
        if isinstance(plans, str):
            return self.fail_early(c.PLAN_FAILED, plans)
        initial, current = plans
        revision, plan_changed = self.plan_revision(initial, current)
        run = Run(self.owner, ft.spec, current, self.settings, plan_revision=revision)
        self.status["plan"] = plan_summary(current, self.settings)
        reason = c.FINAL_PLAN if current.final else c.INITIAL_PLAN
        if ft.spec.dry_run and not steps_started:
            self.set(c.PLANNED, c.TRUE, c.DRY_RUN, "dry run: " + describe_plan(current))
            return self.finish(failed=None, phase="Planned")
        self.set(c.PLANNED, c.TRUE, reason, describe_plan(current))

        foreign = self.foreign_children()
        if foreign:
            message = (
                f"{foreign} exists but is not owned by this LlamaFineTune (a previous run of "
                "the same name may still be deleting); waiting"
            )
            self.set(c.SUCCEEDED, c.FALSE, c.NAME_TAKEN, message)
            self.actions.requeue(self.settings.missing_retry_seconds)
            return self.finish(failed=None, phase="Pending", summary=False)

        terminal_before = self.old.get("phase") in ("Succeeded", "Failed")
        self.ensure_shared(run, initial, plan_changed, terminal_before)
        return self.walk_steps(run)

    def parse_spec(self) -> LlamaFineTune | str:
        doc = {
            "apiVersion": self.body.get("apiVersion", "llamaft.io/v1alpha1"),
            "kind": self.body.get("kind", "LlamaFineTune"),
            "metadata": {"name": self.owner.name, "namespace": self.owner.namespace},
            "spec": self.body.get("spec") or {},
        }
        try:
            ft = LlamaFineTune.model_validate(doc)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return f"{where}: {first['msg'].removeprefix('Value error, ')}"[:MAX_MESSAGE]
        sources = [ft.spec.dataset.source, ft.spec.dataset.golden_set]
        if any(s is not None and s.local is not None for s in sources):
            return (
                "spec.dataset: a `local` source works only with `llamaft run`; in a cluster use "
                "pvc, url, hub or configMap"
            )
        return ft

    def plan(self, ft: LlamaFineTune) -> tuple[RunPlan, RunPlan] | str:
        frozen = self.frozen_plans(ft.spec)
        if frozen is not None:
            return frozen
        stats = self.dataset_stats()
        try:
            initial = make_plan(ft, catalogue=self.settings.gpu_catalogue, run_id=self.owner.uid)
            if stats is None:
                return initial, initial
            final = make_plan(
                ft,
                catalogue=self.settings.gpu_catalogue,
                dataset_tokens=stats.tokens,
                run_id=self.owner.uid,
                final=True,
            )
        except PlanError as err:
            return str(err)[:MAX_MESSAGE]
        return initial, final

    def frozen_plans(self, spec: LlamaFineTuneSpec) -> tuple[RunPlan, RunPlan] | None:
        """Once a GPU step started, its plan stays; only the publish settings follow the spec."""
        started = self.was_true(c.TRAINED) or any(
            job_state(self.children, child_name(self.owner.name, s), self.owner.uid, s).phase
            in ("queued", "running", "succeeded", "failed")
            for s in GPU_STEPS
        )
        cm = self.children.get("ConfigMap", child_name(self.owner.name, PLAN_SUFFIX))
        if not started or cm is None or controller_uid(cm) != self.owner.uid:
            return None
        data = cm.get("data") or {}
        try:
            current = RunPlan.from_json(data[PLAN_FILE])
            initial = RunPlan.from_json(data.get(INITIAL_PLAN_FILE, data[PLAN_FILE]))
        except (KeyError, ValueError):
            return None
        if not current.final:
            return None
        return initial, current.model_copy(update={"publish": spec.publish})

    def dataset_stats(self) -> DatasetStats | None:
        state = self.step_state(VALIDATE)
        if state.phase == "succeeded":
            stats = parse_stats(state.result())
            if stats is not None:
                return stats
        plan = self.old.get("plan") or {}
        if self.was_true(c.DATA_VALIDATED) and plan.get("final") and plan.get("datasetTokens"):
            return DatasetStats(None, int(plan["datasetTokens"]), None)
        return None

    def step_state(self, step: str) -> JobState:
        return job_state(self.children, child_name(self.owner.name, step), self.owner.uid, step)

    def foreign_children(self) -> str | None:
        for kind, name in owned_refs(self.body):
            obj = self.children.get(kind, name)
            if obj is not None and controller_uid(obj) != self.owner.uid:
                return f"{kind} {name}"
        return None

    # --- shared children -----------------------------------------------------------------------
    def plan_revision(self, initial: RunPlan, current: RunPlan) -> tuple[int, bool]:
        """The plan ConfigMap's revision once it holds these plans, and whether they changed.

        A Job created in the same reconcile as the rewrite carries the new revision; its pod waits
        until the kubelet mounts it (no delay needed here, no stale plan possible there).
        """
        cm = self.children.get("ConfigMap", child_name(self.owner.name, PLAN_SUFFIX))
        if cm is None:
            return 1, False
        data = cm.get("data") or {}
        if plans_differ(data, initial, current):
            return plan_revision(data) + 1, True
        return plan_revision(data), False

    def ensure_shared(self, run: Run, initial: RunPlan, plan_changed: bool, terminal: bool) -> None:
        """Create the plan ConfigMap (or rewrite it when the plan changed), volumes, RBAC."""
        create = self.actions.create
        name, ns, settings = self.owner.name, self.owner.namespace, self.settings
        cm = self.children.get("ConfigMap", child_name(name, PLAN_SUFFIX))
        desired_cm = build_plan_config_map(self.owner, initial, run.plan, run.plan_revision)
        if cm is None:
            if not terminal:
                create.append(desired_cm)
        elif plan_changed:
            self.actions.update.append(desired_cm)
        if terminal:
            return
        if not run.spec.work_volume_claim and (
            self.children.get("PersistentVolumeClaim", child_name(name, WORK_SUFFIX)) is None
        ):
            create.append(build_work_pvc(run))
        if uses_model_cache(run) and (
            self.children.get("PersistentVolumeClaim", settings.model_cache_claim) is None
        ):
            create.append(build_model_cache_pvc(ns, settings))
        if settings.manage_trainer_rbac:
            sa = settings.trainer_service_account
            for kind, builder in (
                ("ServiceAccount", build_trainer_service_account),
                ("Role", build_trainer_role),
                ("RoleBinding", build_trainer_role_binding),
            ):
                if self.children.get(kind, sa) is None:
                    create.append(builder(ns, settings))
        if run.plan.final and run.plan.resources.nodes > 1:
            service = child_name(name, RENDEZVOUS_SUFFIX)
            if self.children.get("Service", service) is None:
                create.append(build_rendezvous_service(run))

    # --- steps -----------------------------------------------------------------------------------
    def steps(self, run: Run) -> list[str]:
        steps = [VALIDATE]
        if uses_model_cache(run):
            steps.append(FETCH)
        if run.spec.pilot is not None and run.spec.pilot.enabled:
            steps.append(PILOT)
        steps += [TRAIN, EVAL]
        if run.spec.publish is not None:
            steps.append(PUBLISH)
        return steps

    def walk_steps(self, run: Run) -> Actions:
        spec = run.spec
        steps = self.steps(run)
        done: dict[str, bool] = {}
        failed: tuple[str, str] | None = None
        active: list[str] = []
        waiting: list[str] = []
        if not uses_model_cache(run):
            self.set(c.MODEL_FETCHED, c.TRUE, c.BUILTIN_MODEL, "built-in model: nothing to fetch")
        for step in steps:
            condition = STEP_CONDITION[step]
            state = self.step_state(step)
            deps_done = all(done.get(d, True) for d in DEPENDS[step])
            done[step] = False
            if step == PUBLISH and state.phase != "blocked" and self.publish_changed(state, spec):
                self.actions.delete.append(Delete("Job", state.name))
                self.set(
                    condition,
                    c.UNKNOWN,
                    c.PUBLISH_SETTINGS_CHANGED,
                    f"spec.publish changed: deleting Job {state.name} to publish again",
                )
                self.actions.requeue(self.settings.missing_retry_seconds)
                active.append(step)
                continue
            if state.phase == "succeeded":
                outcome = self.on_success(run, step, state)
                if outcome is None:
                    done[step] = True
                else:
                    failed = failed or outcome
                continue
            if state.phase == "failed":
                failed = failed or self.on_failure(spec, step, state)
                continue
            if state.phase in ("running", "queued"):
                if spec.suspend:
                    self.actions.delete.append(Delete("Job", state.name))
                    self.set(
                        condition,
                        c.UNKNOWN,
                        c.SUSPENDED,
                        f"suspended: deleted Job {state.name}; the work volume and its "
                        "checkpoints stay, unsuspend to resume",
                    )
                else:
                    queued = state.phase == "queued"
                    self.set_active(condition, state.name, spec.queue_name if queued else None)
                active.append(step)
                continue
            if state.phase == "blocked":
                self.set(condition, c.UNKNOWN, c.PENDING, state.message)
                self.actions.requeue(self.settings.missing_retry_seconds)
                active.append(step)
                continue
            # The Job is absent.
            if self.was_true(condition) and self.absent_step_done(step):
                done[step] = True
                continue
            if not deps_done or failed is not None:
                continue
            if spec.suspend:
                self.set(
                    condition, c.UNKNOWN, c.SUSPENDED, "suspended: unsuspend to start this step"
                )
                waiting.append(step)
                continue
            missing = self.missing_for(run, step)
            if missing is not None:
                reason, message = missing
                self.set(condition, c.FALSE, reason, message)
                self.actions.requeue(self.settings.missing_retry_seconds)
                waiting.append(step)
                continue
            job = build_job(run, step)
            self.actions.create.append(job)
            # The condition already says what the next reconcile will read from the new Job
            # (running, or queued for Kueue), so the watch event of its creation changes nothing
            # and the driver need not reconcile it. The Event still says "created".
            job_name = job["metadata"]["name"]
            queued = bool(job["spec"].get("suspend"))
            self.set_active(condition, job_name, spec.queue_name if queued else None)
            self.job_created[condition] = Event("Normal", c.JOB_CREATED, f"Created Job {job_name}")
            active.append(step)

        self.record_attempts(steps)
        if failed is not None:
            return self.finish(failed=failed, phase="Failed")
        if all(done.get(s) for s in steps):
            return self.finish(failed=None, phase="Succeeded")
        if spec.suspend:
            phase = "Suspended"
        else:
            current = (active or waiting or [VALIDATE])[0]
            phase = STEP_PHASE[current]
            if current in (VALIDATE, FETCH) and not active:
                phase = "Pending"
        self.actions.requeue(self.settings.resync_seconds)
        return self.finish(failed=None, phase=phase)

    def publish_changed(self, state: JobState, spec: LlamaFineTuneSpec) -> bool:
        """The publish Job was built from other publish settings than the spec's."""
        annotations = (state.job or {}).get("metadata", {}).get("annotations") or {}
        return state.job is not None and annotations.get(ANNOTATION_PUBLISH_HASH) != publish_hash(
            spec
        )

    def absent_step_done(self, step: str) -> bool:
        """A step whose condition is True stays done when its Job is gone (deleted by a user)."""
        if step == EVAL:
            return self.was_true(c.GATES_PASSED)
        return True

    def missing_for(self, run: Run, step: str) -> tuple[str, str] | None:
        """(reason, message) when something the step mounts does not exist yet."""
        ns = self.owner.namespace
        spec = run.spec
        if step in (VALIDATE, *GPU_STEPS):
            for source in (spec.dataset.source, spec.dataset.golden_set):
                if source is None:
                    continue
                if source.pvc and not self.children.get(
                    "PersistentVolumeClaim", source.pvc.claim_name
                ):
                    return c.PVC_MISSING, (
                        f"PersistentVolumeClaim {source.pvc.claim_name} (spec.dataset) not found "
                        f"in namespace {ns}: create it; the run starts when it appears"
                    )
                if source.config_map:
                    cm = self.children.get("ConfigMap", source.config_map.name)
                    if cm is None or source.config_map.key not in (cm.get("data") or {}):
                        return c.CONFIG_MAP_MISSING, (
                            f"ConfigMap {source.config_map.name} with key "
                            f"{source.config_map.key} (spec.dataset) not found in namespace "
                            f"{ns}: create it; the run starts when it appears"
                        )
            claim = spec.work_volume_claim
            if claim and not self.children.get("PersistentVolumeClaim", claim):
                return c.PVC_MISSING, (
                    f"PersistentVolumeClaim {claim} (spec.workVolumeClaim) not found in "
                    f"namespace {ns}: create it or unset the field"
                )
            if spec.dataset.token_secret:
                ref = spec.dataset.token_secret
                missing = self.missing_secret(ref.name, ref.key, "spec.dataset.tokenSecret")
                if missing:
                    return missing
        tracking = spec.tracking
        if step == TRAIN and tracking and tracking.wandb and tracking.wandb.api_key_secret:
            ref = tracking.wandb.api_key_secret
            missing = self.missing_secret(ref.name, ref.key, "spec.tracking.wandb.apiKeySecret")
            if missing:
                return missing
        if step == FETCH and spec.model.token_secret:
            ref = spec.model.token_secret
            return self.missing_secret(ref.name, ref.key, "spec.model.tokenSecret")
        if step == PUBLISH and spec.publish and spec.publish.hub and spec.publish.hub.token_secret:
            ref = spec.publish.hub.token_secret
            return self.missing_secret(ref.name, ref.key, "spec.publish.hub.tokenSecret")
        if step == PUBLISH and spec.publish and spec.publish.dir and spec.publish.dir.claim_name:
            claim = spec.publish.dir.claim_name
            if not self.children.get("PersistentVolumeClaim", claim):
                return c.PVC_MISSING, (
                    f"PersistentVolumeClaim {claim} (spec.publish.dir.claimName) not found in "
                    f"namespace {ns}: create it; publishing starts when it appears"
                )
        return None

    def missing_secret(self, name: str, key: str, field_: str) -> tuple[str, str] | None:
        secret = self.children.get("Secret", name)
        if secret is not None and key in (secret.get("data") or {}):
            return None
        what = "not found" if secret is None else f"has no key {key}"
        return c.SECRET_MISSING, (
            f"Secret {name} ({field_}) {what} in namespace {self.owner.namespace}: create it "
            f"with key {key}; the run continues when it appears"
        )

    # --- step results --------------------------------------------------------------------------
    def on_success(self, run: Run, step: str, state: JobState) -> tuple[str, str] | None:
        """Record a succeeded step; a (reason, message) when its result fails the run."""
        condition = STEP_CONDITION[step]
        result = state.result()
        if step == VALIDATE:
            stats = parse_stats(result)
            if stats is None:
                message = (
                    f"Job {state.name} succeeded but its termination message is not the "
                    f"expected JSON {{rows, tokens, badRows}}: {_excerpt(state)}"
                )
                self.set(condition, c.FALSE, c.RESULT_UNREADABLE, message)
                return c.RESULT_UNREADABLE, message
            self.set(condition, c.TRUE, c.DATA_VALID, stats.describe())
            return None
        if step == EVAL:
            return self.on_evaluated(run.spec, state, result)
        if step == PUBLISH:
            noop = bool(result and result.get("noop"))
            if result:
                published = PublishStatus.model_validate(
                    {
                        k: str(result[k])
                        for k in ("repo", "revision", "commit", "url")
                        if result.get(k)
                    }
                )
                self.status["publish"] = published.model_dump(by_alias=True, exclude_none=True)
            where = (result or {}).get("url") or (result or {}).get("repo") or "the target"
            commit = (result or {}).get("commit")
            message = f"published to {where}" + (f" (commit {commit})" if commit else "")
            self.set(
                condition,
                c.TRUE,
                c.ALREADY_PUBLISHED if noop else c.PUBLISH_SUCCEEDED,
                ("already " if noop else "") + message,
            )
            return None
        self.set(condition, c.TRUE, STEP_SUCCESS[step], f"Job {state.name} succeeded")
        return None

    def on_evaluated(
        self, spec: LlamaFineTuneSpec, state: JobState, result: dict[str, Any] | None
    ) -> tuple[str, str] | None:
        if result is None or not isinstance(result.get("metrics", {}), dict):
            message = (
                f"Job {state.name} finished but its termination message holds no metrics: "
                f"{_excerpt(state)}"
            )
            self.set(c.EVALUATED, c.FALSE, c.RESULT_UNREADABLE, message)
            return c.RESULT_UNREADABLE, message
        results = parse_results(result, spec)
        self.status["results"] = results.model_dump(by_alias=True, exclude_none=True)
        self.set(
            c.EVALUATED,
            c.TRUE,
            c.EVALUATION_SUCCEEDED,
            f"Job {state.name} scored the adapter: {results.headline or 'no headline metric'}",
        )
        gates = results.gates or []
        if not gates:
            self.set(c.GATES_PASSED, c.TRUE, c.NO_GATES, "no gates configured")
            return None
        failing = [g for g in gates if not g.passed]
        if not failing:
            self.set(c.GATES_PASSED, c.TRUE, c.ALL_GATES_PASSED, describe_gates(gates))
            return None
        message = "gates not met, nothing published: " + describe_gates(failing)
        self.set(c.GATES_PASSED, c.FALSE, c.GATES_FAILED, message)
        return c.GATES_FAILED, message

    def on_failure(self, spec: LlamaFineTuneSpec, step: str, state: JobState) -> tuple[str, str]:
        condition = STEP_CONDITION[step]
        term = state.termination
        code = term.exit_code if term else None
        result = state.result()
        if step == EVAL and result is not None and "metrics" in result:
            # The trainer exits 2 when a gate fails, with the scores in its termination message.
            outcome = self.on_evaluated(spec, state, result)
            if outcome is not None:
                return outcome
        detail = _excerpt(state) or state.message
        if state.reason == "DeadlineExceeded":
            reason = c.DEADLINE_EXCEEDED
            message = f"Job {state.name} ran past its deadline: {state.message}"
        elif code == 2 and step == VALIDATE:
            reason = c.INVALID_DATA
            message = f"the dataset is unusable: {detail}"
        elif code == 3 and step == PUBLISH:
            reason = c.PUBLISH_REJECTED
            message = (
                f"the Hub rejected the publish (check the token's write access to the repo): "
                f"{detail}"
            )
        elif state.reason == "BackoffLimitExceeded":
            reason = c.BACKOFF_LIMIT_EXCEEDED
            message = f"Job {state.name} failed too many times; last attempt: {detail}"
        else:
            reason = c.STEP_FAILED
            message = f"Job {state.name} failed ({state.reason}): {detail}"
        message = message[:MAX_MESSAGE]
        self.set(condition, c.FALSE, reason, message)
        return reason, message

    def record_attempts(self, steps: list[str]) -> None:
        by_job = {child_name(self.owner.name, s): s for s in steps}
        seen = {
            (a.get("step"), a.get("time"), a.get("message")) for a in self.old.get("attempts") or []
        }
        attempts = list(self.old.get("attempts") or [])
        for attempt in failed_attempts(self.children, by_job):
            key = (attempt["step"], attempt["time"], attempt["message"])
            if key not in seen:
                attempts.append(attempt)
                seen.add(key)
        if attempts:
            self.status["attempts"] = attempts[-MAX_ATTEMPTS:]

    # --- status ----------------------------------------------------------------------------------
    def finish(
        self, *, failed: tuple[str, str] | None, phase: str, summary: bool = True
    ) -> Actions:
        status = self.status
        if summary:
            if failed is not None:
                reason, message = failed
                self.set(c.FAILED, c.TRUE, reason, message)
                self.set(c.SUCCEEDED, c.FALSE, reason, "the run failed: see the Failed condition")
            elif phase == "Succeeded":
                self.set(c.SUCCEEDED, c.TRUE, c.COMPLETED, "every step succeeded")
                self.set(c.FAILED, c.FALSE, c.NOT_FAILED, "no step failed")
            else:
                reason = {"Suspended": c.SUSPENDED, "Planned": c.DRY_RUN}.get(phase, c.IN_PROGRESS)
                self.set(c.SUCCEEDED, c.FALSE, reason, f"phase {phase}")
                self.set(c.FAILED, c.FALSE, c.NOT_FAILED, "no step failed")
        terminal = phase in ("Succeeded", "Failed")
        if terminal:
            status.setdefault("completionTime", self.now)
            if self.old.get("phase") not in ("Succeeded", "Failed"):
                status["completionTime"] = self.now
        else:
            status.pop("completionTime", None)
        if self.actions.create and any(o["kind"] == "Job" for o in self.actions.create):
            status.setdefault("startTime", self.now)
        if terminal:
            self.notify(phase)
        status["phase"] = phase
        status["observedGeneration"] = self.generation
        status["conditions"] = self.conditions
        self.actions.phase = phase
        self.actions.events = [*self.job_created.values(), *self.condition_events()]
        old_owned = {k: self.old[k] for k in OWNED_STATUS_FIELDS if k in self.old}
        if status != old_owned:
            # Fields that disappeared are written as null so the merge patch removes them.
            self.actions.status = {**{k: None for k in old_owned if k not in status}, **status}
        return self.actions

    def notify(self, phase: str) -> None:
        spec = self.body.get("spec") or {}
        ref = (spec.get("notification") or {}).get("webhookSecret")
        if not ref:
            return
        key = f"{phase} at {self.status['completionTime']}"
        old = c.find(list(self.old.get("conditions") or []), c.NOTIFIED)
        if old is not None and old.get("message") == key:
            return
        missing = self.missing_secret(ref["name"], ref.get("key", "token"), "spec.notification")
        if missing is not None:
            self.set(c.NOTIFIED, c.FALSE, missing[0], missing[1])
            self.actions.requeue(self.settings.missing_retry_seconds)
            return
        failed = c.find(self.conditions, c.FAILED)
        self.actions.notify = Notification(
            secret=ref["name"],
            key=ref.get("key", "token"),
            payload={
                "apiVersion": self.body.get("apiVersion"),
                "kind": self.body.get("kind"),
                "name": self.owner.name,
                "namespace": self.owner.namespace,
                "uid": self.owner.uid,
                "phase": phase,
                "reason": failed.get("reason") if failed and phase == "Failed" else "Completed",
                "message": failed.get("message") if failed and phase == "Failed" else "",
                "completionTime": self.status["completionTime"],
                "results": self.status.get("results"),
                "publish": self.status.get("publish"),
                "plan": self.status.get("plan"),
            },
        )
        self.set(c.NOTIFIED, c.TRUE, c.WEBHOOK_SENT, key)

    def condition_events(self) -> list[Event]:
        old = {x["type"]: x for x in self.old.get("conditions") or []}
        events = []
        for cond in self.conditions:
            if cond["type"] in self.job_created:
                continue
            before = old.get(cond["type"])
            if before and (before["status"], before["reason"]) == (cond["status"], cond["reason"]):
                continue
            if cond["type"] in (c.SUCCEEDED, c.FAILED) and cond["status"] != c.TRUE:
                continue
            warning = cond["status"] == c.FALSE or cond["type"] == c.FAILED
            events.append(
                Event("Warning" if warning else "Normal", cond["reason"], cond["message"])
            )
        return events


def _excerpt(state: JobState) -> str:
    text = state.termination.message if state.termination else ""
    return text[-MAX_MESSAGE:] if text else ""
