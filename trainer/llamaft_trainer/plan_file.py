"""Read the run plan a step was created for, not an older copy the kubelet still serves.

The operator rewrites the `<name>-plan` ConfigMap once validate has measured the data (the final
plan) and may create the next step's Job in the same reconcile. A new pod's ConfigMap volume comes
from the kubelet's cache, which can lag the API server, so the pod could start with the previous
plan (for train: one sized from the spec's token estimate). The ConfigMap therefore carries a
`revision` the operator increments with each rewrite, and each Job sets `LLAMAFT_PLAN_REVISION` to
the revision it was created with. A pod that finds an older revision mounted waits for the
kubelet to refresh the volume (it swaps all files at once) and fails, to be retried, if it does not
in `PLAN_WAIT_SECONDS`. A newer revision is fine: a retried pod of an older Job then runs with the
current plan (e.g. changed publish settings), as it would have before.

Without the variable (`llamaft run`, a plan file given by hand) the file is read as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import LlamaftError

REVISION_ENV = "LLAMAFT_PLAN_REVISION"
REVISION_FILE = "revision"  # next to plan.json in the mounted ConfigMap
# The kubelet refreshes a ConfigMap volume within its sync period plus the cache's TTL (~1-2 min).
PLAN_WAIT_SECONDS = 180.0
POLL_SECONDS = 0.5


class StalePlanError(LlamaftError):
    """The mounted plan is older than the one the Job was created with; the pod is retried."""


def mounted_revision(plan_path: Path) -> int:
    """The revision next to `plan_path`, 0 where the ConfigMap has none."""
    try:
        return int((plan_path.parent / REVISION_FILE).read_text().strip())
    except (OSError, ValueError):
        return 0


def load_plan(
    plan_path: Path,
    *,
    wait_seconds: float = PLAN_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunPlan:
    """The plan at `plan_path`, once its revision is at least `LLAMAFT_PLAN_REVISION`."""
    wanted = os.environ.get(REVISION_ENV)
    if wanted:
        deadline = clock() + wait_seconds
        # The revision is read before the plan: the kubelet swaps both at once, so the plan read
        # after it is at least as new.
        while (found := mounted_revision(plan_path)) < int(wanted):
            if clock() >= deadline:
                raise StalePlanError(
                    f"the run plan at {plan_path} is revision {found}, this Job was created for "
                    f"revision {wanted}: the kubelet has not refreshed the plan ConfigMap in "
                    f"{wait_seconds:.0f} s; the pod is retried"
                )
            sleep(POLL_SECONDS)
    return RunPlan.load(plan_path)
