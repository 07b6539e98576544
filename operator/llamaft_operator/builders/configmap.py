"""The `<name>-plan` ConfigMap: the run plan as JSON, the trainer's only input.

`plan.json` is the plan the next step runs with (the final plan once validate measured the data);
`initial-plan.json` is the first plan, sized from the spec before the data was read;
`revision` counts the rewrites (1 for the first): each step Job carries the revision it was created
with, and its pod waits until the kubelet mounts at least that one (`llamaft_trainer.plan_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamaft_operator.builders.common import (
    INITIAL_PLAN_FILE,
    PLAN_FILE,
    PLAN_SUFFIX,
    Owner,
    metadata,
)
from llamaft_trainer.config import RunPlan
from llamaft_trainer.plan_file import REVISION_FILE


def plan_data(initial: RunPlan, current: RunPlan) -> dict[str, str]:
    """The plans as the ConfigMap holds them, without the revision."""
    return {PLAN_FILE: current.to_json(), INITIAL_PLAN_FILE: initial.to_json()}


def plan_revision(data: Mapping[str, str]) -> int:
    """The revision of a plan ConfigMap's data (0 where it has none)."""
    try:
        return int(data.get(REVISION_FILE, "0"))
    except ValueError:
        return 0


def plans_differ(data: Mapping[str, str], initial: RunPlan, current: RunPlan) -> bool:
    """True when the ConfigMap's plans are not these (its revision aside)."""
    return {k: v for k, v in data.items() if k != REVISION_FILE} != plan_data(initial, current)


def build_plan_config_map(
    owner: Owner, initial: RunPlan, current: RunPlan, revision: int
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, PLAN_SUFFIX, "plan"),
        "data": {**plan_data(initial, current), REVISION_FILE: str(revision)},
    }
