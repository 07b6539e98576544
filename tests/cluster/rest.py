"""A small JSON client for the Kubernetes API, used by the harness itself.

The harness works on plain dicts (the API's own JSON) and needs watches, status patches and
discovery; a few lines over `requests` keep it independent of the generated client's models.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

Obj = dict[str, Any]
PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


class ApiError(Exception):
    def __init__(self, status: int, body: Obj, method: str, path: str) -> None:
        self.status, self.body = status, body
        self.reason = str(body.get("reason", ""))
        super().__init__(f"{method} {path}: {status} {body.get('message', body)}")


class Rest:
    def __init__(
        self,
        server: str,
        ca: str,
        *,
        cert: tuple[str, str] | None = None,
        token: str | None = None,
        namespace: str = "default",
    ) -> None:
        self.server, self.ca, self.cert, self.token = server, ca, cert, token
        self.namespace = namespace
        self._local = threading.local()
        self._plurals: dict[tuple[str, str], tuple[str, bool]] = {}

    @classmethod
    def from_kubeconfig(cls, path: Path | str) -> Rest:
        config = yaml.safe_load(Path(path).read_text())
        context = config["contexts"][0]["context"]
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        cert = (
            (user["client-certificate"], user["client-key"])
            if "client-certificate" in user
            else None
        )
        return cls(
            cluster["server"],
            cluster["certificate-authority"],
            cert=cert,
            token=user.get("token"),
            namespace=context.get("namespace", "default"),
        )

    def with_namespace(self, namespace: str) -> Rest:
        return Rest(self.server, self.ca, cert=self.cert, token=self.token, namespace=namespace)

    @property
    def _session(self) -> requests.Session:
        # One session per thread: the runner's watch threads and pod workers share a Rest.
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would override `verify`) nor
            # its proxies: the apiserver is local and signed by our own CA.
            session.trust_env = False
            session.verify = self.ca
            if self.cert:
                session.cert = self.cert
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = session
        return session

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Obj:
        data = None
        if body is not None:
            data = body if isinstance(body, str) else json.dumps(body)
        response = self._session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            timeout=timeout,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            payload: Obj = response.json()
        except ValueError:
            payload = {"message": response.text}
        if response.status_code >= 400:
            raise ApiError(response.status_code, payload, method, path)
        return payload

    def get(self, path: str, **params: str) -> Obj:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def put(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, kind: str = "strategic", **params: str) -> Obj:
        return self.request(
            "PATCH", path, body, content_type=PATCH_TYPES[kind], params=params or None
        )

    def delete(self, path: str, body: Obj | None = None, **params: str) -> Obj:
        return self.request("DELETE", path, body, params=params or None)

    def watch(
        self, path: str, resource_version: str, timeout_s: int = 60
    ) -> Iterator[tuple[str, Obj]]:
        """Events after `resource_version` until the server ends the watch (410 Gone: relist)."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_s),
            "allowWatchBookmarks": "true",
        }
        with self._session.get(
            self.server + path, params=params, stream=True, timeout=(10, timeout_s + 30)
        ) as response:
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.json(), "WATCH", path)
            for line in response.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise ApiError(int(status.get("code", 500)), status, "WATCH", path)
                yield event["type"], event["object"]

    # ---- discovery-based paths -----------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind, from discovery (refreshed for new CRDs)."""
        key = (api_version, kind)
        if key not in self._plurals:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            for res in self.get(base)["resources"]:
                if "/" not in res["name"]:
                    self._plurals[(api_version, res["kind"])] = (res["name"], res["namespaced"])
        if key not in self._plurals:
            raise ApiError(404, {"message": f"no kind {kind} in {api_version}"}, "GET", api_version)
        return self._plurals[key]

    def path(
        self,
        api_version: str,
        kind: str,
        name: str | None = None,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> str:
        plural, namespaced = self.resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespaced:
            base += f"/namespaces/{namespace or self.namespace}"
        path = f"{base}/{plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def apply(self, manifest: Obj, field_manager: str = "llamaft-tests") -> Obj:
        """Server-side apply, namespaced objects defaulting to this client's namespace."""
        meta = manifest["metadata"]
        path = self.path(
            manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace")
        )
        return self.patch(
            path, json.dumps(manifest), "apply", fieldManager=field_manager, force="true"
        )

    def read(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        return self.get(self.path(api_version, kind, name, namespace))

    def remove(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
    ) -> Obj:
        return self.delete(
            self.path(api_version, kind, name, namespace), {"propagationPolicy": propagation}
        )
