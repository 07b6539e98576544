"""kopf wiring: every trigger runs the same reconcile through a small per-run work queue.

Triggers: any watch event of a LlamaFineTune (created, changed, listed when the operator
(re)starts), any event of a Job labelled with a run's name (a step finished or failed), and the
delay the reconcile asks for (`requeue_after`: a periodic resync, a missing Secret retried, an
error backed off). kopf timers would do the periodic part, but they put a finalizer on every run,
which blocks its deletion whenever the operator is down; a requeue needs none.

Per run, one reconcile runs at a time; triggers that arrive meanwhile fold into one re-run. The
driver (`Driver.reconcile_once`) reads the world through k8s.py, calls the pure `reconcile`, and
applies its Actions: create-or-get, updates, deletes, the webhook, one status patch, Events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from llamaft_operator import metrics, webhook
from llamaft_operator.api import GROUP, PLURAL, VERSION
from llamaft_operator.builders.common import LABEL_FINETUNE, LABEL_STEP
from llamaft_operator.k8s import Kube
from llamaft_operator.reconcile import Actions, reconcile, referenced
from llamaft_operator.settings import Settings

log = logging.getLogger("llamaft.operator")
Key = tuple[str, str]


@dataclass
class Driver:
    """Reads the world, reconciles one run, applies the difference."""

    kube: Kube
    settings: Settings

    def reconcile_once(self, namespace: str, name: str) -> Actions | None:
        body = self.kube.get_finetune(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.PHASES.forget((namespace, name))
            return None  # owner references delete the children
        children = self.kube.observe(namespace, name, referenced(body, self.settings))
        actions = reconcile(body, children, self.settings)
        self.apply(body, actions)
        metrics.PHASES.set((namespace, name), actions.phase)
        return actions

    def apply(self, body: Mapping[str, Any], actions: Actions) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for obj in actions.create:
            kind, child = obj["kind"], obj["metadata"]["name"]
            if self.kube.create(obj):
                log.info("Created %s name=%s namespace=%s run=%s", kind, child, namespace, name)
                if kind == "Job":
                    metrics.JOBS_CREATED.labels(obj["metadata"]["labels"][LABEL_STEP]).inc()
        for obj in actions.update:
            self.kube.patch(obj)
            log.info("Updated %s name=%s run=%s", obj["kind"], obj["metadata"]["name"], name)
        for delete in actions.delete:
            self.kube.delete(delete.kind, namespace, delete.name, delete.propagation)
            log.info("Deleted %s name=%s run=%s", delete.kind, delete.name, name)
        if actions.notify is not None:
            actions = self.notify(body, actions)
        if actions.status is not None:
            self.kube.patch_status(namespace, name, actions.status)
            log.info("Updated status run=%s namespace=%s phase=%s", name, namespace, actions.phase)
        for event in actions.events:
            self.kube.post_event(body, event.type, event.reason, event.message)

    def notify(self, body: Mapping[str, Any], actions: Actions) -> Actions:
        assert actions.notify is not None
        namespace = body["metadata"]["namespace"]
        url = self.kube.read_secret_key(namespace, actions.notify.secret, actions.notify.key)
        try:
            if url is None:
                raise webhook.WebhookError(f"Secret {actions.notify.secret} has no URL")
            webhook.post(url, actions.notify.payload, self.settings.webhook_timeout_seconds)
        except webhook.WebhookError as err:
            metrics.WEBHOOKS.labels("error").inc()
            self.kube.post_event(body, "Warning", "WebhookFailed", f"{err}; retrying")
            actions = actions.without_notification()
            actions.requeue(self.settings.missing_retry_seconds)
            return actions
        metrics.WEBHOOKS.labels("sent").inc()
        return actions


@dataclass
class Queue:
    """At most one reconcile per run at a time; triggers fold; delays keep the earliest."""

    driver: Driver
    settings: Settings
    running: dict[Key, bool] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)
    timers: dict[Key, tuple[float, asyncio.TimerHandle]] = field(default_factory=dict)
    failures: dict[Key, int] = field(default_factory=dict)
    slots: asyncio.Semaphore | None = None

    async def trigger(self, key: Key) -> None:
        if self.running.get(key):
            self.dirty.add(key)
            return
        self.running[key] = True
        delay: float | None = None
        try:
            while True:
                self.dirty.discard(key)
                self._cancel(key)
                delay = await self._run(key)
                if key not in self.dirty:
                    break
        finally:
            self.running.pop(key, None)
        if delay is not None:
            self.schedule(key, delay)

    async def _run(self, key: Key) -> float | None:
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.settings.max_concurrent_reconciles)
        started = time.monotonic()
        async with self.slots:
            try:
                actions = await asyncio.to_thread(self.driver.reconcile_once, *key)
            except Exception as err:  # any failure is retried with back-off
                failures = self.failures.get(key, 0)
                self.failures[key] = failures + 1
                backoffs = self.settings.error_backoffs
                delay = backoffs[min(failures, len(backoffs) - 1)]
                metrics.RECONCILE_ERRORS.inc()
                metrics.RECONCILES.labels("error").inc()
                log.warning(
                    "Reconcile failed run=%s namespace=%s retry_in=%ss error=%s",
                    key[1],
                    key[0],
                    delay,
                    err,
                )
                return delay
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        self.failures.pop(key, None)
        metrics.RECONCILES.labels("ok").inc()
        return actions.requeue_after if actions is not None else None

    def schedule(self, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        existing = self.timers.get(key)
        if existing is not None and existing[0] <= due:
            return
        self._cancel(key)
        handle = loop.call_later(delay, lambda: asyncio.ensure_future(self.trigger(key)))
        self.timers[key] = (due, handle)

    def _cancel(self, key: Key) -> None:
        existing = self.timers.pop(key, None)
        if existing is not None:
            existing[1].cancel()

    def cancel_all(self) -> None:
        for key in list(self.timers):
            self._cancel(key)


_QUEUE: Queue | None = None


def setup(settings: Settings, kube: Kube | None = None) -> Queue:
    """Create the driver and queue the handlers use (called by __main__ before kopf.run)."""
    global _QUEUE
    _QUEUE = Queue(Driver(kube or Kube(), settings), settings)
    return _QUEUE


def _queue() -> Queue:
    if _QUEUE is None:
        raise RuntimeError("handlers.setup() must run before the operator starts")
    return _QUEUE


@kopf.on.event(GROUP, VERSION, PLURAL)
async def finetune_event(*, type: str, namespace: str | None, name: str, **_: Any) -> None:
    """Created, changed or listed at startup: reconcile. Deleted: forget it."""
    key = (namespace or "default", name)
    if type == "DELETED":
        metrics.PHASES.forget(key)
        _queue()._cancel(key)
        return
    await _queue().trigger(key)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_FINETUNE: kopf.PRESENT})
async def job_event(*, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    """A step Job changed (started, succeeded, failed, deleted): reconcile its run."""
    await _queue().trigger((namespace or "default", labels[LABEL_FINETUNE]))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _QUEUE is not None:
        _QUEUE.cancel_all()
