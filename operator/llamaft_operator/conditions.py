"""Condition types and reasons of a LlamaFineTune's status, and the helper that sets them.

Conditions follow the Kubernetes API conventions: keyed by `type`, `status` True/False/Unknown, a
CamelCase `reason` from the constants below, a `message` that says what to do, and the
`observedGeneration` they were computed from. `lastTransitionTime` changes only when `status` does,
so rewriting the same condition is a no-op and the status patch can be skipped.
"""

from __future__ import annotations

from typing import Any

# --- types ------------------------------------------------------------------------------------
PLANNED = "Planned"
DATA_VALIDATED = "DataValidated"
MODEL_FETCHED = "ModelFetched"
PILOT_PASSED = "PilotPassed"
TRAINED = "Trained"
EVALUATED = "Evaluated"
GATES_PASSED = "GatesPassed"
PUBLISHED = "Published"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
NOTIFIED = "Notified"

# The order `kubectl describe` shows them in.
ORDER = (
    PLANNED,
    DATA_VALIDATED,
    MODEL_FETCHED,
    PILOT_PASSED,
    TRAINED,
    EVALUATED,
    GATES_PASSED,
    PUBLISHED,
    SUCCEEDED,
    FAILED,
    NOTIFIED,
)

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

# --- reasons ----------------------------------------------------------------------------------
# Planned
INITIAL_PLAN = "InitialPlan"  # sized from the spec (and approxTokens) before the data is read
FINAL_PLAN = "FinalPlan"  # sized from the measured token count
DRY_RUN = "DryRun"
PLAN_FAILED = "PlanFailed"
INVALID_SPEC = "InvalidSpec"

# Any step
PENDING = "Pending"  # waiting for an earlier step
JOB_CREATED = "JobCreated"
RUNNING = "Running"
QUEUED = "Queued"  # the Job waits for Kueue to admit it
SUSPENDED = "Suspended"
SECRET_MISSING = "SecretMissing"
PVC_MISSING = "PvcMissing"
CONFIG_MAP_MISSING = "ConfigMapMissing"
NAME_TAKEN = "NameTaken"  # an object with the child's name exists but is not ours
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
STEP_FAILED = "StepFailed"
RESULT_UNREADABLE = "ResultUnreadable"

# Step successes
DATA_VALID = "DataValid"
INVALID_DATA = "InvalidData"
MODEL_CACHED = "ModelCached"
BUILTIN_MODEL = "BuiltinModel"
PILOT_SUCCEEDED = "PilotSucceeded"
TRAINING_SUCCEEDED = "TrainingSucceeded"
EVALUATION_SUCCEEDED = "EvaluationSucceeded"
ALL_GATES_PASSED = "AllGatesPassed"
NO_GATES = "NoGates"
GATES_FAILED = "GatesFailed"
PUBLISH_SUCCEEDED = "PublishSucceeded"
ALREADY_PUBLISHED = "AlreadyPublished"
PUBLISH_REJECTED = "PublishRejected"
PUBLISH_SETTINGS_CHANGED = "PublishSettingsChanged"

# Summary
IN_PROGRESS = "InProgress"
COMPLETED = "Completed"
NOT_FAILED = "NotFailed"
WEBHOOK_SENT = "WebhookSent"


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == TRUE


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with `type_` set; keeps lastTransitionTime when the status did not change."""
    old = find(conditions, type_)
    transition = now if old is None or old.get("status") != status else old["lastTransitionTime"]
    new: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    rest = [c for c in conditions if c.get("type") != type_]
    return sort([*rest, new])


def remove(conditions: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") != type_]


def sort(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(conditions, key=lambda c: (rank.get(str(c.get("type")), len(ORDER)), c["type"]))
