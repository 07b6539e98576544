"""Which watch events trigger a reconcile, and which reads the driver may skip."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref
from typing import Any

import kopf
import pytest

from llamaft_operator.__main__ import configure_kopf
from llamaft_operator.api import GROUP, PLURAL, VERSION
from llamaft_operator.builders.common import LABEL_FINETUNE
from llamaft_operator.handlers import Driver, Queue
from llamaft_operator.observed import job_fingerprint
from llamaft_operator.reconcile import Actions, owned_refs, plans_only, shared_refs
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


def run(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "ft", "uid": "ft-uid", "generation": 1, "resourceVersion": "7"},
        "spec": {"method": "lora"},
        "status": {"phase": "Training", **status},
    }


def test_run_events_trigger_only_when_what_the_reconcile_reads_changed() -> None:
    driver = Driver(kube=None, settings=SETTINGS)  # type: ignore[arg-type]
    key = ("ml", "ft")
    assert driver.run_changed(key, run())
    progress = run(progress={"step": 10, "loss": 1.2})
    progress["metadata"]["resourceVersion"] = "8"
    assert not driver.run_changed(key, progress), "the trainer's progress patch"
    edited = run()
    edited["metadata"]["generation"] = 2
    edited["spec"] = {"method": "qlora"}
    assert driver.run_changed(key, edited), "a spec change"
    assert driver.run_changed(key, run(phase="Failed")), "someone else wrote our status"
    assert driver.run_changed(("ml", "other"), run()), "another run"


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


def test_owned_refs_are_the_names_of_the_run_unless_the_spec_names_the_volume() -> None:
    run = {"metadata": {"name": "ft"}, "spec": {}}
    assert owned_refs(run) == (
        ("ConfigMap", "ft-plan"),
        ("Service", "ft-train"),
        ("PersistentVolumeClaim", "ft-work"),
    )
    theirs = {"metadata": {"name": "ft"}, "spec": {"workVolumeClaim": "scratch"}}
    assert owned_refs(theirs) == (("ConfigMap", "ft-plan"), ("Service", "ft-train"))


class BlockingDriver(Driver):
    """Our own driver with the API calls replaced: each reconcile records its key and waits for
    the test to release it (no Kubernetes here: this is about the queue's scheduling)."""

    def __init__(self) -> None:
        super().__init__(kube=None, settings=SETTINGS)  # type: ignore[arg-type]
        self.calls: list[tuple[str, str]] = []
        self.fresh: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def reconcile_once(self, namespace: str, name: str, fresh: bool = False) -> Actions | None:
        self.calls.append((namespace, name))
        if fresh:
            self.fresh.append((namespace, name))
        self.entered.release()
        assert self.release.wait(10), "the test never released the reconcile"
        return None


def test_trigger_returns_at_once_and_triggers_during_a_reconcile_fold_into_one_rerun() -> None:
    """kopf's per-object worker is free again as soon as the handler returns; before, it awaited
    the reconcile, and the object's watch events piled up in kopf's backlog meanwhile."""

    async def scenario() -> BlockingDriver:
        driver = BlockingDriver()
        queue = Queue(driver, SETTINGS)
        first = queue.trigger(("ml", "ft"))
        assert first is not None and not first.done(), "trigger must not wait for the reconcile"
        await asyncio.to_thread(driver.entered.acquire)  # the first reconcile is running
        for _ in range(5):  # watch events while it runs
            assert queue.trigger(("ml", "ft")) is None
        other = queue.trigger(("ml", "other"))  # another run is not held up by this one
        assert other is not None
        await asyncio.to_thread(driver.entered.acquire)
        assert set(driver.calls) == {("ml", "ft"), ("ml", "other")}
        driver.release.set()
        await asyncio.wait_for(asyncio.gather(first, other), 10)
        assert not queue.tasks and not queue.running
        return driver

    driver = asyncio.run(scenario())
    assert driver.calls.count(("ml", "ft")) == 2, "five triggers during a reconcile: one re-run"
    assert driver.calls.count(("ml", "other")) == 1


async def one_busy_slot() -> tuple[BlockingDriver, Queue, asyncio.Task[None]]:
    """A queue with one reconcile slot, held by the run "busy" until `driver.release` is set."""
    driver = BlockingDriver()
    queue = Queue(driver, Settings(max_concurrent_reconciles=1))
    busy = queue.trigger(("ml", "busy"))
    assert busy is not None
    await asyncio.to_thread(driver.entered.acquire)  # "busy" holds the only slot
    return driver, queue, busy


def test_triggers_while_waiting_for_a_slot_fold_into_that_reconcile() -> None:
    """With every slot busy, a run triggered again while it waits is reconciled once: the
    reconcile that gets the slot reads the world after all those triggers."""

    async def scenario() -> BlockingDriver:
        driver, queue, busy = await one_busy_slot()
        waiting = queue.trigger(("ml", "ft"))
        assert waiting is not None
        await asyncio.sleep(0)  # "ft" is now queued for the slot
        for _ in range(3):
            assert queue.trigger(("ml", "ft")) is None
        driver.release.set()
        await asyncio.wait_for(asyncio.gather(busy, waiting), 10)
        return driver

    driver = asyncio.run(scenario())
    assert driver.calls == [("ml", "busy"), ("ml", "ft")]


def test_a_run_waiting_for_a_slot_keeps_nothing_of_the_triggering_handlers_context() -> None:
    """kopf calls a handler in a context that holds the watch event (the whole object). A run
    queued behind busy slots must not keep that context alive through its task, the task's
    done-callback or a timer: 1,000 full runs queued behind 8 slots kept ~850 Job bodies."""
    watch_event: contextvars.ContextVar[object] = contextvars.ContextVar("watch_event")

    class WatchEvent:
        """Stands for the object kopf puts in the handler's context."""

    async def scenario() -> None:
        driver, queue, _ = await one_busy_slot()

        async def handler() -> weakref.ref[WatchEvent]:
            event = WatchEvent()
            watch_event.set(event)  # what kopf does before it calls the handler
            assert queue.trigger(("ml", "queued")) is not None
            queue.schedule(("ml", "later"), 3600)
            return weakref.ref(event)

        # The handler runs in a copy of the context, as kopf's handlers do.
        event_ref = await asyncio.get_running_loop().create_task(
            handler(), context=contextvars.copy_context()
        )
        await asyncio.sleep(0)  # the finished handler task is released on the next loop turn
        gc.collect()
        assert event_ref() is None, "a queued run or its timer keeps the handler's context"
        driver.release.set()
        await asyncio.wait_for(asyncio.gather(*queue.tasks), 10)
        queue.cancel_all()

    asyncio.run(scenario())


def test_the_api_server_sends_only_the_jobs_of_runs() -> None:
    """The Job watch carries a label selector, so the API server filters it: the handler's own
    label filter runs only after kopf has kept per-object state for every Job it was sent."""
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, SETTINGS)

    def selectors(group: str, version: str, plural: str) -> list[str]:
        return kopf_settings.watching.label_selectors.collect(kopf.Resource(group, version, plural))

    assert selectors("batch", "v1", "jobs") == [LABEL_FINETUNE]
    assert selectors(GROUP, VERSION, PLURAL) == [], "every run is the operator's"


def test_only_a_reconcile_its_timer_asked_for_reads_the_remembered_objects_again() -> None:
    """Watch events reconcile from the remembered copies of the operator's own objects; the
    periodic resync (or a retry), i.e. the queue's timer, reads them fresh."""

    async def scenario() -> BlockingDriver:
        driver = BlockingDriver()
        driver.release.set()
        queue = Queue(driver, SETTINGS)
        event = queue.trigger(("ml", "event"))
        assert event is not None
        await asyncio.wait_for(event, 10)
        queue.schedule(("ml", "timer"), 0.01)
        queue.schedule(("ml", "event"), 3600)  # its resync, not due yet
        await asyncio.wait_for(asyncio.to_thread(driver.entered.acquire), 10)  # "event"
        await asyncio.wait_for(asyncio.to_thread(driver.entered.acquire), 10)  # "timer"
        await asyncio.wait_for(asyncio.gather(*queue.tasks), 10)
        assert not queue.fired, "a fired timer's mark is used up by its reconcile"
        queue.cancel_all()
        return driver

    driver = asyncio.run(scenario())
    assert driver.calls == [("ml", "event"), ("ml", "timer")]
    assert driver.fresh == [("ml", "timer")]
