"""The `<name>-plan` ConfigMap: the run plan as JSON, the trainer's only input.

`plan.json` is the plan the next step runs with (the final plan once validate measured the data);
`initial-plan.json` is the first plan, sized from the spec before the data was read.
"""

from __future__ import annotations

from typing import Any

from llamaft_operator.builders.common import (
    INITIAL_PLAN_FILE,
    PLAN_FILE,
    PLAN_SUFFIX,
    Owner,
    metadata,
)
from llamaft_trainer.config import RunPlan


def plan_data(initial: RunPlan, current: RunPlan) -> dict[str, str]:
    return {PLAN_FILE: current.to_json(), INITIAL_PLAN_FILE: initial.to_json()}


def build_plan_config_map(owner: Owner, initial: RunPlan, current: RunPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, PLAN_SUFFIX, "plan"),
        "data": plan_data(initial, current),
    }
