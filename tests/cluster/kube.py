"""What a cluster test holds: a namespace, clients bound to it, waits that explain themselves."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.cluster.podrunner import PodRunner
from tests.cluster.rest import ApiError, Obj, Rest

T = TypeVar("T")
# An object to describe on timeout: the object itself, or (apiVersion, kind, name).
Describe = Obj | tuple[str, str, str] | None


class WaitTimeoutError(AssertionError):
    """A wait_for condition did not hold in time; the message shows the object and its events."""


@dataclass
class Kube:
    """An admin client bound to a fresh namespace (labelled to enforce the restricted PSS)."""

    namespace: str
    rest: Rest
    kubeconfig: Path  # admin, with this namespace as the context's default

    @functools.cached_property
    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for code under test that takes one (e.g. our k8s.py)."""
        from kubernetes import config

        factory: Any = config.new_client_from_config
        return factory(config_file=str(self.kubeconfig))

    def apply(self, manifest: Obj) -> Obj:
        return self.rest.apply(manifest)

    def create(self, manifest: Obj) -> Obj:
        meta = manifest["metadata"]
        path = self.rest.path(
            manifest["apiVersion"], manifest["kind"], namespace=meta.get("namespace")
        )
        return self.rest.post(path, manifest)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        return self.rest.read(api_version, kind, name, namespace)

    def get_or_none(self, api_version: str, kind: str, name: str) -> Obj | None:
        try:
            return self.get(api_version, kind, name)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def delete(
        self, api_version: str, kind: str, name: str, propagation: str = "Background"
    ) -> Obj:
        return self.rest.remove(api_version, kind, name, propagation=propagation)

    def select(self, api_version: str, kind: str, label_selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else {}
        items: list[Obj] = self.rest.get(self.rest.path(api_version, kind), **params)["items"]
        return items

    def events(self, name: str | None = None) -> list[Obj]:
        params = {"fieldSelector": f"involvedObject.name={name}"} if name else {}
        items: list[Obj] = self.rest.get(f"/api/v1/namespaces/{self.namespace}/events", **params)[
            "items"
        ]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def explain(kube: Kube, runner: PodRunner | None, describe: Describe) -> str:
    """The object's status and recent Events, plus the pods the runner ran and their log tails."""
    parts: list[str] = []
    obj: Obj | None = None
    if isinstance(describe, tuple):
        try:
            obj = kube.get(*describe)
        except ApiError as e:
            parts.append(f"{describe}: {e}")
    elif isinstance(describe, dict):
        meta = describe["metadata"]
        try:
            obj = kube.get(
                describe["apiVersion"], describe["kind"], meta["name"], meta.get("namespace")
            )
        except ApiError as e:
            parts.append(f"{describe['kind']} {meta['name']}: {e}")
    if obj is not None:
        parts.append(
            f"--- {obj['kind']} {obj['metadata']['name']} status:\n"
            + yaml.safe_dump(obj.get("status") or {}, sort_keys=False)
        )
    names = {obj["metadata"]["name"]} if obj is not None else set()
    events = [
        e
        for e in kube.events()
        if not names
        or e["involvedObject"]["name"] in names
        or e["involvedObject"].get("kind") == "Pod"
    ]
    parts.append(
        "--- recent events:\n"
        + "\n".join(
            f"{e.get('lastTimestamp')} {e['type']} {e['reason']} "
            f"{e['involvedObject'].get('kind')}/{e['involvedObject']['name']}: "
            f"{e.get('message', '')}"
            for e in events[-25:]
        )
    )
    if runner is not None:
        for pod in runner.describe(kube.namespace):
            name = str(pod["pod"]).split("/", 1)[1]
            tail = "\n".join(runner.logs(kube.namespace, name).splitlines()[-15:])
            parts.append(
                f"--- pod {name} (pod runner): phase={pod['phase']} ip={pod['ip']}\n{tail}"
            )
    return "\n".join(parts)


def wait_for(
    kube: Kube,
    runner: PodRunner | None,
    condition: Callable[[], T],
    timeout: float = 60.0,
    describe: Describe = None,
    interval: float = 0.25,
    what: str = "",
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    On timeout raise WaitTimeoutError with what went wrong: the described object's status, the
    namespace's recent Events and the pod runner's pods with their log tails.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except ApiError as e:
            last_error = e
        if time.monotonic() > deadline:
            label = what or getattr(condition, "__name__", "condition")
            detail = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeoutError(
                f"{label} not true after {timeout:.0f} s{detail}\n"
                + explain(kube, runner, describe)
            )
        time.sleep(interval)


def condition_true(obj: Obj | None, kind: str) -> bool:
    """Whether `obj` has status condition `kind` with status True."""
    if obj is None:
        return False
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )
