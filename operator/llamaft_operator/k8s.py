"""The only module that talks to the Kubernetes API (import-linter keeps it so).

It speaks plain JSON over the client's authenticated REST transport: objects go in and come out
as the API server's own camelCase dicts, the same shape the builders produce and the reconcile
reads, so nothing converts between model classes. Secret values never leave this module except
the one webhook URL `read_secret_key` returns; `observe` blanks them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes import client, config

from llamaft_operator.api import GROUP, PLURAL, VERSION
from llamaft_operator.builders.common import LABEL_FINETUNE, MANAGED_BY
from llamaft_operator.observed import Children

log = logging.getLogger(__name__)

# kind -> (API prefix, plural); every kind the operator reads or writes.
_RESOURCES: dict[str, tuple[str, str]] = {
    "Job": ("/apis/batch/v1", "jobs"),
    "Pod": ("/api/v1", "pods"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Service": ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Event": ("/api/v1", "events"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "LlamaFineTune": (f"/apis/{GROUP}/{VERSION}", PLURAL),
}
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = (10.0, 30.0)  # connect, read (seconds): an API call never hangs a reconcile


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{method} {path}: {status} {message}"[:2000])


def load_config(connections: int = 8) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG).

    `connections`: kept-alive connections to the API server, one per reconcile thread (the
    client's default, 5 per core, makes threads beyond it open a new TLS connection per call).
    """
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = max(connections, 1)
    return client.ApiClient(configuration)


def _path(kind: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    prefix, plural = _RESOURCES[kind]
    path = prefix + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{quote(name)}"
    return path + (f"/{sub}" if sub else "")


class Kube:
    """Thin JSON-over-REST access to the objects of one operator."""

    def __init__(self, api: client.ApiClient | None = None, connections: int = 8) -> None:
        self.api = api or load_config(connections)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        method_, url, header_params, body_, post_params = params
        response = self.api.call_api(
            method_, url, header_params, body_, post_params, _request_timeout=REQUEST_TIMEOUT
        )
        raw = response.read()  # type: ignore[no-untyped-call]
        text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        if response.status >= 400:
            raise ApiError(response.status, method, path, text)
        return json.loads(text) if text else {}

    # --- reads -----------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", _path(kind, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self.request("GET", _path(kind, namespace), query={"labelSelector": selector})
        return list(found.get("items") or [])

    def get_finetune(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("LlamaFineTune", namespace, name)

    def observe(self, namespace: str, name: str, refs: Iterable[tuple[str, str]]) -> Children:
        """The run's Jobs and pods (by label) and every object it names (by name)."""
        jobs, pods = self.list_children(namespace, name)
        return Children(jobs=jobs, pods=pods, named=self.get_named(namespace, refs))

    def list_children(
        self, namespace: str, name: str
    ) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
        """The run's Jobs and pods, by its label."""
        selector = f"{LABEL_FINETUNE}={name}"
        return (
            tuple(self.list("Job", namespace, selector)),
            tuple(self.list("Pod", namespace, selector)),
        )

    def get_named(
        self, namespace: str, refs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Each (kind, name) that exists; Secrets with their values blanked."""
        named: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, ref in refs:
            obj = self.get(kind, namespace, ref)
            if obj is None:
                continue
            if kind == "Secret":
                # Which keys exist is all the reconcile needs; values stay here.
                obj = {
                    "metadata": obj.get("metadata", {}),
                    "data": dict.fromkeys(obj.get("data") or {}, ""),
                }
            named[(kind, ref)] = obj
        return named

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        import base64

        secret = self.get("Secret", namespace, name)
        value = ((secret or {}).get("data") or {}).get(key)
        return base64.b64decode(value).decode().strip() if value else None

    # --- writes --------------------------------------------------------------------------------
    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create `obj` and return it as stored; None when an object of that name already
        exists (create-or-get)."""
        meta = obj["metadata"]
        try:
            return self.request("POST", _path(obj["kind"], meta["namespace"]), body=dict(obj))
        except ApiError as err:
            if err.status == 409:
                return None
            raise

    def patch(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch `obj` onto the existing object of the same kind and name; returns the
        result."""
        meta = obj["metadata"]
        path = _path(obj["kind"], meta["namespace"], meta["name"])
        return self.request("PATCH", path, body=dict(obj), content_type=MERGE_PATCH)

    def delete(self, kind: str, namespace: str, name: str, propagation: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        try:
            self.request("DELETE", _path(kind, namespace, name), body=body)
        except ApiError as err:
            if err.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the run's status; returns the run as the patch left it."""
        path = _path("LlamaFineTune", namespace, name, "status")
        return self.request("PATCH", path, body={"status": dict(status)}, content_type=MERGE_PATCH)

    def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on `involved` (shown by `kubectl describe`)."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "reportingInstance": MANAGED_BY,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.request("POST", _path("Event", meta["namespace"]), body=event)
        except ApiError as err:
            # Events are best effort: a full event store must not fail the reconcile.
            log.warning("Posting Event failed reason=%s error=%s", reason, err)
