"""Which watch events trigger a reconcile, and which reads the driver may skip."""

from __future__ import annotations

from typing import Any

import pytest

from llamaft_operator.handlers import Driver, Queue
from llamaft_operator.observed import job_fingerprint
from llamaft_operator.reconcile import plans_only, shared_refs
from llamaft_operator.settings import Settings

pytestmark = pytest.mark.unit
SETTINGS = Settings()


def job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "ft-train",
            "uid": "job-uid",
            "ownerReferences": [{"controller": True, "uid": "ft-uid"}],
        },
        "spec": {"suspend": False},
        "status": status,
    }


COMPLETE = [{"type": "Complete", "status": "True", "reason": "", "message": ""}]


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        (job(), job(active=1), False),
        (job(active=1), job(active=1, ready=1), False),
        (job(active=1), job(succeeded=1, conditions=[{"type": "SuccessCriteriaMet"}]), False),
        (job(active=1), job(succeeded=1, conditions=COMPLETE), True),
        (job(active=1), job(active=1, failed=1), True),
        (job(), {**job(), "spec": {"suspend": True}}, True),
    ],
)
def test_job_fingerprint_changes_only_with_what_the_reconcile_reads(
    before: dict[str, Any], after: dict[str, Any], changed: bool
) -> None:
    assert (job_fingerprint(before) != job_fingerprint(after)) is changed


def test_queue_triggers_on_first_sight_change_and_delete_only() -> None:
    queue = Queue(Driver(kube=None, settings=SETTINGS), SETTINGS)  # type: ignore[arg-type]
    assert queue.job_changed("ml", job(), deleted=False)
    assert not queue.job_changed("ml", job(active=1), deleted=False)
    assert queue.job_changed("ml", job(conditions=COMPLETE), deleted=False)
    assert queue.job_changed("ml", job(conditions=COMPLETE), deleted=True)
    assert queue.job_changed("ml", job(conditions=COMPLETE), deleted=False)


def test_own_status_patch_echo_is_recognised_by_resource_version() -> None:
    driver = Driver(kube=None, settings=SETTINGS)  # type: ignore[arg-type]
    driver.own_writes[("ml", "ft")] = "42"
    assert driver.is_own_write(("ml", "ft"), {"metadata": {"resourceVersion": "42"}})
    assert not driver.is_own_write(("ml", "ft"), {"metadata": {"resourceVersion": "43"}})
    assert not driver.is_own_write(("ml", "other"), {"metadata": {"resourceVersion": "42"}})


def test_plans_only_for_a_dry_run_that_never_started() -> None:
    dry = {"spec": {"dryRun": True}}
    assert plans_only(dry, (), ())
    assert not plans_only(dry, ({"metadata": {}},), ())
    assert not plans_only(dry, (), ({"metadata": {}},))
    assert not plans_only({"spec": {}}, (), ())


def test_shared_refs_are_the_namespace_wide_objects() -> None:
    sa = SETTINGS.trainer_service_account
    assert shared_refs(SETTINGS) == {
        ("PersistentVolumeClaim", SETTINGS.model_cache_claim),
        ("ServiceAccount", sa),
        ("Role", sa),
        ("RoleBinding", sa),
    }
    no_rbac = Settings(manage_trainer_rbac=False)
    assert shared_refs(no_rbac) == {("PersistentVolumeClaim", SETTINGS.model_cache_claim)}
