"""Reading the observed world: a step's Job state, its pods' termination messages and attempts.

Input is plain Kubernetes JSON (what `k8s.py` returns, or a test's dict), so this module and the
reconcile built on it are pure and testable without a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llamaft_trainer.errors import EXIT_PREEMPTED

JobPhase = Literal["absent", "blocked", "queued", "running", "succeeded", "failed"]
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Children:
    """What the driver observed for one run.

    `jobs` and `pods` carry the run's label; `named` maps (kind, name) to each object the run
    refers to by name (plan ConfigMap, PVCs, Service, Secrets with their values blanked,
    dataset ConfigMaps, the trainer's ServiceAccount/Role/RoleBinding). Absent means not found.
    """

    jobs: tuple[dict[str, Any], ...] = ()
    pods: tuple[dict[str, Any], ...] = ()
    named: Mapping[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.named.get((kind, name))


@dataclass(frozen=True)
class Termination:
    """How one container of one pod ended."""

    pod: str
    exit_code: int | None
    reason: str
    message: str
    finished_at: str


@dataclass(frozen=True)
class JobState:
    """A step's Job as the reconcile sees it."""

    phase: JobPhase
    job: dict[str, Any] | None = None
    reason: str = ""
    message: str = ""
    termination: Termination | None = None

    @property
    def name(self) -> str:
        return str((self.job or {}).get("metadata", {}).get("name", ""))

    def result(self) -> dict[str, Any] | None:
        """The termination message as a JSON object, or None when it is not one."""
        if self.termination is None:
            return None
        return parse_result(self.termination.message)


def parse_result(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def uid(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def _condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return dict(c)
    return None


def pods_of(job: Mapping[str, Any], pods: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    job_uid = uid(job)
    return [p for p in pods if controller_uid(p) == job_uid]


def termination(pod: Mapping[str, Any], container: str) -> Termination | None:
    """The terminated state of `container` (or of a failed init container) in `pod`."""
    status = pod.get("status", {})
    name = str(pod.get("metadata", {}).get("name", ""))
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    chosen = None
    for cs in statuses:
        term = (cs.get("state") or {}).get("terminated")
        if term is None:
            continue
        if cs.get("name") == container or term.get("exitCode", 0) != 0:
            chosen = term
            if term.get("exitCode", 0) != 0:
                break
    if chosen is None:
        return None
    return Termination(
        pod=name,
        exit_code=chosen.get("exitCode"),
        reason=str(chosen.get("reason") or ""),
        message=str(chosen.get("message") or "").strip(),
        finished_at=str(chosen.get("finishedAt") or ""),
    )


def _job_name_label(pod: Mapping[str, Any]) -> str | None:
    pod_labels = pod.get("metadata", {}).get("labels") or {}
    name = pod_labels.get("batch.kubernetes.io/job-name") or pod_labels.get("job-name")
    return str(name) if name else None


def _index(pod: Mapping[str, Any]) -> int:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    try:
        return int(annotations.get(COMPLETION_INDEX, 0))
    except ValueError:
        return 0


def job_state(children: Children, job_name: str, owner_uid: str, container: str) -> JobState:
    """The state of the Job named `job_name`, which must be owned by the run `owner_uid`."""
    job = next((j for j in children.jobs if j["metadata"]["name"] == job_name), None)
    if job is None:
        leftovers = [
            p
            for p in children.pods
            if _job_name_label(p) == job_name
            and p.get("status", {}).get("phase") not in TERMINAL_POD_PHASES
        ]
        if leftovers:
            return JobState(
                "blocked",
                reason="PodsTerminating",
                message=f"waiting for {len(leftovers)} pod(s) of the previous {job_name} to stop",
            )
        return JobState("absent")
    if controller_uid(job) != owner_uid:
        return JobState(
            "blocked",
            job,
            reason="NameTaken",
            message=f"Job {job_name} exists but belongs to another object; delete it or rename",
        )
    if is_deleting(job):
        return JobState("blocked", job, reason="Deleting", message=f"Job {job_name} is deleting")
    pods = pods_of(job, children.pods)
    complete = _condition(job, "Complete")
    if complete is not None:
        done = sorted(
            (p for p in pods if p.get("status", {}).get("phase") == "Succeeded"), key=_index
        )
        term = termination(done[0], container) if done else None
        return JobState("succeeded", job, termination=term)
    failed = _condition(job, "Failed")
    if failed is not None:
        ended = [t for p in pods if (t := termination(p, container)) is not None]
        ended.sort(key=lambda t: t.finished_at)
        bad = [t for t in ended if t.exit_code not in (0, None)]
        candidates = bad or ended
        term = candidates[-1] if candidates else None
        return JobState(
            "failed",
            job,
            reason=str(failed.get("reason") or "Failed"),
            message=str(failed.get("message") or ""),
            termination=term,
        )
    if job.get("spec", {}).get("suspend"):
        return JobState("queued", job)
    return JobState("running", job)


def job_fingerprint(job: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parts of a Job that `job_state` and `failed_attempts` read.

    A Job's status changes several times while nothing the reconcile decides changes (active,
    ready, uncounted pods, startTime, SuccessCriteriaMet); a watch event whose fingerprint equals
    the previous one cannot change the reconcile's result and need not trigger it.
    """
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    conditions = tuple(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        for c in status.get("conditions") or []
        if c.get("type") in ("Complete", "Failed")
    )
    return (
        meta.get("uid"),
        bool(meta.get("deletionTimestamp")),
        controller_uid(job),
        tuple(sorted((meta.get("annotations") or {}).items())),
        bool((job.get("spec") or {}).get("suspend")),
        conditions,
        status.get("failed"),
    )


def attempt_reason(pod: Mapping[str, Any], term: Termination | None) -> str:
    if _condition(pod, "DisruptionTarget") is not None:
        return "Disrupted"
    if term is not None and term.reason == "OOMKilled":
        return "OOMKilled"
    if term is not None and term.exit_code == EXIT_PREEMPTED:
        return "Preempted"
    status_reason = pod.get("status", {}).get("reason")
    if status_reason:
        return str(status_reason)
    if term is not None and term.exit_code is not None:
        return f"ExitCode{term.exit_code}"
    return "Failed"


def failed_attempts(children: Children, step_of_job: Mapping[str, str]) -> list[dict[str, str]]:
    """One Attempt (status.attempts entry) per failed pod of the run's Jobs, oldest first."""
    out = []
    for job in children.jobs:
        step = step_of_job.get(job["metadata"]["name"])
        if step is None:
            continue
        for pod in pods_of(job, children.pods):
            if pod.get("status", {}).get("phase") != "Failed":
                continue
            term = termination(pod, step)
            reason = attempt_reason(pod, term)
            name = pod["metadata"]["name"]
            code = f" exit code {term.exit_code}" if term and term.exit_code is not None else ""
            first_line = term.message.splitlines()[-1][:200] if term and term.message else ""
            message = f"pod {name}{code}" + (f": {first_line}" if first_line else "")
            when = (term.finished_at if term else "") or str(
                pod.get("metadata", {}).get("creationTimestamp", "")
            )
            out.append({"step": step, "reason": reason, "message": message[:1024], "time": when})
    out.sort(key=lambda a: (a["time"], a["message"]))
    return out
