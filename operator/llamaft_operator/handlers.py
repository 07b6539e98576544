"""kopf wiring: every trigger runs the same reconcile through a small per-run work queue.

Triggers: any watch event of a LlamaFineTune (created, changed, listed when the operator
(re)starts), any event of a Job labelled with a run's name (a step finished or failed), and the
delay the reconcile asks for (`requeue_after`: a periodic resync, a missing Secret retried, an
error backed off). kopf timers would do the periodic part, but they put a finalizer on every run,
which blocks its deletion whenever the operator is down; a requeue needs none.

Handlers only enqueue the run's key and return: kopf keeps a worker and a backlog of whole watch
events per object while its handler runs, so a handler that awaited the reconcile (waiting for one
of the `max_concurrent_reconciles` slots) made every event of a busy run pile up in memory.
Per run, one reconcile runs at a time; triggers that arrive meanwhile fold into one re-run. The
driver (`Driver.reconcile_once`) reads the world through k8s.py, calls the pure `reconcile`, and
applies its Actions: create-or-get, updates, deletes, the webhook, one status patch, Events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import kopf

from llamaft_operator import metrics, webhook
from llamaft_operator.api import GROUP, PLURAL, VERSION
from llamaft_operator.builders.common import LABEL_FINETUNE, LABEL_STEP
from llamaft_operator.k8s import Kube
from llamaft_operator.observed import Children, controller_uid, job_fingerprint
from llamaft_operator.reconcile import (
    Actions,
    owned_refs,
    plans_only,
    reconcile,
    referenced,
    run_fingerprint,
    shared_refs,
)
from llamaft_operator.settings import Settings

log = logging.getLogger("llamaft.operator")
Key = tuple[str, str]
KNOWABLE_KINDS = frozenset(
    {"ConfigMap", "PersistentVolumeClaim", "Service", "ServiceAccount", "Role", "RoleBinding"}
)
"""Kinds the driver may remember (never Secrets, whose values the reconcile must not keep,
nor Jobs and pods, which it lists on every reconcile)."""
KNOWN_RESYNCS = 5
"""How many resync periods a remembered object may serve event-triggered reconciles."""


@dataclass
class Driver:
    """Reads the world, reconciles one run, applies the difference.

    Reads it saves without reading anything stale that matters:
    - `known`: objects only the operator writes, or their absence, are taken from the
      driver's last read or its own write instead of a GET. Nothing watches them, so one
      deleted behind the operator's back is recreated within a resync, as before:
      - the objects named after a run (`owned_refs`: plan ConfigMap, work PVC, Service) serve
        the reconciles a watch event triggered; a `fresh` reconcile (the periodic resync, a
        retry: the queue's timers) reads them again, and a copy older than `known_seconds`
        (5 resyncs) is read again in any case, for a run whose events keep postponing its
        resync. Not a wall-clock expiry of one resync: in a burst a run waits longer than that
        between its reconciles, and every reconcile read them again.
      - the namespace's shared objects (`shared_refs`: model-cache PVC, trainer RBAC) are read
        once per `shared_seconds` (0.9 resync) for all runs, whatever triggered the reconcile:
        one run's resync would otherwise re-read them for all.
      A create that finds one after all (409) forgets it.
    - a dry run that never started a step fetches none of its named objects (`plans_only`).
    - `jobs_seen`: the fingerprint of every Job the driver created, so the watch event of that
      creation does not trigger a reconcile: the reconcile that created the Job already set
      the step's condition to what that reconcile would read (tested in test_reconcile).
    """

    kube: Kube
    settings: Settings
    runs_seen: dict[Key, bytes] = field(default_factory=dict)
    """`run_fingerprint` of each run as last triggered or as our own status patch left it."""
    known: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = field(
        default_factory=dict
    )
    """(namespace, kind, name) -> (expiry on the monotonic clock, the object or None: absent)."""
    jobs_seen: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    """(namespace, Job name) -> the Job's `job_fingerprint` when it last triggered a reconcile
    (or when the driver created it)."""
    next_sweep: float = 0.0

    @property
    def known_seconds(self) -> float:
        return KNOWN_RESYNCS * self.settings.resync_seconds

    @property
    def shared_seconds(self) -> float:
        return 0.9 * self.settings.resync_seconds

    @cached_property
    def shared(self) -> frozenset[tuple[str, str]]:
        return shared_refs(self.settings)

    def reconcile_once(self, namespace: str, name: str, fresh: bool = False) -> Actions | None:
        """Reconcile one run; `fresh`: read even the objects the driver remembers."""
        body = self.kube.get_finetune(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.PHASES.forget((namespace, name))
            self.runs_seen.pop((namespace, name), None)
            return None  # owner references delete the children
        children = self.observe(body, fresh)
        actions = reconcile(body, children, self.settings)
        self.apply(body, actions)
        metrics.PHASES.set((namespace, name), actions.phase)
        return actions

    def observe(self, body: Mapping[str, Any], fresh: bool = False) -> Children:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        jobs, pods = self.kube.list_children(namespace, name)
        if plans_only(body, jobs, pods):
            return Children(jobs=jobs, pods=pods)
        # Remembered: the namespace's shared objects, and the run's own names when absent or
        # controlled by this run (a foreign one, NameTaken, is read again until it is gone).
        owned = owned_refs(body)
        now = time.monotonic()
        named: dict[tuple[str, str], dict[str, Any]] = {}
        unknown: list[tuple[str, str]] = []
        for kind, ref in referenced(body, self.settings):
            hit = self.known.get((namespace, kind, ref))
            if hit is None or hit[0] <= now or (fresh and (kind, ref) not in self.shared):
                unknown.append((kind, ref))
            elif hit[1] is not None:
                named[(kind, ref)] = hit[1]
        read = self.kube.get_named(namespace, unknown)
        for kind, ref in unknown:
            obj = read.get((kind, ref))
            if obj is not None:
                named[(kind, ref)] = obj
            ours = (kind, ref) in owned and (obj is None or controller_uid(obj) == meta.get("uid"))
            if (kind, ref) in self.shared or ours:
                self.remember(namespace, kind, ref, obj)
        return Children(jobs=jobs, pods=pods, named=named)

    def remember(self, namespace: str, kind: str, name: str, obj: dict[str, Any] | None) -> None:
        if kind not in KNOWABLE_KINDS:
            return
        now = time.monotonic()
        if now >= self.next_sweep:  # drop expired entries (deleted runs' objects) once a period
            self.known = {k: v for k, v in self.known.items() if v[0] > now}
            self.next_sweep = now + self.known_seconds
        seconds = self.shared_seconds if (kind, name) in self.shared else self.known_seconds
        self.known[(namespace, kind, name)] = (now + seconds, _what_is_read(obj))

    def forget(self, namespace: str, kind: str, name: str) -> None:
        self.known.pop((namespace, kind, name), None)

    def run_changed(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Whether a watch event of a run can change its reconcile: not when only what the
        reconcile ignores changed (`status.progress`, resourceVersion), as in the trainer's
        progress patches and the echo of our own status patch."""
        fingerprint = run_fingerprint(body)
        if self.runs_seen.get(key) == fingerprint:
            return False
        self.runs_seen[key] = fingerprint
        return True

    def apply(self, body: Mapping[str, Any], actions: Actions) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        # Updates first: a Job created in this reconcile reads the plan ConfigMap just rewritten.
        for obj in actions.update:
            kind, child = obj["kind"], obj["metadata"]["name"]
            self.remember(namespace, kind, child, self.kube.patch(obj))
            log.info("Updated %s name=%s run=%s", kind, child, name)
        for obj in actions.create:
            kind, child = obj["kind"], obj["metadata"]["name"]
            created = self.kube.create(obj)
            if created is None:  # it exists already: read it next time
                self.forget(namespace, kind, child)
                continue
            log.info("Created %s name=%s namespace=%s run=%s", kind, child, namespace, name)
            if kind == "Job":
                self.jobs_seen[(namespace, child)] = job_fingerprint(created)
                metrics.JOBS_CREATED.labels(obj["metadata"]["labels"][LABEL_STEP]).inc()
            else:
                self.remember(namespace, kind, child, created)
        for delete in actions.delete:
            self.kube.delete(delete.kind, namespace, delete.name, delete.propagation)
            self.forget(namespace, delete.kind, delete.name)
            log.info("Deleted %s name=%s run=%s", delete.kind, delete.name, name)
        if actions.notify is not None:
            actions = self.notify(body, actions)
        if actions.status is not None:
            patched = self.kube.patch_status(namespace, name, actions.status)
            self.runs_seen[(namespace, name)] = run_fingerprint(patched)
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


def _what_is_read(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The part of a remembered object the reconcile reads: that it exists, its controller
    (`foreign_children`, `frozen_plans`) and a ConfigMap's data (the plans and their revision);
    not managedFields, spec or status, which would be kept for every active run."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "ownerReferences") if k in meta}
    slim: dict[str, Any] = {"kind": obj.get("kind"), "metadata": kept}
    if "data" in obj:
        slim["data"] = obj["data"]
    return slim


@dataclass
class Queue:
    """At most one reconcile per run at a time; triggers fold; delays keep the earliest."""

    driver: Driver
    settings: Settings
    running: dict[Key, bool] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)
    timers: dict[Key, tuple[float, asyncio.TimerHandle]] = field(default_factory=dict)
    fired: set[Key] = field(default_factory=set)
    """Runs whose timer fired (the periodic resync, a retry): their next reconcile is `fresh`."""
    failures: dict[Key, int] = field(default_factory=dict)
    slots: asyncio.Semaphore | None = None
    threads: ThreadPoolExecutor | None = None
    """One thread per reconcile slot: asyncio's default executor has min(32, cores + 4) threads,
    6 on a 2-core pod, which silently capped `max_concurrent_reconciles`."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """The running `_drain` tasks (the event loop keeps only weak references to tasks)."""

    def job_changed(self, namespace: str, job: Mapping[str, Any], deleted: bool) -> bool:
        """Whether a Job's watch event can change its run's reconcile (see `job_fingerprint`)."""
        key = (namespace, str(job.get("metadata", {}).get("name")))
        seen = self.driver.jobs_seen
        if deleted:
            seen.pop(key, None)
            return True
        fingerprint = job_fingerprint(job)
        if seen.get(key) == fingerprint:
            return False
        seen[key] = fingerprint
        return True

    def trigger(self, key: Key) -> asyncio.Task[None] | None:
        """Reconcile `key` soon; returns at once. A trigger while its reconcile runs folds into
        one re-run after it (None returned); otherwise the task that drains the key."""
        if self.running.get(key):
            self.dirty.add(key)
            return None
        self.running[key] = True
        # Fresh contexts, not the caller's: kopf's handler context holds the watch event (the
        # whole object, managedFields included), which the task, its done-callback (asyncio
        # copies the current context for it unless given one) or a timer would keep alive while
        # the run waits for a slot: ~850 Job bodies when 1,000 full runs queue behind 8 slots.
        task = asyncio.get_running_loop().create_task(self._drain(key), context=Context())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard, context=Context())
        return task

    async def _drain(self, key: Key) -> None:
        delay: float | None = None
        try:
            while True:
                self._cancel(key)  # this run is queued: its timer has nothing left to do
                delay = await self._run(key)
                if key not in self.dirty:
                    break
        finally:
            self.running.pop(key, None)
        if delay is not None:
            self.schedule(key, delay)

    async def _run(self, key: Key) -> float | None:
        if self.slots is None or self.threads is None:
            size = max(1, self.settings.max_concurrent_reconciles)
            self.slots = asyncio.Semaphore(size)
            self.threads = ThreadPoolExecutor(size, thread_name_prefix="reconcile")
        async with self.slots:
            # Triggers that arrived while this run waited for a slot fold into this reconcile,
            # which has not read anything yet; only later ones need a re-run. (Cleared when the
            # run was queued instead, every trigger during the wait cost a second reconcile.)
            self.dirty.discard(key)
            fresh = key in self.fired  # its timer asked for it (`_drain` cancelled any other)
            self.fired.discard(key)
            started = time.monotonic()
            try:
                actions = await asyncio.get_running_loop().run_in_executor(
                    self.threads, self.driver.reconcile_once, *key, fresh
                )
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
        handle = loop.call_later(delay, self._fire, key, context=Context())
        self.timers[key] = (due, handle)

    def _fire(self, key: Key) -> None:
        self.fired.add(key)
        self.trigger(key)

    def _cancel(self, key: Key) -> None:
        existing = self.timers.pop(key, None)
        if existing is not None:
            existing[1].cancel()

    def cancel_all(self) -> None:
        for key in list(self.timers):
            self._cancel(key)
        for task in list(self.tasks):
            task.cancel()


_QUEUE: Queue | None = None


def setup(settings: Settings, kube: Kube | None = None) -> Queue:
    """Create the driver and queue the handlers use (called by __main__ before kopf.run)."""
    global _QUEUE
    kube = kube or Kube(connections=settings.max_concurrent_reconciles)
    _QUEUE = Queue(Driver(kube, settings), settings)
    return _QUEUE


def _queue() -> Queue:
    if _QUEUE is None:
        raise RuntimeError("handlers.setup() must run before the operator starts")
    return _QUEUE


@kopf.on.event(GROUP, VERSION, PLURAL)
async def finetune_event(
    *, type: str, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> None:
    """Created, changed or listed at startup: reconcile. Deleted: forget it. The echo of our
    own status patch is skipped: the reconcile that wrote it already saw that state."""
    queue = _queue()
    key = (namespace or "default", name)
    if type == "DELETED":
        metrics.PHASES.forget(key)
        queue._cancel(key)
        queue.driver.runs_seen.pop(key, None)
        return
    if queue.driver.run_changed(key, body) or type != "MODIFIED":
        queue.trigger(key)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_FINETUNE: kopf.PRESENT})
async def job_event(
    *, type: str, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> None:
    """A step Job started, finished, failed a pod or went away: reconcile its run. Status
    updates that change nothing the reconcile reads (active, ready counts) are skipped."""
    queue = _queue()
    ns = namespace or "default"
    if queue.job_changed(ns, body, deleted=type == "DELETED"):
        queue.trigger((ns, labels[LABEL_FINETUNE]))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _QUEUE is not None:
        _QUEUE.cancel_all()
